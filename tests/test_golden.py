"""The rows of a scan of samples/ with the shipped models, held as a golden report: a refactor that changes a
row fails here. When the shipped models change on purpose, regenerate it:
`gscan dir samples --report - -q | python tests/test_golden.py > tests/golden/samples.jsonl`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from conftest import invoke

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "samples.jsonl"
STABLE = ["path", "status", "error", "sha256", "file_size", "width", "height", "format", "label", "score",
          "threshold", "tiles", "coverage", "condition", "provenance", "provenance_detail", "generator",
          "generator_score", "notes", "model",
          "model_sha256", "attribution_model", "attribution_model_sha256", "scan_settings"]  # not times or the version


def test_samples_scan_equals_the_golden_report(monkeypatch):
    monkeypatch.chdir(REPO)
    rows = [json.loads(line) for line in invoke("dir", "samples", "--report", "-", "-q").stdout.splitlines()]
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert [r["path"] for r in rows] == [g["path"] for g in golden]
    for row, expected in zip(rows, golden):
        for key in STABLE:
            a, b = row[key], expected[key]
            if isinstance(b, float):
                assert math.isclose(a, b, abs_tol=1e-5), (row["path"], key, a, b)
            else:
                assert a == b, (row["path"], key, a, b)


if __name__ == "__main__":
    for line in sys.stdin:
        row = json.loads(line)
        print(json.dumps({k: row[k] for k in STABLE}))
