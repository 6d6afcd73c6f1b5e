"""docs/RESULTS.md is shared by several bench scripts: each owns one marked section and rewrites only that."""

from __future__ import annotations

from pathlib import Path

TITLE = "# Results"


def write_section(path: Path, name: str, lines: list[str]) -> Path:
    """Replace the section between <!-- section:NAME --> markers (appended when absent)."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    body = "\n".join([start, *lines, end])
    text = path.read_text() if path.exists() else TITLE + "\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)
    return path
