"""`gscan verify`: whether a report is the one gscan wrote, row for row and whole, read as a stream (bounded
memory whatever its size). Two checks, each as far as the verifier's means allow:

- rows: each row's row_digest under the report key (forensics/integrity.py), for whoever holds the key;
- the whole: the report's columns are exactly gscan's (no extra, missing or duplicated column, no duplicated JSON
  key), and its rows, in order, are the ones its seal chains (forensics/seal.py): deleted, moved, duplicated,
  spliced-in rows and a cut-short report are named. The seal itself is authenticated by the report key's HMAC or,
  for a third party without the secret, by the Ed25519 signature under `--public-key`."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import GscanError
from .integrity import DIGEST_COLUMN, digest_holds, sealed_bytes
from .outputs import report_format
from .report import from_csv_cell
from .rows import COLUMNS
from .seal import SealReader, authenticate, read_seal_header

MAX_LISTED = 1000  # changed rows named one by one; the rest are counted


@dataclass
class Verification:
    rows: int = 0
    changed: list[tuple[str, str]] = field(default_factory=list)  # (path, why), at most MAX_LISTED
    changed_count: int = 0
    problems: list[str] = field(default_factory=list)  # about the report as a whole
    authenticated_by: list[str] = field(default_factory=list)
    rows_checked: bool = False  # row digests checked (the key was at hand)

    @property
    def intact(self) -> bool:
        return not self.changed_count and not self.problems


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(sorted({k for k in keys if keys.count(k) > 1}))
    return dict(pairs)


def _csv_rows(path: Path, problems: list[str]) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != COLUMNS:
            problems.append(_column_problem(header or []))
            return
        for cells in reader:
            if len(cells) != len(COLUMNS):
                problems.append(f"row {reader.line_num - 1} has {len(cells)} cells, not {len(COLUMNS)}")
                continue
            yield {k: from_csv_cell(k, v) for k, v in zip(COLUMNS, cells)}


def _json_rows(path: Path, fmt: str, problems: list[str]) -> Iterator[dict]:
    expected = set(COLUMNS)
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip().rstrip(",")
            if not line or (fmt == "json" and line in ("[", "]")):
                continue
            try:
                row = json.loads(line, object_pairs_hook=_no_duplicates)
            except _DuplicateKey as exc:
                problems.append(f"line {number} repeats the key(s) {exc.args[0]}: a reader would take one of them")
                continue
            except json.JSONDecodeError:
                problems.append(f"line {number} is not a JSON object (cut short, or not in gscan's layout)")
                continue
            if not isinstance(row, dict) or set(row) != expected:
                problems.append(f"line {number} has other keys than gscan's columns "
                                f"({_column_problem(list(row) if isinstance(row, dict) else [])})")
                continue
            yield row


def _column_problem(header: list[str]) -> str:
    extra = [c for c in dict.fromkeys(header) if c not in COLUMNS]
    missing = [c for c in COLUMNS if c not in header]
    repeated = sorted({c for c in header if header.count(c) > 1})
    parts = [f"extra {extra}" if extra else "", f"missing {missing}" if missing else "",
             f"repeated {repeated}" if repeated else "", "reordered" if not (extra or missing or repeated) else ""]
    return "the columns are not gscan's: " + ", ".join(p for p in parts if p)


def verify_report(report: Path, key: bytes | None, public_key=None) -> Verification:
    """Stream the report and its seal; what holds and what does not."""
    report = Path(report)
    if not report.is_file():
        raise GscanError(f"report {report} does not exist")
    if key is None and public_key is None:
        raise GscanError("nothing to check with: no report key here and no --public-key")
    result = Verification(rows_checked=key is not None)
    try:
        header = read_seal_header(report)
    except GscanError as exc:
        header = None
        result.problems.append(str(exc))
    seal = None
    if header is not None:
        result.authenticated_by, problems = authenticate(header, key, public_key)
        result.problems += problems
        if header.get("columns") != COLUMNS:
            result.problems.append("the seal is for other columns than this gscan's")
        else:
            seal = SealReader(report, header)
    fmt = report_format(report)
    rows = _csv_rows(report, result.problems) if fmt == "csv" else _json_rows(report, fmt, result.problems)
    for row in rows:
        result.rows += 1
        if key is not None and not digest_holds(key, row, COLUMNS):
            why = ("no row_digest (written without a key, or removed)" if not row.get(DIGEST_COLUMN)
                   else "row_digest does not match its cells (changed since it was written)")
            result.changed_count += 1
            if len(result.changed) < MAX_LISTED:
                result.changed.append((str(row.get("path")), why))
        if seal is not None:
            seal.match(sealed_bytes(row, COLUMNS))
    if seal is not None:
        result.problems += seal.finish()
    return result
