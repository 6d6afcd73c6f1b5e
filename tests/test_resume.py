"""A scan killed with SIGKILL leaves a valid prefix; --resume completes it without losing or repeating rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from forensics.report import read_rows
from forensics.synthetic import add_trace, natural_image, save

REPO = Path(__file__).resolve().parents[1]
VOLATILE = {"scanned_at", "row_digest"}  # the digest covers the time


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(9)
    for i in range(240):
        px = natural_image(rng, 96, 96)
        save(add_trace(px) if i % 3 == 0 else px, root / f"d{i % 4}" / f"img{i:04d}.png")
    (root / "d0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return root


def stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_kill_then_resume_gives_exactly_one_row_per_file(many_images: Path, tiny_onnx: Path, tmp_path: Path, suffix):
    full = tmp_path / f"full{suffix}"
    invoke("dir", many_images, "--model", tiny_onnx, "--report", full, "--batch-size", 8)
    expected = stable(read_rows(full))
    assert len(expected) == 241

    report = tmp_path / f"killed{suffix}"
    cmd = [sys.executable, "-m", "cli", "dir", str(many_images), "--model", str(tiny_onnx), "--report", str(report),
           "--batch-size", 8, "--workers", 1, "-q"]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    watched = report if suffix != ".json" else report.with_name(report.name + ".partial")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if watched.exists() and len(read_rows(report)) >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    prefix = read_rows(report)
    assert 0 < len(prefix) < 241, "the kill should land part-way"
    assert stable(prefix) == expected[: len(prefix)]  # a valid prefix, nothing invented

    result = invoke("dir", many_images, "--model", tiny_onnx, "--report", report, "--resume", "--batch-size", 8)
    rows = stable(read_rows(report))
    assert len(rows) == 241 and len({r["path"] for r in rows}) == 241
    assert rows == expected
    assert "reused" in result.output


def test_resume_rescans_changed_files(many_images: Path, tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "small"
    for i in range(3):
        save(natural_image(np.random.default_rng(i), 64, 64), folder / f"{i}.png")
    report = tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report)
    before = {r["path"]: r for r in read_rows(report)}
    save(natural_image(np.random.default_rng(99), 80, 64), folder / "1.png")  # changed: new size and time
    (folder / "2.png").unlink()  # gone: its row is kept as it was, never dropped silently
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume")
    after = {r["path"]: r for r in read_rows(report)}
    assert list(after) == [str(folder / n) for n in ("0.png", "1.png", "2.png")]
    assert after[str(folder / "0.png")] == before[str(folder / "0.png")]  # reused as it was
    assert after[str(folder / "2.png")] == before[str(folder / "2.png")]  # kept, digest and all
    assert after[str(folder / "1.png")]["sha256"] != before[str(folder / "1.png")]["sha256"]
    assert "1 rows of files not found now kept" in " ".join(result.output.split())
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume", "--prune")
    assert [r["path"] for r in read_rows(report)] == [str(folder / "0.png"), str(folder / "1.png")]


def test_resume_needs_a_report(tiny_onnx: Path, tmp_path: Path):
    assert "--resume needs --report" in invoke("dir", tmp_path, "--model", tiny_onnx, "--resume", expect=2).output
