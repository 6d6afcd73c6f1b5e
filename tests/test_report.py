"""Report writers: the same rows in CSV, JSON and JSON Lines, streamed, with awkward names intact."""

import csv
import json
from pathlib import Path

import pytest

from forensics.errors import GscanError
from forensics.report import COLUMNS, ReportWriter

ROWS = [
    {"path": "/data/a b \"q\".png", "status": "ok", "score": 0.25, "label": "real", "tiles": 1},
    {"path": "/data/line\nbreak.png", "status": "error", "error": "corrupt PNG data: x"},
    {"path": "/data/bad-\udcff.png", "status": "ok", "score": 0.9, "label": "fake", "tiles": 4},
]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_rows_round_trip(tmp_path: Path, suffix: str):
    path = tmp_path / f"r{suffix}"
    with ReportWriter(path) as writer:
        writer.write(ROWS[:2])
        writer.write(ROWS[2:])
    if suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows[0]["path"] == ROWS[0]["path"] and rows[1]["path"] == ROWS[1]["path"]
        assert rows[2]["path"] == "/data/bad-\\xff.png"  # undecodable byte escaped, not lost
        assert list(rows[0]) == COLUMNS
    else:
        text = path.read_text()
        rows = json.loads(text) if suffix == ".json" else [json.loads(x) for x in text.splitlines()]
        assert [r["path"] for r in rows] == [r["path"] for r in ROWS]  # lossless, surrogates included
        assert list(rows[0]) == COLUMNS
    assert len(rows) == 3


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_empty_report_is_valid(tmp_path: Path, suffix: str):
    path = tmp_path / f"r{suffix}"
    ReportWriter(path).close()
    text = path.read_text()
    if suffix == ".csv":
        assert text.strip() == ",".join(COLUMNS)
    elif suffix == ".json":
        assert json.loads(text) == []
    else:
        assert text == ""


def test_json_is_finalised_atomically(tmp_path: Path):
    path = tmp_path / "r.json"
    writer = ReportWriter(path)
    writer.write(ROWS)
    assert not path.exists()  # until close, only the .partial file exists
    writer.close()
    assert len(json.loads(path.read_text())) == 3 and not list(tmp_path.glob("*.partial"))


def test_unknown_format_is_refused(tmp_path: Path):
    with pytest.raises(GscanError):
        ReportWriter(tmp_path / "r.xlsx")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_failed_atomic_report_never_replaces_the_old_one(tmp_path: Path, suffix: str):
    path = tmp_path / f"r{suffix}"
    with ReportWriter(path) as writer:
        writer.write(ROWS)
    before = path.read_bytes()
    writer = ReportWriter(path, atomic=True)  # as a resumed scan writes
    writer.write(ROWS[:1])
    writer.close(complete=False)  # the scan failed part-way
    assert path.read_bytes() == before
    partial = path.with_name(path.name + ".partial")
    assert partial.exists() and "a b" in partial.read_text()  # the new rows so far stay beside it


def test_rows_carry_every_column_and_nothing_else(tmp_path):
    """COLUMNS is the one schema: RowBuilder builds every column, and a writer refuses a key outside it."""
    from forensics.images import DecodedImage
    from forensics.rows import RowBuilder

    class Stub:  # what RowBuilder reads from a Detector
        sha256 = "0" * 64

        class card:
            name, task, classes, positive_index = "stub", "binary", ["real", "fake"], 1

    row = RowBuilder(Stub(), 0.5, "s").error(DecodedImage(path=tmp_path / "x.png", error="broken"))
    assert list(row) == COLUMNS
    writer = ReportWriter(tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="not in the report schema"):
        writer.write([{**row, "surprise": 1}])
    writer.close()
