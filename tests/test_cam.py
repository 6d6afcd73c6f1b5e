"""Heatmaps: the scan's maps equal grad-cam's GradCAM, point at the artefact, and land safely on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_ARCH, TINY_CROP, invoke
from forensics.heatmap import (MAX_DISPLAY_SIDE, MIN_TILE_SIDE, display_scale, display_side, heatmap_canvas,
                               heatmap_name, legend_height)
from forensics.images import decode_file
from forensics.runtime import Detector
from forensics.tiling import extract_tiles
from forensics.synthetic import checkerboard_trace, natural_image, save

QUADRANTS = ((0, 0), (0, 32), (32, 0), (32, 32))


def quadrant_fake(rng: np.random.Generator, quadrant: int) -> np.ndarray:
    pixels = natural_image(rng, 64, 64).astype(np.float32)
    y, x = QUADRANTS[quadrant]
    pixels[y:y + 32, x:x + 32] += checkerboard_trace(32, 32, 14.0)
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny model trained on fakes whose periodic artefact covers one random quadrant."""
    root = tmp_path_factory.mktemp("quadrant")
    rng = np.random.default_rng(11)
    for split, n in (("train", 64), ("val", 12), ("test", 24)):
        for i in range(n):
            save(natural_image(rng, 64, 64), root / split / "real" / f"r{i:03d}.png")
            q = int(rng.integers(4))
            save(quadrant_fake(rng, q), root / split / "fake" / f"f{i:03d}_q{q}.png")
    run = root / "run"
    invoke("train", root / "train", "--val", root / "val", "--out", run, "--arch", TINY_ARCH, "--crop", TINY_CROP,
           "--epochs", 5, "--batch-size", 16, "--lr", 3e-3, "--workers", 0, "--patience", 5,
           "--crops-per-image", 4, "--jpeg-prob", 0, "--blur-prob", 0)
    invoke("export", run, "--out", root / "quadrant.onnx")
    return run, root / "quadrant.onnx", root / "test"


def _gradcam(run: Path, tiles: np.ndarray, index: int) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from forensics.training.models import load_checkpoint

    model, _ = load_checkpoint(run)
    cam = GradCAM(model=model, target_layers=[model.layer4])
    return np.stack([cam(input_tensor=torch.from_numpy(t[None]), targets=[ClassifierOutputTarget(index)])[0]
                     for t in tiles])


@pytest.mark.parametrize("size", [(64, 64), (128, 128)])
def test_scan_heatmap_equals_gradcam(quadrant_model, tmp_path: Path, size):
    run, onnx_path, _ = quadrant_model
    rng = np.random.default_rng(3)
    pixels = quadrant_fake(rng, 1) if size == (64, 64) else np.tile(quadrant_fake(rng, 2), (2, 2, 1))
    detector = Detector(onnx_path, device="cpu")
    card = detector.card
    tiles, origins = extract_tiles(pixels, card.tiling, card.mean, card.std)
    _, cams = detector.run(tiles, with_cams=True)
    fake = card.classes.index("fake")
    ours = heatmap_canvas(cams[:, fake], origins, card.tiling.crop, *size)
    reference = _gradcam(run, tiles, fake)  # per tile, normalised and resized by the library
    theirs = np.zeros(size, np.float32)
    for ref, (y, x) in zip(reference, origins):
        theirs[y:y + TINY_CROP, x:x + TINY_CROP] = ref
    # grad-cam normalises each tile's map to its own peak: compare tile by tile
    for (y, x) in origins:
        a = ours[y:y + TINY_CROP, x:x + TINY_CROP].ravel()
        b = theirs[y:y + TINY_CROP, x:x + TINY_CROP].ravel()
        if a.std() == 0 and b.std() == 0:
            continue
        assert np.corrcoef(a, b)[0, 1] >= 0.99


def test_heatmap_peak_falls_in_the_artefact_quadrant(quadrant_model, tmp_path: Path):
    _, onnx_path, test_dir = quadrant_model
    report = tmp_path / "r.jsonl"
    invoke("dir", test_dir / "fake", "--model", onnx_path, "--report", report, "--cam-dir", tmp_path / "cams",
           "--cam-for", "all")
    detector = Detector(onnx_path, device="cpu")
    fake = detector.card.classes.index("fake")
    hits = total = 0
    for path in sorted((test_dir / "fake").glob("*.png")):
        quadrant = int(path.stem.split("_q")[1])
        pixels = decode_file(path).pixels
        tiles, origins = extract_tiles(pixels, detector.card.tiling, detector.card.mean, detector.card.std)
        _, cams = detector.run(tiles, with_cams=True)
        heat = heatmap_canvas(cams[:, fake], origins, TINY_CROP, 64, 64)
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        hits += (int(y >= 32) * 2 + int(x >= 32)) == quadrant
        total += 1
    assert hits / total >= 0.7, f"peak in the artefact's quadrant for {hits}/{total}"


def test_one_png_per_selected_image_named_by_hash(quadrant_model, tmp_path: Path):
    _, onnx_path, test_dir = quadrant_model
    scan_dir = tmp_path / "in"
    weird = ["../../escape.png", "new\nline.png", "..png"]
    rng = np.random.default_rng(4)
    sizes = {}
    for i, name in enumerate(weird + ["big.png"]):
        h, w = (300, 1300) if name == "big.png" else (64 + 8 * i, 80)
        target = scan_dir / name.replace("/", "_") if "/" in name else scan_dir / name
        save(natural_image(rng, h, w), target)
        sizes[str(target)] = (w, h)
    cams = tmp_path / "cams"
    report = tmp_path / "r.json"
    invoke("dir", scan_dir, "--model", onnx_path, "--report", report, "--cam-dir", cams, "--cam-for", "all")
    rows = json.loads(report.read_text())
    assert len(rows) == 4
    pngs = sorted(cams.iterdir())
    assert len(pngs) == 4 and not list(tmp_path.glob("escape*"))
    for row in rows:
        path = Path(row["cam_path"])
        assert path.parent == cams and path.name == heatmap_name(Path(row["path"]), row["sha256"])
        assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{12}\.png", path.name) and not path.name.startswith(".")
        w, h = sizes[row["path"]]
        shown_w, shown_h = Image.open(path).size
        shown_h -= legend_height(shown_w, row["cam_max"], row["cam_class"], row["coverage"])  # the scale below
        if max(w, h) <= MAX_DISPLAY_SIDE:
            assert (shown_w, shown_h) == (max(w, 160), h)
        else:  # scaled down, but never so far that a tile is smaller than MIN_TILE_SIDE px
            assert max(shown_w, shown_h) == display_side(h, w, TINY_CROP) and "scaled" in row["notes"]
            assert round(TINY_CROP * display_scale(h, w, TINY_CROP)) >= MIN_TILE_SIDE
        assert row["cam_max"] >= 0 and row["cam_class"] in ("real", "fake")
        assert row["cam_class"] == row["label"]


def test_cam_for_fake_selects_only_fakes(quadrant_model, tmp_path: Path):
    _, onnx_path, test_dir = quadrant_model
    report = tmp_path / "r.jsonl"
    invoke("dir", test_dir, "--model", onnx_path, "--report", report, "--cam-dir", tmp_path / "cams")
    rows = [json.loads(x) for x in report.read_text().splitlines()]
    with_cam = [r for r in rows if r["cam_path"]]
    assert with_cam and all(r["label"] == "fake" for r in with_cam)
    assert len(list((tmp_path / "cams").iterdir())) == len({r["sha256"] for r in with_cam})
    assert all(r["cam_path"] is None for r in rows if r["label"] == "real")


def test_cam_command_single_layer_and_all_layers(quadrant_model, tmp_path: Path):
    run, _, test_dir = quadrant_model
    image = sorted((test_dir / "fake").glob("*.png"))[0]
    invoke("cam", image, "--checkpoint", run, "--out", tmp_path / "one.png", "--target", "fake")
    assert Image.open(tmp_path / "one.png").size == (64, 64)
    result = invoke("cam", image, "--checkpoint", run, "--out", tmp_path / "grid.png", "--all-layers",
                    "--method", "gradcam++")
    assert "layer4" in result.output and Image.open(tmp_path / "grid.png").size[0] > 300
    assert "no layer" in invoke("cam", image, "--checkpoint", run, "--out", tmp_path / "x.png", "--layer", "nope",
                                expect=2).output


def test_the_whole_map_is_drawn_with_a_legend_of_its_raw_scale():
    """No part of the image shows through unmarked where the map is 0, and the strip below runs from the colour
    map's dark end (0) to its bright end (the raw peak, cam_max)."""
    from forensics.heatmap import inferno, overlay_image, with_legend

    image = Image.fromarray(np.full((64, 200, 3), 200, np.uint8))
    heat = np.zeros((64, 200), np.float32)
    heat[:, 100:] = np.linspace(0, 2.5, 100)[None]
    drawn = np.asarray(overlay_image(image, heat, peak=2.5)).astype(int)
    assert (drawn[:, :100] < 150).all()  # zeros are drawn dark, not left as the raw image
    assert (drawn[:, -1, 0] > drawn[:, 101, 0] + 60).all()  # the peak is bright
    legend = np.asarray(with_legend(Image.fromarray(drawn.astype(np.uint8)), 2.5, "fake")).astype(int)
    assert legend.shape == (64 + legend_height(200, 2.5, "fake"), 200, 3)
    bar = legend[64 + 6, 4:196]
    lut = inferno(np.array([0.0, 1.0])).astype(int)
    assert np.abs(bar[0] - lut[0]).max() <= 3 and np.abs(bar[-1] - lut[1]).max() <= 3
    assert bar.sum(axis=1)[-1] > bar.sum(axis=1)[len(bar) // 2] > bar.sum(axis=1)[0]
