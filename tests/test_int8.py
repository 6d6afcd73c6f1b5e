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
    fp32_sha = json.loads(tiny_onnx.with_suffix(".json").read_text())["onnx_sha256"]
    # int8 rows name the int8 model, and its fp32 partner too where that scored them again near the threshold
    assert {r["model_sha256"] for r in int8_rows} <= {card["onnx_sha256"], f"{card['onnx_sha256']}+{fp32_sha}"}
    assert {r["model_sha256"] for r in fp32_rows} == {fp32_sha}
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


def _quantized_pair(tiny_onnx: Path, calibrate: Path, name: str, *margin: str) -> tuple[Path, dict]:
    """NAME.onnx (the tiny model) and its int8 variant in the user model folder, and the variant's card."""
    home = Path(os.environ["GSCAN_MODELS"])
    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_onnx.with_suffix(suffix), home / f"{name}{suffix}")
    invoke("quantize", home / f"{name}.onnx", "--calibrate", calibrate, "--images", 24, *margin)
    return home, json.loads((home / f"{name}.int8.json").read_text())


def test_images_near_the_threshold_get_the_fp32_models_score(tiny_onnx: Path, binary_data, tmp_path: Path):
    """A margin wider than any score: every row is the fp32 model's, to the last digit, and says so; margin 0:
    none is, and the scores are int8's own."""
    from forensics.rows import RESCORED_NOTE

    fp32 = tmp_path / "fp32.jsonl"
    invoke("dir", binary_data["val"], "--model", tiny_onnx, "--report", fp32, "--device", "cpu")
    expected = {r["path"]: r["score"] for r in read_rows(fp32)}
    scores = {}
    for name, margin in (("wide", "100"), ("none", "0")):
        home, card = _quantized_pair(tiny_onnx, binary_data["train"], f"tiny-{name}", "--rescore-margin",
                                     margin)
        assert card["rescore_margin"] == float(margin)
        output = invoke("dir", binary_data["val"], "--model", f"tiny-{name}", "--report",
                        tmp_path / f"{name}.jsonl", "--device", "cpu").output
        assert ("within 100 log-odds" in output) == (name == "wide")  # the summary names the fp32 partner
        rows = read_rows(tmp_path / f"{name}.jsonl")
        # every model that shaped a score is named: the int8 model, and its fp32 partner where it scored again
        both = f"{card['onnx_sha256']}+{card['metrics']['int8']['fp32_sha256']}"
        assert len(rows) == 32 and {r["model_sha256"] for r in rows} == {both if name == "wide" else
                                                                        card["onnx_sha256"]}
        noted = [RESCORED_NOTE in (r["notes"] or "") for r in rows]
        assert all(noted) if name == "wide" else not any(noted)
        scores[name] = {r["path"]: r["score"] for r in rows}
    assert all(abs(scores["wide"][p] - s) < 1e-6 for p, s in expected.items())
    assert max(abs(scores["none"][p] - s) for p, s in expected.items()) > 1e-6  # int8 is not fp32


def test_the_default_margin_is_the_largest_int8_error_near_the_threshold(tiny_onnx: Path, binary_data):
    _, card = _quantized_pair(tiny_onnx, binary_data["train"], "tiny-auto")
    error = card["metrics"]["int8"]["log_odds_error"]
    assert error["near_threshold"] >= 20 and 0 < error["max_near_threshold"] <= error["max"]
    assert card["rescore_margin"] == np.ceil(error["max_near_threshold"] * 4) / 4
    assert card["metrics"]["int8"]["fp32_sha256"] == json.loads(tiny_onnx.with_suffix(".json").read_text())[
        "onnx_sha256"]


def test_an_int8_variant_refuses_an_fp32_model_it_was_not_made_from(tiny_onnx: Path, binary_data, tmp_path: Path):
    home, _ = _quantized_pair(tiny_onnx, binary_data["train"], "tiny-pair", "--rescore-margin", "1")
    evidence = tmp_path / "e.json"
    evidence.write_text("{}")
    invoke("attach", home / "tiny-pair.onnx", f"note={evidence}")  # new bytes, new sha256: not the pair's
    result = invoke("dir", binary_data["val"], "--model", "tiny-pair", "--device", "cpu", expect=2)
    assert "does not belong together" in result.output
    (home / "tiny-pair.onnx").unlink()
    (home / "tiny-pair.json").unlink()
    result = invoke("dir", binary_data["val"], "--model", home / "tiny-pair.int8.onnx", expect=2)
    assert "no tiny-pair.onnx beside it" in result.output


def test_too_few_calibration_images_near_the_threshold_is_an_error(tiny_onnx: Path, binary_data):
    home = Path(os.environ["GSCAN_MODELS"])
    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_onnx.with_suffix(suffix), home / f"tiny-few{suffix}")
    result = invoke("quantize", home / "tiny-few.onnx", "--calibrate", binary_data["train"], "--images", 3, expect=2)
    assert "too few to measure the int8 error" in result.output and not (home / "tiny-few.int8.onnx").exists()
