"""The heatmap PNG writer: exact round trips through Pillow, and refusal of what it cannot write."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from forensics.png import encode_rgb_png, write_rgb_png


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (128, 96), (300, 517)])
def test_round_trip_is_exact(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_rgb_png(pixels))) as img:
        img.load()  # verifies every chunk's CRC and the zlib stream
        assert img.format == "PNG" and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), pixels)


def test_smooth_images_compress(tmp_path):
    y, x = np.mgrid[0:256, 0:256]
    pixels = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    write_rgb_png(pixels, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size < pixels.nbytes / 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), pixels)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32)])
def test_refuses_other_layouts(bad):
    with pytest.raises(ValueError):
        encode_rgb_png(bad)
