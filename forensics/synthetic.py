"""Generated images for tests and benchmarks: natural-looking smooth content, and "fakes" carrying a periodic
upsampling trace (numpy and Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def natural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour fields, a few soft blobs and sensor-like noise: varied, not all alike."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-0.6, 0.6, 2).tolist() + [rng.uniform(60, 190)]
        img[..., c] = base + a * yy + b * xx
    for _ in range(rng.integers(2, 6)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(5, max(6, min(height, width) / 2))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-70, 70, 3)
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def checkerboard_trace(height: int, width: int, amplitude: float = 10.0) -> np.ndarray:
    """The period-2 pattern a transposed-convolution upsampler leaves."""
    yy, xx = np.mgrid[0:height, 0:width]
    return (((yy + xx) % 2) * 2 - 1)[..., None] * amplitude


def add_trace(pixels: np.ndarray, amplitude: float = 10.0) -> np.ndarray:
    h, w = pixels.shape[:2]
    return np.clip(pixels.astype(np.float32) + checkerboard_trace(h, w, amplitude), 0, 255).astype(np.uint8)


def save(pixels: np.ndarray, path: Path, fmt: str = "PNG", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt, **kw)
    return path


def make_binary_dataset(root: Path, n_per_class: int, seed: int, sizes=(48, 64, 96, 130)) -> Path:
    """root/real/<src>/ and root/fake/<src>/: the same kind of content, fakes carry the trace.
    Both classes are saved as PNG so that encoding carries no label."""
    rng = np.random.default_rng(seed)
    for i in range(n_per_class):
        h, w = int(rng.choice(sizes)), int(rng.choice(sizes))
        save(natural_image(rng, h, w), root / "real" / "camera" / f"r{i:03d}.png")
        save(add_trace(natural_image(rng, h, w)), root / "fake" / "gan-a" / f"f{i:03d}.png")
    return root
