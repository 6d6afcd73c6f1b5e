"""Streaming CSV / JSON / JSON Lines report writers (rows written as the scan goes) and the reader --resume uses."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .errors import GscanError
from .outputs import create_new, is_stdout, open_in_place, report_format
from .integrity import DIGEST_COLUMN, row_digest, sealed_bytes
from .seal import SealWriter, seal_path
from .rows import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, unknown_keys
from .text import csv_safe, csv_value

def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        value = "; ".join(map(str, value))
    if isinstance(value, str):
        # CSV is text: undecodable bytes are shown as \xNN escapes rather than lost or crashing the writer, and a
        # name like "=cmd|' -C calc'!A0.jpg" is never a formula to the spreadsheet that opens the report
        return csv_safe(value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def from_csv_cell(key: str, value: str | None):
    """A CSV cell typed as a fresh row has it: csv_safe's quoting undone (--resume matches paths as written), empty
    cells None, numbers numbers. A cell that does not parse stays text, for the resume checks to refuse."""
    if value is None or value == "":
        return None
    if value.startswith("'"):
        return csv_value(value)
    try:
        if key in INT_COLUMNS:
            return int(value)
        if key in FLOAT_COLUMNS:
            return float(value)
    except ValueError:
        return value
    return value


def _json_value(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_rows(path: Path) -> list[dict]:
    """The rows of a report, including the valid prefix a killed scan left (a cut-off last line is dropped).
    A report that is not one gscan wrote (garbage, no path column) is a GscanError, not a traceback."""
    path = Path(path)
    fmt = report_format(path)
    partial = path.with_name(path.name + ".partial")
    if fmt == "json" and not path.exists() and partial.exists():
        path = partial
    if not path.exists():
        return []
    try:
        rows = _parse_rows(path.read_text(encoding="utf-8", errors="surrogateescape"), fmt, path != partial)
    except (ValueError, csv.Error) as exc:
        raise GscanError(f"report {path} is damaged ({exc}): move it away to scan afresh") from None
    if any(not isinstance(r, dict) or not r.get("path") for r in rows):
        raise GscanError(f"report {path} has rows without a path: it is not a gscan report, or it is damaged")
    return rows


def read_unfinished_rows(path: Path) -> list[dict]:
    """The rows an interrupted atomic write (a resumed scan, or any JSON report) left in NAME.partial."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if not partial.is_file():
        return []
    try:
        rows = _parse_rows(partial.read_text(encoding="utf-8", errors="surrogateescape"), report_format(path), False)
    except (ValueError, csv.Error):
        return []  # an unfinished file that cannot be read gives nothing to reuse: those files are scanned again
    return [r for r in rows if isinstance(r, dict) and r.get("path")]


def _parse_rows(text: str, fmt: str, whole: bool) -> list:
    if fmt == "json" and whole:
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError("not a JSON array")
        return rows
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if text and "path" not in (reader.fieldnames or []):
            raise ValueError("no path column")
        return [{k: from_csv_cell(k, v) for k, v in row.items()} for row in reader]
    rows = []
    for line in text.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the line a kill cut short
        elif line and line not in ("[", "]"):
            raise ValueError(f"a line that is not a JSON object: {line[:40]!r}")
    return rows


class ReportWriter:
    """Append rows to a report as they come; `close` finalises it.

    JSON, and any report written with atomic=True (a resumed scan), goes to NAME.partial and is renamed into
    place on close, so the previous report stays intact until the new one is whole.
    """

    def __init__(self, path: Path, atomic: bool = False, key: bytes | None = None, signer=None):
        self.path = Path(path)
        self.key = key  # rows get a row_digest under it (forensics/integrity.py); None: left empty
        self.seal: SealWriter | None = None  # REPORT.seal: rows chained, sealed on close (forensics/seal.py)
        self.to_stdout = is_stdout(self.path)
        self.format = "jsonl" if self.to_stdout else report_format(self.path)
        self.columns = COLUMNS
        self.count = 0
        if self.to_stdout:
            self._target = self.path
            self._fh: TextIO = sys.stdout
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic = atomic or self.format == "json"
        target = self.path.with_name(self.path.name + ".partial") if atomic else self.path
        self._target = target
        # never through a link planted at either name (outputs.py)
        self._fh = create_new(target) if atomic else open_in_place(target)
        if not atomic and seal_path(self.path).is_file():  # the report is replaced: its old seal no longer holds
            seal_path(self.path).unlink()
        self.seal = SealWriter(self.path, self.columns, self.format, key, signer)
        if self.format == "csv":
            self._csv = csv.DictWriter(self._fh, fieldnames=self.columns)
            self._csv.writeheader()
        elif self.format == "json":
            self._fh.write("[")
        self._fh.flush()

    def write(self, rows: list[dict], keep_digest: bool = False) -> None:
        """Append rows. keep_digest: rows carried over unchanged keep the digest they had (a row whose digest
        failed stays failing), instead of being signed anew."""
        for row in rows:
            extra = unknown_keys(row)
            if extra:  # a key outside the schema is a bug: never dropped silently
                raise ValueError(f"row keys not in the report schema (rows.COLUMNS): {sorted(extra)}")
            if not keep_digest:
                row = {**row, DIGEST_COLUMN: row_digest(self.key, row, self.columns) if self.key else None}
            if self.format == "csv":
                self._csv.writerow({k: _csv_value(row.get(k)) for k in self.columns})
            else:
                record = {k: _json_value(row.get(k)) for k in self.columns}
                text = json.dumps(record, ensure_ascii=True, allow_nan=False)
                if self.format == "json":
                    self._fh.write(("," if self.count else "") + "\n  " + text)
                else:
                    self._fh.write(text + "\n")
            if self.seal is not None:
                self.seal.add(sealed_bytes(row, self.columns))
            self.count += 1
        self._fh.flush()

    def close(self, complete: bool = True) -> None:
        """Finalise the report; with complete=False (the scan failed) an atomic report stays NAME.partial."""
        if self.to_stdout:
            self._fh.flush()
            return
        if self._fh.closed:
            return
        if not complete:  # the scan failed, perhaps on a full disk: keep what reached it, raise nothing new
            for step in (self._fh.close, lambda: self.seal and self.seal.finish(complete=False)):
                try:
                    step()
                except OSError:
                    pass
            return
        if self.format == "json":
            self._fh.write("\n]\n" if self.count else "]\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if self._target != self.path:
            os.replace(self._target, self.path)
        if self.seal is not None:
            self.seal.finish()

    def readable_rows(self) -> tuple[int, Path]:
        """How many whole rows the file being written holds now, and which file that is (NAME.partial for JSON
        and resumed reports): what a failed scan tells the user, counted, not assumed."""
        try:
            text = self._target.read_text(encoding="utf-8", errors="surrogateescape")
            return len(_parse_rows(text, self.format, False)), self._target
        except (OSError, ValueError, csv.Error):
            return 0, self._target

    def __enter__(self) -> "ReportWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
