"""Source-aware training: held-out sources, a threshold set on one, crops on the JPEG grid, calibration."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_ARCH, TINY_CROP, invoke
from forensics.errors import DataError
from forensics.perturb import parse_perturbation
from forensics.training import data as D
from forensics.training.evaluate import calibration, choose_threshold, load_predictor, score_samples
from forensics.synthetic import add_trace, natural_image, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
from results_doc import write_section  # noqa: E402


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory) -> dict[str, Path]:
    """Two real sources (camera, scanner) and one fake; scanner is the one to hold out."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(5)
    for split, n in (("train", 24), ("val", 10)):
        for i in range(n):
            for source, fake in (("camera", False), ("scanner", False), ("gan-a", True)):
                pixels = natural_image(rng, 64, 80)
                folder = root / split / ("fake" if fake else "real") / source
                save(add_trace(pixels) if fake else pixels, folder / f"{source}{i:03d}.png")
    return {"train": root / "train", "val": root / "val"}


def test_exclude_sources_by_source_and_class(three_sources):
    samples, _ = D.discover(three_sources["train"], "binary")
    kept, held = D.exclude_sources(samples, ["real/scanner"])
    assert {s.source for s in held} == {"real/scanner"} and len(held) == 24
    assert {s.source for s in kept} == {"real/camera", "fake/gan-a"} and len(kept) + len(held) == len(samples)
    _, fakes = D.exclude_sources(samples, ["fake"])
    assert {s.source for s in fakes} == {"fake/gan-a"}
    with pytest.raises(DataError, match="no such source"):
        D.exclude_sources(samples, ["real/nowhere"])


def test_random_crops_stay_on_the_jpeg_grid():
    rng = random.Random(0)
    for _ in range(200):
        h, w = rng.randint(20, 300), rng.randint(20, 300)
        pixels = np.arange(h * w, dtype=np.int64).reshape(h, w)
        crop = D.random_crop(pixels, 64, rng)
        y, x = divmod(int(crop[0, 0]), w)
        assert y % 8 == 0 and x % 8 == 0
        assert crop.shape == (min(64, h), min(64, w))


def test_double_jpeg_passes(monkeypatch):
    calls = []
    import forensics.training.config as config

    monkeypatch.setattr(config, "jpeg_roundtrip", lambda img, q: calls.append(q) or img)
    img = Image.new("RGB", (32, 32))
    D.Augment(jpeg_prob=1.0, double_jpeg_prob=1.0, blur_prob=0.0, flip=False)(img, random.Random(0))
    assert len(calls) == 2
    calls.clear()
    D.Augment(jpeg_prob=1.0, double_jpeg_prob=0.0, blur_prob=0.0, flip=False)(img, random.Random(0))
    assert len(calls) == 1


def test_lossless_files_get_one_jpeg_pass_first(tmp_path):
    """A PNG's crop comes out JPEG-compressed at the lossless quality; a JPEG's crop comes out as decoded."""
    rng = np.random.default_rng(3)
    pixels = natural_image(rng, 64, 64)
    png = save(pixels, tmp_path / "real" / "a.png")
    jpeg = save(pixels, tmp_path / "fake" / "b.jpg", fmt="JPEG", quality=90)
    samples = [D.Sample(png, 0, "real/x"), D.Sample(jpeg, 1, "fake/y")]
    policy = D.TilingPolicy(crop=64, max_tiles=1)
    only_prepass = D.Augment(jpeg_prob=0.0, blur_prob=0.0, flip=False, lossless_jpeg_quality=(75, 75))
    ds = D.CropDataset(samples, policy, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), only_prepass, seed=0)
    as_uint8 = [np.rint(ds[i][0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8) for i in range(2)]
    from forensics.perturb import jpeg_roundtrip

    expected_png = np.asarray(jpeg_roundtrip(Image.fromarray(pixels), 75))
    np.testing.assert_array_equal(as_uint8[0], expected_png)
    assert np.abs(as_uint8[0].astype(int) - pixels).mean() > 0.5  # the pass did change the pixels
    np.testing.assert_array_equal(as_uint8[1], np.asarray(Image.open(jpeg).convert("RGB")))
    plain = D.CropDataset(samples, policy, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                          D.Augment(jpeg_prob=0.0, blur_prob=0.0, flip=False), seed=0)
    np.testing.assert_array_equal(np.rint(plain[0][0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8), pixels)


def test_threshold_is_set_on_the_held_out_source(three_sources, tmp_path):
    run = tmp_path / "run"
    invoke("train", three_sources["train"], "--val", three_sources["val"], "--out", run, "--arch", TINY_ARCH,
           "--crop", TINY_CROP, "--epochs", 2, "--batch-size", 16, "--workers", 0, "--jpeg-prob", 0,
           "--blur-prob", 0, "--hold-out", "real/scanner", "--threshold-source", "real/scanner",
           "--target-fpr", 0.1)
    card = json.loads((run / "card.json").read_text())
    assert set(card["training"]["train"]["per_source"]) == {"real/camera", "fake/gan-a"}
    assert set(card["training"]["val"]["per_source"]) == {"real/camera", "fake/gan-a"}
    assert "real/scanner" in card["threshold_method"] and "held out" in card["threshold_method"]
    # recomputed: the higher of the held-out source's and the validation camera's 10%-FPR thresholds,
    # each over its images as stored and at JPEG q75
    predict, model_card, _ = load_predictor(str(run))
    held = D.exclude_sources(D.discover(three_sources["train"], "binary")[0], ["real/scanner"])[1]
    camera = [s for s in D.discover(three_sources["val"], "binary")[0] if s.source == "real/camera"]
    expected = {}
    for name, samples in (("held", held), ("camera", camera)):
        scores = np.concatenate([score_samples(samples, predict, model_card, parse_perturbation(spec))[0][:, 1]
                                 for spec in (None, "jpeg:75")])
        expected[name] = choose_threshold(scores, np.ones(len(scores), bool), 0.1)
        assert (scores > card["threshold"] + 1e-6).mean() <= 0.1  # recomputed scores differ in the last bits
    assert card["threshold"] == pytest.approx(max(expected.values()), rel=1e-4)
    assert set(card["training"]["threshold_per_source"]) == {"real/scanner (held out, training folder)",
                                                             "real/camera (validation)"}


def test_threshold_source_must_be_held_out(three_sources, tmp_path):
    result = invoke("train", three_sources["train"], "--out", tmp_path / "r", "--arch", TINY_ARCH,
                    "--threshold-source", "real/scanner", expect=2)
    assert "held out" in result.output


def test_calibration_error_and_bins():
    labels = np.array([1] * 5 + [0] * 5)
    overconfident = calibration(np.full(10, 0.9), labels)
    assert overconfident["ece"] == pytest.approx(0.4)
    assert overconfident["bins"] == [{"low": 0.9, "high": 1.0, "n": 10, "mean_score": 0.9, "fraction_fake": 0.5}]
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=20000)
    assert calibration(scores, (rng.uniform(size=20000) < scores).astype(int))["ece"] < 0.02


def test_eval_reports_calibration(binary_data, tiny_run, tmp_path):
    invoke("eval", binary_data["val"], "--model", tiny_run, "--out", tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["ece"] <= 1.0
    assert sum(b["n"] for b in metrics["calibration"]["bins"]) == metrics["n"]
    assert (tmp_path / "reliability.png").stat().st_size > 1000


def test_results_sections_replace_only_their_own(tmp_path):
    doc = tmp_path / "RESULTS.md"
    write_section(doc, "a", ["first"])
    write_section(doc, "b", ["second"])
    write_section(doc, "a", ["third"])
    text = doc.read_text()
    assert "third" in text and "second" in text and "first" not in text
    assert text.index("third") < text.index("second")


def test_export_attaches_measured_evidence(tiny_run, tmp_path):
    evidence = tmp_path / "loso.json"
    evidence.write_text(json.dumps({"rows": [{"real": "real/a", "fake": "fake/b", "roc_auc": 0.97}]}))
    out = tmp_path / "m.onnx"
    invoke("export", tiny_run, "--out", out, "--attach", f"leave_one_source_out={evidence}")
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["metrics"]["leave_one_source_out"]["rows"][0]["roc_auc"] == 0.97
    result = invoke("export", tiny_run, "--out", tmp_path / "n.onnx", "--attach", "no-equals-sign", expect=2)
    assert "NAME=FILE.json" in result.output
    invoke("export", tiny_run, "--out", tmp_path / "o.onnx", "--attach", f"x={tmp_path / 'missing.json'}", expect=2)


def test_fp16_export_scans_like_fp32(binary_data, tiny_run, tiny_onnx, tmp_path):
    out = tmp_path / "half.onnx"
    result = invoke("export", tiny_run, "--out", out, "--fp16")
    assert "fp16" in result.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["precision"] == "fp16" and "parity_max_abs_logits_fp16" in card["metrics"]["export"]
    import onnx
    weights = [t for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    reports = {}
    for name, model in (("fp32", tiny_onnx), ("fp16", out)):
        reports[name] = tmp_path / f"{name}.json"
        invoke("dir", binary_data["val"], "--model", model, "--report", reports[name], "--device", "cpu")
    full, half = (json.loads(reports[k].read_text()) for k in ("fp32", "fp16"))
    assert [r["path"] for r in full] == [r["path"] for r in half]
    diffs = [abs(a["score"] - b["score"]) for a, b in zip(full, half)]
    assert max(diffs) < 0.02 and sum(a["label"] == b["label"] for a, b in zip(full, half)) >= 0.95 * len(full)


def test_rescale_shrinks_to_between_crop_and_native():
    rng = random.Random(0)
    big = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    sides = [min(D.Augment(rescale_prob=1.0).rescale(big, 128, rng).shape[:2]) for _ in range(40)]
    assert all(128 <= s <= 600 for s in sides) and max(sides) - min(sides) > 150
    assert D.Augment(rescale_prob=0.0).rescale(big, 128, rng) is big
    small = big[:100, :120]
    assert D.Augment(rescale_prob=1.0).rescale(small, 128, rng) is small  # never below the crop size
