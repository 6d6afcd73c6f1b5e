"""Heatmaps from the exported model's per-class maps (numpy only): placed per tile, blended over the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .png import write_rgb_png

MAX_DISPLAY_SIDE = 384  # overlays of larger images are scaled down for display (the row's notes say so)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def orient(image: Image.Image, orientation: int) -> Image.Image:
    """The image as a viewer shows it, given its EXIF orientation."""
    return image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map on 0..1 -> uint8 RGB (what Grad-CAM figures use)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def heatmap_canvas(tile_cams: np.ndarray, origins: list[tuple[int, int]], crop: int, height: int, width: int,
                   scale: float = 1.0) -> np.ndarray:
    """One image-sized map: each tile's (ReLU'd) map upsampled to the tile and placed where the tile came from.
    Pixels no tile covered stay 0. `scale` < 1 builds it at display size."""
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    canvas = np.zeros((h, w), np.float32)
    side = max(1, round(crop * scale))
    for cam, (y, x) in zip(tile_cams, origins):
        up = np.asarray(Image.fromarray(np.maximum(cam, 0).astype(np.float32), mode="F")
                        .resize((side, side), Image.Resampling.BILINEAR))
        y0, x0 = round(y * scale), round(x * scale)
        patch = up[: max(0, h - y0), : max(0, w - x0)]
        canvas[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]] = patch
    return canvas


def display_scale(height: int, width: int) -> float:
    return min(1.0, MAX_DISPLAY_SIDE / max(height, width))


_JET_LUT = jet(np.linspace(0.0, 1.0, 256))


def overlay(pixels: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend the jet-coloured map (normalised to its own peak) half and half over the image where it is positive."""
    return np.asarray(overlay_image(Image.fromarray(np.asarray(pixels, dtype=np.uint8)), heat))


def overlay_image(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """overlay() on a PIL image. Palette lookup, blend and mask all run in Pillow's C code: this runs for every
    selected image of a scan, where numpy fancy indexing cost 10-30 ms per 512 x 512 image."""
    peak = float(heat.max())
    if peak <= 0:
        return image
    index = Image.fromarray((heat * (255.0 / peak)).astype(np.uint8), mode="L")
    colour = index.convert("P")
    colour.putpalette(_JET_LUT.tobytes())
    blended = Image.blend(image, colour.convert("RGB"), 0.5)
    return Image.composite(blended, image, Image.fromarray((heat > 0).astype(np.uint8) * 255, mode="L"))


def write_heatmap_png(pixels: np.ndarray, tile_cams: np.ndarray, origins: list[tuple[int, int]], crop: int,
                      orientation: int, path: Path) -> None:
    """The heatmap over the image as a viewer shows it (EXIF orientation applied to both), scaled for display."""
    height, width = pixels.shape[:2]
    scale = display_scale(height, width)
    heat = heatmap_canvas(tile_cams, origins, crop, height, width, scale)
    image = Image.fromarray(pixels)
    if scale < 1.0:
        # reducing_gap: an integer box reduction first, then bilinear; a quarter of the time, same look on screen
        image = image.resize((heat.shape[1], heat.shape[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
    blended = orient(overlay_image(image, heat), orientation)
    tmp = path.with_name(path.name + ".tmp")
    write_rgb_png(np.asarray(blended), tmp)  # decoded pixels are always RGB
    tmp.replace(path)
