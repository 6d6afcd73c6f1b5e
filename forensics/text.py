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


def csv_safe(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets a single quote before it."""
    return "'" + value if value.startswith(FORMULA_START) else value


def path_text(path: Path | str) -> str:
    """A path as text, lossless: undecodable bytes survive as surrogate escapes (JSON writes them as \\udcXX)."""
    return os.fsdecode(path)
