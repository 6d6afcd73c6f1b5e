"""Attribution: three synthetic 'generators' (upsampling operators) told apart per image; splits by image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_ARCH, TINY_CROP, invoke
from forensics.card import ModelCard
from forensics.synthetic import natural_image, save

GENERATORS = ("nearest", "bilinear", "checkerboard")


def generated(rng: np.random.Generator, kind: str, size: int = 96) -> np.ndarray:
    """A half-resolution image upsampled x2 the way a generator's last layer might."""
    small = Image.fromarray(natural_image(rng, size // 2, size // 2))
    if kind == "bilinear":
        return np.asarray(small.resize((size, size), Image.Resampling.BILINEAR))
    up = np.asarray(small.resize((size, size), Image.Resampling.NEAREST)).astype(np.float32)
    if kind == "checkerboard":  # transposed convolution: uneven overlap leaves a period-2 pattern
        yy, xx = np.mgrid[0:size, 0:size]
        up += ((yy % 2) * 2 - 1)[..., None] * ((xx % 2) * 2 - 1)[..., None] * 8.0
    return np.clip(up, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def gans(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gans")
    rng = np.random.default_rng(31)
    for kind in GENERATORS:
        for i in range(30):
            save(generated(rng, kind), root / kind / f"{kind}{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def attribution_run(gans: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("attr") / "run"
    invoke("train", gans, "--task", "attribution", "--out", run, "--arch", TINY_ARCH, "--crop", TINY_CROP,
           "--epochs", 5, "--batch-size", 16, "--lr", 3e-3, "--workers", 0, "--patience", 5,
           "--crops-per-image", 6, "--jpeg-prob", 0, "--blur-prob", 0)
    return run


def test_split_never_puts_one_image_on_both_sides(gans: Path):
    from forensics.training.data import discover, split_by_image

    samples, classes = discover(gans, "attribution")
    assert classes == sorted(GENERATORS)
    train, val = split_by_image(samples, 0.2, seed=0)
    assert not {s.path for s in train} & {s.path for s in val}
    assert len(train) + len(val) == len(samples)
    assert {s.label for s in val} == {0, 1, 2}  # stratified: every generator is scored


def test_attribution_separates_generators_per_image(attribution_run: Path):
    card = ModelCard.load(attribution_run / "card.json")
    assert card.task == "attribution" and card.classes == sorted(GENERATORS)
    val = card.metrics["val"]
    assert val["n"] == 18  # 20% of 30 images per generator, whole images
    assert val["accuracy"] >= 0.8, val  # chance is 1/3
    assert sum(map(sum, val["confusion_matrix"])) == 18
    assert set(val["per_class_recall"]) == set(GENERATORS)


def test_eval_reports_per_class_recall_and_confusion_png(attribution_run: Path, gans: Path, tmp_path: Path):
    result = invoke("eval", gans, "--model", attribution_run, "--out", tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 90 and set(metrics["per_class_recall"]) == set(GENERATORS)
    assert (tmp_path / "confusion.png").stat().st_size > 1000 and "per-class recall" in result.output


def test_scan_with_binary_and_attribution_models(attribution_run: Path, tiny_onnx: Path, binary_data, tmp_path: Path):
    attribution_onnx = tmp_path / "attr.onnx"
    invoke("export", attribution_run, "--out", attribution_onnx)
    report = tmp_path / "r.jsonl"
    invoke("dir", binary_data["val"], "--model", tiny_onnx, "--model", attribution_onnx, "--report", report)
    rows = [json.loads(x) for x in report.read_text().splitlines()]
    assert len(rows) == 32
    for row in rows:
        if row["label"] == "fake":
            assert row["generator"] in GENERATORS and 0 < row["generator_score"] <= 1
            top3 = [part.split(":") for part in row["generator_top3"].split("; ")]
            assert [name for name, _ in top3][0] == row["generator"] and len(top3) == 3
            assert abs(sum(float(p) for _, p in top3) - 1) < 1e-3
            assert row["attribution_model"] == "attr"
        else:
            assert row["generator"] is None
    assert any(r["label"] == "fake" for r in rows)
    # two binary models is a usage error
    assert "one binary and one attribution" in invoke("dir", binary_data["val"], "--model", tiny_onnx, "--model",
                                                      tiny_onnx, expect=2).output
