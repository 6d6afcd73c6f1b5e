import numpy as np
import pytest

from forensics.card import TilingPolicy
from forensics.tiling import extract_tiles, normalise, tile_origins


@pytest.mark.parametrize("h,w", [(128, 128), (1024, 1024), (375, 500), (600, 600), (130, 300), (64, 2000)])
def test_origins_are_non_overlapping_in_bounds_and_on_the_jpeg_grid(h, w):
    policy = TilingPolicy(crop=128, max_tiles=9)
    origins = tile_origins(h, w, policy)
    assert 1 <= len(origins) <= 9
    for y, x in origins:
        assert y % 8 == 0 and x % 8 == 0
        assert y + 128 <= max(h, 128) and x + 128 <= max(w, 128)
    for i, (y1, x1) in enumerate(origins):
        for y2, x2 in origins[i + 1:]:
            assert abs(y1 - y2) >= 128 or abs(x1 - x2) >= 128


def test_grid_count_follows_policy():
    assert len(tile_origins(128, 128, TilingPolicy(crop=128, max_tiles=9))) == 1
    assert len(tile_origins(1024, 1024, TilingPolicy(crop=128, max_tiles=9))) == 9
    assert len(tile_origins(1024, 1024, TilingPolicy(crop=128, max_tiles=4))) == 4
    assert len(tile_origins(300, 300, TilingPolicy(crop=128, max_tiles=9))) == 4


def test_tiles_are_native_pixels_not_resized():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 520, 3), dtype=np.uint8)
    policy = TilingPolicy(crop=128, max_tiles=9)
    tiles, origins = extract_tiles(pixels, policy, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for tile, (y, x) in zip(tiles, origins):
        expected = normalise(pixels[y:y + 128, x:x + 128], (0.5,) * 3, (0.5,) * 3)
        assert np.array_equal(tile, expected)


def test_small_image_is_padded_with_the_pad_value():
    pixels = np.full((7, 5, 3), 255, dtype=np.uint8)
    tiles, origins = extract_tiles(pixels, TilingPolicy(crop=32, max_tiles=9), (0.5,) * 3, (0.5,) * 3)
    assert tiles.shape == (1, 3, 32, 32) and origins == [(0, 0)]
    assert np.allclose(tiles[0, :, :7, :5], 1.0)
    assert np.allclose(tiles[0, :, 7:, :], 0.0) and np.allclose(tiles[0, :, :, 5:], 0.0)
