"""File names shown to people: control and bidi characters made visible, spreadsheet formulas neutralised."""

from __future__ import annotations

import os
import re
from pathlib import Path

# C0/C1 controls (ESC starts terminal sequences such as an OSC 52 clipboard write) and the bidi controls that
# make "photo-\u202egpj.exe" read as "photo-exe.jpg"
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# OWASP's list for CSV injection: a cell starting with one of these is a formula to a spreadsheet
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def visible(text: str) -> str:
    """text with every control or bidi character shown as an escape (\\x1b, <U+202E>), undecodable bytes as \\xNN."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _INVISIBLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0xA0
                          else f"<U+{ord(m.group()):04X}>", text)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what a terminal acts on when `cat` shows a CSV
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def csv_safe(value: str) -> str:
    """A CSV cell a spreadsheet and a terminal show as text, and from which csv_value() gives `value` back: a cell
    that starts with a formula character or a quote, or holds control characters, is written as a quote, then the
    value with backslashes doubled and controls as \\xNN."""
    if not (value.startswith(FORMULA_START) or value.startswith("'") or _CONTROL.search(value)):
        return value
    return "'" + _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value.replace("\\", "\\\\"))


def csv_value(cell: str) -> str:
    """The value csv_safe() wrote as `cell`."""
    if not cell.startswith("'"):
        return cell
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)), cell[1:])


def path_text(path: Path | str) -> str:
    """A path as text, lossless: undecodable bytes survive as surrogate escapes (JSON writes them as \\udcXX)."""
    return os.fsdecode(path)
