"""The NPR front-end: what it computes, and that it travels through checkpoint and ONNX export into the scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_ARCH, TINY_CROP, invoke
from forensics.training.front_end import apply_front_end, npr_residual
from forensics.training.models import create_model


def test_npr_residual_removes_what_nearest_upsampling_made():
    small = torch.randn(1, 3, 8, 8)
    blocky = torch.nn.functional.interpolate(small, scale_factor=2, mode="nearest")
    assert torch.count_nonzero(npr_residual(blocky)) == 0
    noise = torch.randn(1, 3, 15, 15)  # odd sizes (Xception's 299) keep their shape
    residual = npr_residual(noise)
    assert residual.shape == noise.shape and residual.abs().mean() > 0.1


def test_npr_model_ignores_a_constant_shift_that_moves_an_rgb_model():
    torch.manual_seed(0)
    rgb = create_model(TINY_ARCH, 2).eval()
    npr = apply_front_end(create_model(TINY_ARCH, 2), "npr").eval()
    npr.load_state_dict(rgb.state_dict())  # same weights: only the front-end differs
    x = torch.randn(2, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        assert torch.allclose(npr(x), npr(x + 0.7), atol=1e-5)
        assert not torch.allclose(rgb(x), rgb(x + 0.7), atol=1e-3)


def test_unknown_front_end_is_refused():
    from forensics.errors import ModelError

    with pytest.raises(ModelError, match="unknown front-end"):
        create_model(TINY_ARCH, 2, front_end="fft")


def test_npr_front_end_is_inside_the_exported_model(binary_data, tmp_path: Path):
    """Trained with --front-end npr, exported, scanned with ONNX Runtime: the card says npr, ONNX matches PyTorch,
    and the exported graph itself ignores a constant shift (the residual is in the file, not in the scanner)."""
    from forensics.runtime import Detector
    from forensics.training.models import load_checkpoint

    run, out = tmp_path / "run", tmp_path / "npr.onnx"
    invoke("train", binary_data["train"], "--val", binary_data["val"], "--out", run, "--arch", TINY_ARCH,
           "--crop", TINY_CROP, "--epochs", 1, "--batch-size", 16, "--workers", 0, "--max-tiles", 2,
           "--front-end", "npr", "--jpeg-prob", 0, "--blur-prob", 0)
    invoke("export", run, "--out", out)
    assert json.loads(out.with_suffix(".json").read_text())["front_end"] == "npr"
    detector = Detector(out, device="cpu")
    assert detector.card.front_end == "npr"
    tiles = np.random.default_rng(0).standard_normal((3, 3, TINY_CROP, TINY_CROP)).astype(np.float32)
    model, _ = load_checkpoint(run)
    with torch.no_grad():
        expected = model(torch.from_numpy(tiles)).numpy()
    logits, _ = detector.run(tiles)
    assert np.abs(logits - expected).max() < 1e-4
    shifted, _ = detector.run(tiles + 0.5)
    assert np.abs(shifted - logits).max() < 1e-4
