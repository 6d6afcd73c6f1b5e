"""The int8 variant for the CPU provider: written beside the model, chosen by a CPU scan of a named model, its
verdicts close to the fp32 model's."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from conftest import invoke
from forensics.report import read_rows


def test_quantize_writes_a_variant_that_a_cpu_scan_of_the_name_runs(tiny_onnx: Path, binary_data, tmp_path: Path):
    home = Path(os.environ["GSCAN_MODELS"])
    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_onnx.with_suffix(suffix), home / f"tiny8{suffix}")
    invoke("quantize", home / "tiny8.onnx", "--calibrate", binary_data["train"], "--images", 16)
    card = json.loads((home / "tiny8.int8.json").read_text())
    assert card["precision"] == "int8" and card["onnx_sha256"] and "MinMax" in card["metrics"]["int8"]["method"]
    listing = json.loads(invoke("models", "--json").stdout)
    mine = [m for m in listing if m["path"] == str(home / "tiny8.onnx")]
    assert len(mine) == 1 and mine[0]["int8"] == str(home / "tiny8.int8.onnx")
    assert not any(m["path"].endswith(".int8.onnx") for m in listing)  # a variant, not a model of its own
    by_name, by_path = tmp_path / "name.jsonl", tmp_path / "path.jsonl"
    invoke("dir", binary_data["val"], "--model", "tiny8", "--report", by_name, "--device", "cpu")
    invoke("dir", binary_data["val"], "--model", home / "tiny8.onnx", "--report", by_path, "--device", "cpu")
    int8_rows, fp32_rows = read_rows(by_name), read_rows(by_path)
    assert {r["model_sha256"] for r in int8_rows} == {card["onnx_sha256"]}
    assert {r["model_sha256"] for r in fp32_rows} == {json.loads(tiny_onnx.with_suffix(".json").read_text())[
        "onnx_sha256"]}
    a = np.array([r["score"] for r in fp32_rows])
    b = np.array([r["score"] for r in int8_rows])
    assert len(a) == len(b) == 32 and np.corrcoef(a, b)[0, 1] > 0.9
    for path in home.glob("tiny8*"):
        path.unlink()


def test_export_int8_writes_both(tiny_run: Path, binary_data, tmp_path: Path):
    invoke("export", tiny_run, "--out", tmp_path / "e.onnx", "--int8", binary_data["train"])
    assert (tmp_path / "e.onnx").is_file() and (tmp_path / "e.int8.onnx").is_file()
    assert json.loads((tmp_path / "e.int8.json").read_text())["precision"] == "int8"
    assert "without --fp16" in invoke("export", tiny_run, "--out", tmp_path / "f.onnx", "--fp16", "--int8",
                                      binary_data["train"], expect=2).output
