"""auditmi.terminal: file names are shown, never executed by the terminal (issue 14)."""

from __future__ import annotations

import io
import os

import pytest
from rich.table import Table
from rich.text import Text

from auditmi.terminal import SafeConsole, printable


def test_printable_escapes_what_could_steer_a_terminal() -> None:
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("over\rwrite") == "over\\x0dwrite"
    assert printable("two\nlines") == "two\\x0alines"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"
    assert printable("\x9b31m") == "\\x9b31m"  # the 8-bit CSI
    assert printable("photo\u202egnp.exe") == "photo\\u202egnp.exe"  # right-to-left override
    assert printable("caf\u00e9 \u732b.png") == "caf\u00e9 \u732b.png"  # ordinary Unicode stays
    assert printable("tab\there") == "tab\there"


def test_undecodable_bytes_become_visible_escapes() -> None:
    name = os.fsdecode(b"bad\xff\xfe.png")  # what Python gives for a non-UTF-8 file name
    assert printable(name) == "bad\\xff\\xfe.png"
    printable(name).encode("utf-8")  # now encodable


def test_printable_fits_the_output_encoding() -> None:
    assert printable("caf\u00e9", encoding="ascii") == "caf\\xe9"
    assert printable("caf\u00e9", encoding="utf-8") == "caf\u00e9"
    assert printable("caf\u00e9", encoding="latin-1") == "caf\u00e9"


def _render(text: object, encoding: str = "utf-8") -> str:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding, errors="strict")  # like sys.stdout under PYTHONIOENCODING
    con = SafeConsole(file=stream, width=120, force_terminal=False, color_system=None)
    con.print(text)
    stream.flush()
    return raw.getvalue().decode(encoding)


@pytest.mark.parametrize("wrap", [str, Text])
def test_safe_console_never_writes_raw_escape_codes(wrap: type) -> None:
    out = _render(wrap("verdict? \x1b[2J\x1b[H LIKELY-USED \x1b[31m"))
    assert "\x1b" not in out and "\\x1b[2J" in out


def test_safe_console_inside_tables_and_with_markup_like_names() -> None:
    t = Table()
    t.add_column("file")
    t.add_row(Text("x\x1b]0;title\x07.png"))
    out = _render(t)
    assert "\x1b" not in out and "\x07" not in out
    assert "a[/]b[bold]" in _render("a[/]b[bold]")  # markup is off: no MarkupError, shown as is


def test_safe_console_on_an_ascii_terminal() -> None:
    out = _render(os.fsdecode(b"caf\xc3\xa9 and \xff.png"), encoding="ascii")  # a plain Console raises here
    assert "caf\\xe9" in out and "\\xff" in out
