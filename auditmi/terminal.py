"""Text that is safe to show: file names are data, never terminal commands.

A file name may hold anything but ``/`` and NUL: escape sequences (``ESC[2J`` clears the screen,
others move the cursor and could overwrite the verdict panel), carriage returns, bidirectional
overrides that make ``gnp.exe`` look like ``exe.png``, or bytes that are not UTF-8 (Python keeps
them as lone surrogates, which no encoder accepts). :func:`printable` turns all of these into
visible escapes; :class:`SafeConsole` applies it to everything the CLI prints, whatever the
code path, and never interprets rich markup in the text it is given.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment

# Bidirectional embeddings, overrides and isolates, and the Unicode line/paragraph separators.
_INVISIBLE = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x2028, 0x2029, 0x200E, 0x200F}


def _escape(ch: str) -> str:
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte kept by surrogateescape: show the byte
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}"


def printable(text: str, keep_newlines: bool = False, encoding: str | None = None) -> str:
    """``text`` with every control character, bidirectional override and undecodable byte shown
    as a visible escape (``\\x1b``, ``\\u202e``, ``\\xff``).

    Args:
        text: Any string, e.g. a file name or a message that quotes one.
        keep_newlines: Keep ``\\n`` (for messages of several lines); a file name never keeps it.
        encoding: The output's encoding (e.g. ``ascii`` under ``PYTHONIOENCODING=ascii``):
            characters it cannot encode are escaped too, instead of crashing the write.
    """
    out = []
    for c in text:
        o = ord(c)
        if c == "\n" and keep_newlines:
            out.append(c)
        elif o < 0x20 and c != "\t" or 0x7F <= o < 0xA0 or 0xD800 <= o <= 0xDFFF or o in _INVISIBLE:
            out.append(_escape(c))
        else:
            out.append(c)
    safe = "".join(out)
    if encoding and not _is_utf(encoding):
        try:
            safe.encode(encoding)
        except UnicodeEncodeError:
            safe = safe.encode(encoding, "backslashreplace").decode(encoding)
        except LookupError:
            pass
    return safe


def _is_utf(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


class SafeConsole(Console):
    """A rich console whose output cannot be steered by the text it prints.

    Markup is off unless a call asks for it, and every text segment (not rich's own control
    codes) goes through :func:`printable` in the console's encoding, so a hostile file name is
    shown escaped and a non-UTF-8 terminal gets ``\\xe9`` instead of a crash.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:  # type: ignore[override]
        enc = self.encoding
        for seg in super().render(renderable, options):
            if seg.control or not seg.text:
                yield seg
                continue
            text = printable(seg.text, keep_newlines=True, encoding=enc)
            yield seg if text == seg.text else Segment(text, seg.style, seg.control)
