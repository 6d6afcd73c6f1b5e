"""Degradations applied alike to every image before scoring: `jpeg:75`, `blur:1`, `resize:0.5`, `colour:0.1`, and
chains of them in order, `resize:0.3,jpeg:75` (an image laundered the way a moderation queue receives it:
downscaled, then recompressed)."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from .errors import GscanError

Perturbation = Callable[[np.ndarray], np.ndarray]


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """img saved as JPEG at quality and decoded again: the one JPEG re-encoding of evaluation and training."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _jpeg(quality: float) -> Perturbation:
    return lambda pixels: np.asarray(jpeg_roundtrip(Image.fromarray(pixels), int(quality)))


def _blur(sigma: float) -> Perturbation:
    return lambda pixels: np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(sigma)))


def _resize(factor: float) -> Perturbation:
    def apply(pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))
    return apply


def _colour(strength: float) -> Perturbation:
    """A warm colour cast: red gains `strength`, blue loses it, green is kept."""
    gains = np.array([1 + strength, 1.0, 1 - strength], dtype=np.float32)
    return lambda pixels: np.clip(pixels.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)


_KINDS = {"jpeg": _jpeg, "blur": _blur, "resize": _resize, "colour": _colour}


LAUNDERED = "resize:0.3,jpeg:75"  # the "laundered" column of every table: a 1024-px face as a 300-px q75 JPEG


def parse_perturbation(spec: str | None) -> Perturbation | None:
    """`kind:value[,kind:value...]` -> a function on uint8 RGB arrays, the steps in order; None or "none" ->
    None."""
    if not spec or spec == "none":
        return None
    steps = [_step(part.strip()) for part in spec.split(",")]
    if len(steps) == 1:
        return steps[0]

    def chain(pixels: np.ndarray) -> np.ndarray:
        for step in steps:
            pixels = step(pixels)
        return pixels
    return chain


def _step(spec: str) -> Perturbation:
    kind, _, value = spec.partition(":")
    try:
        return _KINDS[kind](float(value))
    except (KeyError, ValueError):
        raise GscanError(f"bad perturbation {spec!r}: use jpeg:QUALITY, blur:SIGMA, resize:FACTOR or "
                         "colour:STRENGTH, or several joined by commas (resize:0.3,jpeg:75)") from None
