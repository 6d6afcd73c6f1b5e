"""Heatmaps from the exported model's per-class maps (numpy only): placed per tile, blended over the image."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .outputs import temporary_beside
from .png import encode_rgb_png
from .tiling import coverage

# Overlays of larger images are scaled down for display (the row's notes say so): writing the PNG is most of a
# heatmap's cost. A large photo is scaled down less, so that each scored tile stays MIN_TILE_SIDE px wide and
# findable (a 128-px tile of a 3264-px phone photo was a 15-px speck at 384 px), up to MAX_LARGE_SIDE.
MAX_DISPLAY_SIDE = 384
MIN_TILE_SIDE = 32
MAX_LARGE_SIDE = 1024
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def orient(image: Image.Image, orientation: int) -> Image.Image:
    """The image as a viewer shows it, given its EXIF orientation."""
    return image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image


# matplotlib's "inferno" (perceptually uniform, dark to bright through red), sampled at 17 stops: the scan side
# has no matplotlib, and 256 levels interpolated from these are indistinguishable on screen
_INFERNO_STOPS = np.array([
    (0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110), (138, 34, 106),
    (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29), (249, 142, 9), (252, 172, 17),
    (249, 203, 53), (242, 234, 105), (252, 255, 164)], dtype=np.float32)


def inferno(values: np.ndarray) -> np.ndarray:
    """The inferno colour map on 0..1 -> uint8 RGB."""
    v = np.clip(values, 0.0, 1.0) * (len(_INFERNO_STOPS) - 1)
    rgb = [np.interp(v, np.arange(len(_INFERNO_STOPS)), _INFERNO_STOPS[:, c]) for c in range(3)]
    return np.round(np.stack(rgb, axis=-1)).astype(np.uint8)


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

def heatmap_name(image: Path, sha256: str) -> str:
    """`<image stem>-<sha256 prefix>.png`: a person finds the heatmap of `IMG_0042.jpg` as `IMG_0042-1a2b3c4d5e6f.png`.
    The stem keeps only letters, digits, `.`, `_` and `-` (at most 60), so no file name can steer where it goes;
    the hash keeps same-named images in different folders apart."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image).stem)[:60].lstrip(".") or "image"
    return f"{stem}-{sha256[:12]}.png"


def display_scale(height: int, width: int, crop: int = 0) -> float:
    """How much a heatmap shrinks the image: to MAX_DISPLAY_SIDE, or less where a crop-px tile would fall below
    MIN_TILE_SIDE (never past MAX_LARGE_SIDE, never enlarged)."""
    side = max(height, width)
    scale = MAX_DISPLAY_SIDE / side
    if crop and crop * scale < MIN_TILE_SIDE:
        scale = min(MIN_TILE_SIDE / crop, MAX_LARGE_SIDE / side)
    return min(1.0, scale)


def display_side(height: int, width: int, crop: int = 0) -> int:
    """The longer side of the heatmap drawn for an image."""
    return round(max(height, width) * display_scale(height, width, crop))


_LUT = inferno(np.linspace(0.0, 1.0, 256))
LEGEND_HEIGHT = 58


def overlay(pixels: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend the colour-mapped map (normalised to its own peak) half and half over the whole image."""
    return np.asarray(overlay_image(Image.fromarray(np.asarray(pixels, dtype=np.uint8)), heat))


def overlay_image(image: Image.Image, heat: np.ndarray, peak: float | None = None) -> Image.Image:
    """overlay() on a PIL image. Palette lookup and blend run in Pillow's C code: this runs for every selected
    image of a scan, where numpy fancy indexing cost 10-30 ms per 512 x 512 image. The whole map is drawn, zeros
    included (dark), so no part of the image shows through unmarked."""
    peak = float(heat.max()) if peak is None else peak
    scaled = heat * (255.0 / peak) if peak > 0 else np.zeros_like(heat)
    colour = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L").convert("P")
    colour.putpalette(_LUT.tobytes())
    return Image.blend(image, colour.convert("RGB"), 0.5)


def examined_mask(origins: list[tuple[int, int]], crop: int, height: int, width: int, scale: float) -> np.ndarray:
    """True where a scored tile lies, at display size."""
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    mask = np.zeros((h, w), bool)
    side = max(1, round(crop * scale))
    for y, x in origins:
        mask[round(y * scale):round(y * scale) + side, round(x * scale):round(x * scale) + side] = True
    return mask


def mark_unexamined(shown: Image.Image, plain: Image.Image, mask: np.ndarray) -> Image.Image:
    """Pixels no scored tile covered: the image greyed and hatched, so that they never read as "cold" (no
    evidence) when they were never looked at."""
    if mask.all():
        return shown
    grey = np.asarray(plain.convert("L"), np.float32) * 0.5 + 110
    yy, xx = np.indices(mask.shape)
    grey[(yy + xx) % 8 < 2] = 70  # diagonal hatching
    out = np.asarray(shown).copy()
    out[~mask] = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)[~mask]
    return Image.fromarray(out)


def outline_tiles(image: Image.Image, origins: list[tuple[int, int]], crop: int, scale: float) -> Image.Image:
    """A thin line around each scored tile: where two tiles meet, a jump in the map is the tiles' seam, and
    shows as one, not as a feature of the image."""
    from PIL import ImageDraw

    draw, side = ImageDraw.Draw(image), max(1, round(crop * scale))
    small = side < 48  # tiles of a large photo, scaled down: a bright, thicker frame, so they can be found
    colour, width = ((0, 220, 255), 2) if small else ((150, 150, 150), 1)
    for y, x in origins:
        x0, y0 = round(x * scale), round(y * scale)
        draw.rectangle((x0 - width + 1, y0 - width + 1, x0 + side + width - 2, y0 + side + width - 2),
                       outline=colour, width=width)
    return image


def _wrapped(text: str, width: int, measure) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and measure(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def _legend_lines(width: int, cam_max: float, cam_class: str, examined: float) -> list[str]:
    from PIL import ImageDraw, ImageFont

    font, measure = ImageFont.load_default(), ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    words = (f"Brighter: more evidence for '{cam_class}', relative to this image's peak (raw {cam_max:.3g}). "
             f"{examined:.0%} of the image examined" + ("; hatched: not examined (--tiles all examines all of it)."
                                                        if examined < 1 else "."))
    return _wrapped(words, width - 8, lambda t: measure(t, font=font))


def legend_height(width: int, cam_max: float, cam_class: str, examined: float = 1.0) -> int:
    """Rows of pixels the legend adds below an image of this width: the scale, then the words, wrapped."""
    return LEGEND_HEIGHT + 13 * max(0, len(_legend_lines(width, cam_max, cam_class, examined)) - 2)


def with_legend(image: Image.Image, cam_max: float, cam_class: str, examined: float = 1.0) -> Image.Image:
    """The heatmap with a strip below it: the colour scale from 0 to this image's peak, what the colour means in
    words (wrapped to the image's width), the raw peak (the row's cam_max, comparable across images), and how
    much of the image was examined."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    width = max(image.width, 160)
    lines = _legend_lines(width, cam_max, cam_class, examined)
    out = Image.new("RGB", (width, image.height + legend_height(width, cam_max, cam_class, examined)),
                    (255, 255, 255))
    out.paste(image, (0, 0))
    bar_w = width - 8
    bar = Image.fromarray(np.repeat(_LUT[None, np.linspace(0, 255, bar_w).astype(int)], 10, axis=0))
    out.paste(bar, (4, image.height + 3))
    draw = ImageDraw.Draw(out)
    y = image.height + 15
    draw.text((4, y), "0", fill=(0, 0, 0), font=font)
    draw.text((width - 4 - draw.textlength("peak", font=font), y), "peak", fill=(0, 0, 0), font=font)
    for i, line in enumerate(lines):
        draw.text((4, y + 13 * (i + 1)), line, fill=(0, 0, 0), font=font)
    return out


def write_heatmap_png(pixels: np.ndarray, tile_cams: np.ndarray, origins: list[tuple[int, int]], crop: int,
                      orientation: int, path: Path, cam_class: str = "") -> None:
    """The heatmap over the image as a viewer shows it (EXIF orientation applied to both), scaled for display,
    with its legend."""
    height, width = pixels.shape[:2]
    scale = display_scale(height, width, crop)
    heat = heatmap_canvas(tile_cams, origins, crop, height, width, scale)
    image = Image.fromarray(pixels)
    if scale < 1.0:
        # reducing_gap: an integer box reduction first, then bilinear; a quarter of the time, same look on screen
        image = image.resize((heat.shape[1], heat.shape[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
    cam_max = float(np.maximum(tile_cams, 0).max())  # the row's cam_max: the legend's top is that value
    mask = examined_mask(origins, crop, height, width, scale)
    shown = outline_tiles(mark_unexamined(overlay_image(image, heat, cam_max), image, mask), origins, crop, scale)
    blended = with_legend(orient(shown, orientation), cam_max, cam_class, coverage(origins, crop, height, width))
    # a fresh, unpredictably named file (O_EXCL), written through its descriptor and renamed into place: the
    # PNG's name is predictable (an upload's name and sha256), so nothing is ever opened by that name for writing
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(encode_rgb_png(np.asarray(blended)))  # decoded pixels are always RGB
        os.replace(tmp, path)
    except BaseException:  # a full disk leaves no half-written temporary behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
