"""Train -> export -> scan -> eval on generated images, through the CLI, checking real files and numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import TINY_ARCH, TINY_CROP, invoke
from forensics.card import CARD_METADATA_KEY, ModelCard
from forensics.images import find_images
from forensics.report import COLUMNS
from forensics.runtime import sha256_file
from forensics.synthetic import natural_image, save


def test_train_writes_checkpoint_card_and_curves(tiny_run: Path):
    for name in ("model.safetensors", "card.json", "history.json", "curves.png"):
        assert (tiny_run / name).is_file(), name
    card = ModelCard.load(tiny_run / "card.json")
    assert card.arch == TINY_ARCH and card.classes == ["real", "fake"] and card.tiling.crop == TINY_CROP
    history = json.loads((tiny_run / "history.json").read_text())
    assert 1 <= len(history) <= 4
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 1.5
    # The generated fakes carry a visible periodic trace: a working pipeline must learn it.
    assert card.metrics["val"]["roc_auc"] >= 0.9
    assert 0.0 < card.threshold <= 1.0 and "validation reals" in card.threshold_method
    assert card.training["train"]["per_class"] == {"real": 48, "fake": 48}


def test_export_embeds_card_and_passes_parity(tiny_run: Path, tiny_onnx: Path):
    proto = onnx.load(str(tiny_onnx))
    meta = {p.key: p.value for p in proto.metadata_props}
    embedded = ModelCard.from_json(meta[CARD_METADATA_KEY])
    side = ModelCard.load(tiny_onnx.with_suffix(".json"))
    assert embedded.classes == side.classes == ["real", "fake"]
    assert side.onnx_sha256 == sha256_file(tiny_onnx)
    assert embedded.metrics["export"]["parity_max_abs_logits"] <= 1e-4
    assert [o.name for o in proto.graph.output] == ["logits", "features", "cams"] and embedded.heatmap == "cams"
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # dynamic batch axis


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_scan_report_one_row_per_file(binary_data, tiny_onnx: Path, tmp_path: Path, suffix: str):
    scan_dir = binary_data["val"]
    report = tmp_path / f"out{suffix}"
    invoke("dir", scan_dir, "--model", tiny_onnx, "--report", report)
    rows = read_report(report)
    files = sorted(str(p) for p in find_images(scan_dir))
    assert sorted(r["path"] for r in rows) == files
    assert list(rows[0].keys()) == COLUMNS
    model_sha = sha256_file(tiny_onnx)
    correct = 0
    for row in rows:
        assert row["status"] == "ok" and not row["error"]
        assert row["model"] == "tiny" and row["model_sha256"] == model_sha and row["gscan_version"]
        assert len(row["sha256"]) == 64 and row["scanned_at"]
        score, threshold = float(row["score"]), float(row["threshold"])
        assert 0.0 <= score <= 1.0
        assert row["label"] == ("fake" if score >= threshold else "real")
        truth = "fake" if "/fake/" in row["path"] else "real"
        correct += row["label"] == truth
    assert correct / len(rows) >= 0.8


def test_scan_tiles_follow_the_card(binary_data, tiny_onnx: Path, tmp_path: Path):
    report = tmp_path / "r.jsonl"
    invoke("dir", binary_data["val"], "--model", tiny_onnx, "--report", report)
    for row in read_report(report):
        w, h = int(row["width"]), int(row["height"])
        expected = min(2, max(1, h // TINY_CROP)) * min(2, max(1, w // TINY_CROP))
        assert int(row["tiles"]) == expected, row


def test_scan_matches_pytorch_checkpoint(binary_data, tiny_run: Path, tiny_onnx: Path, tmp_path: Path):
    """The ONNX scan and the PyTorch checkpoint score the same images alike (no preprocessing drift)."""
    from forensics.training.data import discover
    from forensics.training.evaluate import load_predictor, score_samples

    predict, card, _ = load_predictor(str(tiny_run))
    samples, _ = discover(binary_data["val"], "binary")
    probs, _ = score_samples(samples, predict, card)
    report = tmp_path / "r.json"
    invoke("dir", binary_data["val"], "--model", tiny_onnx, "--report", report)
    by_path = {r["path"]: r["score"] for r in read_report(report)}
    got = np.array([by_path[str(s.path)] for s in samples])
    assert np.abs(got - probs[:, 1]).max() < 1e-4


def test_eval_writes_metrics_and_plots(binary_data, tiny_run: Path, tiny_onnx: Path, tmp_path: Path):
    for model, out in ((tiny_run, tmp_path / "ckpt"), (tiny_onnx, tmp_path / "onnx")):
        result = invoke("eval", binary_data["val"], "--model", model, "--out", out, "--perturb", "jpeg:90")
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n"] == 32 and metrics["perturb"] == "jpeg:90"
        for key in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "tpr_at_1pct_fpr",
                    "tpr_at_5pct_fpr", "confusion_matrix", "per_source", "per_resolution"):
            assert key in metrics, key
        assert set(metrics["per_source"]) == {"real/camera", "fake/gan-a"}
        assert sum(map(sum, metrics["confusion_matrix"])) == 32
        assert (out / "roc.png").stat().st_size > 1000 and (out / "confusion.png").stat().st_size > 1000
        assert "roc_auc" in result.output
        assert set(metrics["files"]) == {"metrics.json", "confusion.png", "roc.png", "reliability.png"}
        assert all((out / f).is_file() for f in metrics["files"]) and "wrote metrics.json" in result.output


def read_report(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_io_binding_path_matches_plain_run(tiny_onnx: Path):
    """The CUDA path's IO binding, exercised on the CPU provider (CI has no GPU): same numbers as a plain run."""
    from forensics.runtime import Detector

    detector = Detector(tiny_onnx, device="cpu")
    tiles = np.random.default_rng(0).standard_normal((5, 3, TINY_CROP, TINY_CROP)).astype(np.float32)
    logits, cams = detector.run(tiles, with_cams=True)
    bound = detector.run_bound(tiles, ["logits", "cams"], "cpu")
    assert np.allclose(bound[0], logits, atol=1e-6) and np.allclose(bound[1], cams, atol=1e-6)
    assert cams.shape[:2] == (5, 2)
    # per-image arrays assembled in the reused staging buffer; a smaller batch next leaves stale rows behind it
    parts = detector.run_bound([tiles[:2], tiles[2:]], ["logits"], "cpu")[0]
    assert np.allclose(parts, logits, atol=1e-6)
    assert np.allclose(detector.run_bound([tiles[3:]], ["logits"], "cpu")[0], logits[3:], atol=1e-6)


def test_batches_never_exceed_the_batch_size(tiny_onnx: Path, binary_data):
    """A batch closes before the image that would overflow it: one input shape per session on CUDA."""
    from forensics.images import find_images
    from forensics.runtime import Detector
    from forensics.engines.local import LocalEngine
    from forensics.options import ScanOptions

    detector = Detector(tiny_onnx, device="cpu")
    sizes, run = [], detector.run
    detector.run = lambda tiles, with_cams=False: (sizes.append(sum(map(len, tiles))), run(tiles, with_cams))[1]
    rows: list[dict] = []
    files = sorted(find_images(binary_data["val"]))
    summary = LocalEngine(detector, None, ScanOptions(batch_size=6, workers=1)).scan(files, rows.extend)
    assert len(rows) == len(files) == summary.files
    assert sum(sizes) == summary.tiles and max(sizes) <= 6


def test_attach_evidence_to_an_exported_model(tiny_onnx, tmp_path):
    import shutil

    from forensics.runtime import Detector, sha256_file

    model = shutil.copy(tiny_onnx, tmp_path / "m.onnx")
    shutil.copy(tiny_onnx.with_suffix(".json"), tmp_path / "m.json")
    before = Detector(model, device="cpu")
    evidence = tmp_path / "logo.json"
    evidence.write_text(json.dumps({"rows": [{"source": "gan-x", "roc_auc": 0.61}]}))
    invoke("attach", model, f"logo={evidence}")
    after = Detector(model, device="cpu")  # loads: NAME.json names the new sha256
    assert after.card.metrics["logo"]["rows"][0]["roc_auc"] == 0.61
    assert json.loads((tmp_path / "m.json").read_text())["onnx_sha256"] == sha256_file(model) != before.sha256
    tiles = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    assert np.array_equal(before.run(tiles)[0], after.run(tiles)[0])  # the same weights
    # a file that is not the one its card names is refused, not re-signed
    (tmp_path / "m.json").write_text((tmp_path / "m.json").read_text().replace(sha256_file(model), "0" * 64))
    result = invoke("attach", model, f"logo={evidence}", expect=2)
    assert "refusing" in result.output


def test_adaptive_tiling_scores_the_rest_only_near_the_threshold(tiny_run: Path, tmp_path: Path):
    """first_tiles from the card: with margin 0 every multi-tile image stops at its first tiles; with a margin
    wider than any score, every tile is scored and the rows equal a full scan's."""
    rng = np.random.default_rng(9)
    folder = tmp_path / "in"
    for i in range(4):
        save(natural_image(rng, 192, 192), folder / f"{i}.png")  # 9 tiles of 64 px each
    rows = {}
    for name, args in (("full", []), ("stop", ["--first-tiles", 2, "--tile-margin", 0]),
                       ("wide", ["--first-tiles", 2, "--tile-margin", 1000])):
        model = tmp_path / f"{name}.onnx"
        invoke("export", tiny_run, "--out", model, *args)
        invoke("dir", folder, "--model", model, "--report", tmp_path / f"{name}.jsonl")
        rows[name] = {Path(r["path"]).name: r for r in read_report(tmp_path / f"{name}.jsonl")}
    assert {r["tiles"] for r in rows["full"].values()} == {4}  # the tiny model's max_tiles
    assert {r["tiles"] for r in rows["stop"].values()} == {2}
    for key, row in rows["wide"].items():
        assert row["tiles"] == 4 and abs(row["score"] - rows["full"][key]["score"]) < 1e-6
