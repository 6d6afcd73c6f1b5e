"""Answers a person can trust: CI logs that say why a job failed, reports never replaced silently, warnings on
models whose own card says they are poor, messages that name what to install."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import invoke
from forensics.report import read_rows
from forensics.synthetic import natural_image


def images(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(natural_image(np.random.default_rng(i), 48, 48)).save(folder / f"{i}.png")
    return folder


def test_a_failed_quiet_job_says_why_on_stderr(tiny_onnx: Path, tmp_path: Path):
    folder = images(tmp_path / "in")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", tmp_path / "r.csv", "--threshold", 0,
                    "--fail-on-fake", "--fail-on-error", "-q", expect=1)
    assert result.stdout == ""
    assert result.stderr.strip() == (f"gscan: exit 1: of 4 files, 3 scored fake (--fail-on-fake) and 1 could not be "
                                     f"scored (--fail-on-error); rows in {tmp_path / 'r.csv'}")
    assert invoke("dir", folder / "0.png", "--model", tiny_onnx, "--fail-on-fake", "--threshold", 1, "-q").output == ""


def test_an_existing_report_is_refused_unless_overwrite_or_resume(tiny_onnx: Path, tmp_path: Path):
    big, small = images(tmp_path / "big", 5), images(tmp_path / "small", 2)
    report = tmp_path / "out.csv"
    invoke("dir", big, "--model", tiny_onnx, "--report", report, "-q")
    result = invoke("dir", small, "--model", tiny_onnx, "--report", report, "-q", expect=2)
    assert "exists: --overwrite replaces it, --resume continues it" in result.output
    assert len(read_rows(report)) == 5  # untouched
    invoke("dir", small, "--model", tiny_onnx, "--report", report, "-q", "--overwrite")
    assert len(read_rows(report)) == 2
