"""Degradations applied alike to every image before scoring: `jpeg:75`, `blur:1`, `resize:0.5`, `colour:0.1`."""

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


def parse_perturbation(spec: str | None) -> Perturbation | None:
    """`kind:value` -> a function on uint8 RGB arrays; None or "none" -> None."""
    if not spec or spec == "none":
        return None
    kind, _, value = spec.partition(":")
    try:
        return _KINDS[kind](float(value))
    except (KeyError, ValueError):
        raise GscanError(f"bad perturbation {spec!r}: use jpeg:QUALITY, blur:SIGMA, resize:FACTOR or "
                         "colour:STRENGTH") from None
