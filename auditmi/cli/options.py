"""Command-line parsing rules shared by every command.

Options that take images (``scan --reference``, ``calibrate --shadow-data/--members/--non-members``,
``evaluate --members/--non-members``) take **every path up to the next option**, so that the
shell's expansion of ``--reference reference/*.png`` puts all the files in the reference set.
Click's own rule (one value per occurrence, the rest become positional arguments) would silently
turn all but the first reference file into suspects, which changes the verdict. A ``--`` ends
the list explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from typer.core import TyperGroup


def expand_multi_value_options(args: Sequence[str], multi: Iterable[str]) -> list[str]:
    """Rewrite ``OPT a b c`` into ``OPT a OPT b OPT c`` for every option named in ``multi``.

    The values of such an option run until the next token that starts with ``-`` (another option,
    or ``--``, which ends the options). ``--opt=a b`` works the same way. Other tokens are left
    untouched, so Click still reports unknown options and missing values itself.
    """
    names = set(multi)
    out: list[str] = []
    current: str | None = None  # the multi-value option whose values are being read
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if current is not None and not a.startswith("-"):
            out += [current, a]
            i += 1
            continue
        current = None
        name, eq, _ = a.partition("=")
        # ``-qr ref/``: bundled short flags ending with a multi-value option's letter.
        bundled = "-" + a[-1] if len(a) > 2 and a[0] == "-" and a[1] != "-" and a[1:].isalpha() else ""
        if (a in names or bundled in names) and i + 1 < len(args):
            out += [a, args[i + 1]]
            current = a if a in names else bundled
            i += 2
            continue
        if eq and name.startswith("--") and name in names:
            out.append(a)
            current = name
        else:
            out.append(a)
        i += 1
    return out


def _takes_paths(p: Any) -> bool:
    """Whether a parameter's values are paths (Typer's own parameter classes, or plain Click's)."""
    td = getattr(p, "type_descriptor", None)
    if td is not None:
        return "Path" in str(getattr(td, "annotation", ""))
    return type(getattr(p, "type", None)).__name__ == "Path"


def multi_path_options(cmd: Any) -> set[str]:
    """Names (long and short) of ``cmd``'s repeatable options whose values are paths."""
    return {
        o
        for p in getattr(cmd, "params", [])
        if getattr(p, "param_type_name", "") == "option" and getattr(p, "multiple", False) and _takes_paths(p)
        for o in p.opts
    }


class AuditmiGroup(TyperGroup):
    """The ``auditmi`` group: applies :func:`expand_multi_value_options` to the chosen command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._expand(ctx, args))

    def _expand(self, ctx: Any, args: list[str]) -> list[str]:
        for i, a in enumerate(args):
            if a == "--":
                return args
            if a.startswith("-"):
                continue  # the group's own flags (--version, --help)
            cmd: Any = self.get_command(ctx, a)
            if cmd is None:
                return args  # Click reports the unknown command
            return [*args[: i + 1], *expand_multi_value_options(args[i + 1 :], multi_path_options(cmd))]
        return args


def encoder_assumptions(spec: str) -> list[str]:
    """Warnings about what auditmi must assume to use the encoder ``spec`` (empty when nothing).

    A TorchScript or torch.export file without a sidecar is used with 224 px inputs and ImageNet normalisation;
    the user must hear that before the scan, not find it in the report afterwards. An unknown spec
    gives no warning here: loading it fails with the full message.
    """
    from auditmi.encoders import parse_spec
    from auditmi.errors import EncoderUnavailableError

    try:
        backend, name, _ = parse_spec(spec)
    except EncoderUnavailableError:
        return []
    if backend not in ("torchscript", "export"):  # the two backends that read a sidecar
        return []
    from auditmi.encoders.torchscript import missing_sidecar_note

    note = missing_sidecar_note(name)
    return [note] if note else []


def check_training_options(arch: str, optimizer: str) -> None:
    """``--arch`` and ``--optimizer`` of ``pretrain`` and ``calibrate``, checked before any image is
    read: a typo is a usage error (exit 2), not an unavailable encoder found after minutes of work."""
    from auditmi.errors import InputError
    from auditmi.models import ARCH_PRESETS
    from auditmi.shadow import OPTIMIZERS

    if arch not in ARCH_PRESETS:
        raise InputError(f"--arch {arch!r} is not a known architecture; choose one of: {', '.join(ARCH_PRESETS)}.")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer {optimizer!r} is not known; use {' or '.join(OPTIMIZERS)}.")
