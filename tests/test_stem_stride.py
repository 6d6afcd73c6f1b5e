"""--stem-stride: the first convolution's stride travels through checkpoint and ONNX export into the scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_ARCH, TINY_CROP, invoke
from forensics.errors import ModelError
from forensics.training.models import create_model


def test_stride_one_keeps_twice_the_resolution_with_the_same_weights():
    torch.manual_seed(0)
    usual = create_model(TINY_ARCH, 2).eval()
    full = create_model(TINY_ARCH, 2, stem_stride=1).eval()
    full.load_state_dict(usual.state_dict())  # no tensor changes shape: ImageNet weights still fit
    x = torch.randn(1, 3, TINY_CROP, TINY_CROP)
    with torch.no_grad():
        small, large = usual.forward_features(x), full.forward_features(x)
    assert large.shape[-2:] == tuple(2 * s for s in small.shape[-2:])


def test_a_one_pixel_shift_only_shifts_a_stride_one_stem():
    """A stride-1 stem sees every pixel's neighbourhood, so shifting the image by one pixel shifts its output; a
    stride-2 stem samples every other pixel, so the same shift changes what it sees."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    shifted = torch.roll(x, 1, dims=-1)
    full = create_model(TINY_ARCH, 2, stem_stride=1).conv1[0]
    usual = create_model(TINY_ARCH, 2).conv1[0]
    usual.load_state_dict(full.state_dict())
    with torch.no_grad():
        a, b = full(x), torch.roll(full(shifted), -1, dims=-1)
        c, d = usual(x), usual(shifted)
    assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-5)
    assert not torch.allclose(c[..., 1:-1, 1:-1], d[..., 1:-1, 1:-1], atol=1e-2)


def test_a_negative_stem_stride_is_refused():
    with pytest.raises(ModelError, match="stem stride"):
        create_model(TINY_ARCH, 2, stem_stride=-1)


def test_stem_stride_is_inside_the_exported_model(binary_data, tmp_path: Path):
    """Trained with --stem-stride 1, exported, run by ONNX Runtime: the card records it, ONNX matches PyTorch and
    the exported feature map has twice the usual side."""
    from forensics.runtime import Detector
    from forensics.training.models import load_checkpoint

    run, out = tmp_path / "run", tmp_path / "s1.onnx"
    invoke("train", binary_data["train"], "--val", binary_data["val"], "--out", run, "--arch", TINY_ARCH,
           "--crop", TINY_CROP, "--epochs", 1, "--batch-size", 16, "--workers", 0, "--max-tiles", 2,
           "--stem-stride", 1, "--jpeg-prob", 0, "--blur-prob", 0)
    invoke("export", run, "--out", out)
    assert json.loads(out.with_suffix(".json").read_text())["stem_stride"] == 1
    model, card = load_checkpoint(run)
    assert card.stem_stride == 1
    tiles = np.random.default_rng(0).standard_normal((3, 3, TINY_CROP, TINY_CROP)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(tiles)).numpy()
        usual_side = create_model(TINY_ARCH, 2).eval().forward_features(torch.from_numpy(tiles)).shape[-1]
    detector = Detector(out, device="cpu")
    logits = detector.run(tiles)[0]
    features = detector.session.run(["features"], {"input": tiles})[0]
    assert np.abs(logits - expected).max() < 1e-4
    assert features.shape[-1] == 2 * usual_side
