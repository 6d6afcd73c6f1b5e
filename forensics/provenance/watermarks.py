"""Invisible watermarks in the pixels: a numpy reader of the `invisible-watermark` library's DWT-DCT ("dwtDct")
method, the one the reference Stable Diffusion, SDXL and FLUX scripts embed with. Metadata is the first thing a
platform strips; these marks stay in the pixels until the image is recompressed or resized hard.

The method, as the library decodes it: OpenCV's 8-bit BGR -> YUV conversion, a one-level Haar transform of the
U plane (cropped to multiples of 4), 4x4 blocks of the approximation band in row-major order, and in each block the
coefficient of largest magnitude after the first: its magnitude modulo 36 above 18 is a 1. Block k votes for bit
k mod n, and a bit is the majority of its votes. Every step here is the library's own arithmetic (integer colour
conversion, the same float operations as PyWavelets' Haar filter), so the bits agree with its decoder bit for bit
(tests/test_watermarks.py compares them at many sizes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 4  # the library's block side, in approximation coefficients
SCALE = 36.0  # the library's quantisation step on the U channel (scales=[0, 36, 36]; channel 0 is skipped)
MIN_PIXELS = 256 * 256  # the library refuses smaller images
# The reader decodes at most this many pixels (whole block rows from the top): the bit of a block depends only
# on its index, so a band of the image carries every bit, each with fewer votes. A 512-px SD 1.x output is read
# on its top 256 rows (15 votes a bit for the 136-bit mark; 115 of 150 marked outputs found, 113 on the whole
# image), a 1024-px SDXL image on its top 128 rows; the cost is bounded at about 0.8 ms an image on 2 cores
# (docs/WATERMARKS.md).
MAX_READ_PIXELS = 256 * 512

# OpenCV's fixed-point coefficients for 8-bit RGB -> YUV (color_yuv: R2Y, G2Y, B2Y, B2UI; yuv_shift 14)
_SHIFT = 14
_R2Y, _G2Y, _B2Y, _B2U = 4899, 9617, 1868, 8061
_HAAR = np.float64(0.7071067811865476)  # PyWavelets' Haar filter tap, 1/sqrt(2) as a double


_Y_WEIGHTS = np.array([_R2Y, _G2Y, _B2Y], np.float32)
_SCALE = np.float32(1.0 / (1 << _SHIFT))


def u_plane(rgb: np.ndarray) -> np.ndarray:
    """The U channel of OpenCV's cvtColor(BGR2YUV) for 8-bit pixels, exactly: Y and U in 14-bit fixed point,
    rounded half up, U saturated to 0..255. The fixed-point sums stay below 2**23, so float32 holds every
    intermediate exactly (any summation order or fused multiply-add gives the same integers) and is faster here
    than int32."""
    f = rgb.astype(np.float32)
    y = np.floor(f @ _Y_WEIGHTS * _SCALE + np.float32(0.5))
    u = np.floor((f[..., 2] - y) * np.float32(_B2U) * _SCALE + np.float32(128.5))
    return np.clip(u, 0, 255, out=u)


def haar_approximation(plane: np.ndarray) -> np.ndarray:
    """The approximation band of PyWavelets' dwt2(plane, 'haar'), with its operations in its order (rows first,
    each output the sum of two products), so that halfway values round the same way."""
    x = plane.astype(np.float64)
    rows = _HAAR * x[0::2] + _HAAR * x[1::2]
    return _HAAR * rows[:, 0::2] + _HAAR * rows[:, 1::2]


def block_votes(rgb: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """Each block's vote (0 or 1), in the library's block order; with max_pixels, only the top block rows that fit
    in that many pixels are read."""
    height, width = rgb.shape[:2]
    height, width = height // 4 * 4, width // 4 * 4
    if max_pixels is not None and width:
        # whole block rows: a block is 4 approximation rows, 8 pixel rows
        height = min(height, max(8, max_pixels // width // 8 * 8))
    approx = haar_approximation(u_plane(rgb[:height, :width]))
    n_rows, n_cols = approx.shape[0] // BLOCK, approx.shape[1] // BLOCK
    blocks = approx[:n_rows * BLOCK, :n_cols * BLOCK].reshape(n_rows, BLOCK, n_cols, BLOCK)
    blocks = blocks.transpose(0, 2, 1, 3).reshape(-1, BLOCK * BLOCK)
    position = np.abs(blocks[:, 1:]).argmax(axis=1) + 1
    value = np.abs(blocks[np.arange(len(blocks)), position])
    return (np.remainder(value, SCALE) > 0.5 * SCALE).astype(np.int64)


def bits_from_votes(votes: np.ndarray, n_bits: int) -> np.ndarray:
    """The majority bit of each of n_bits from block votes, as the library takes it (mean * 255 > 127)."""
    index = np.arange(len(votes)) % n_bits
    counts = np.bincount(index, minlength=n_bits)
    ones = np.bincount(index, weights=votes.astype(np.float64), minlength=n_bits)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ones / counts) * 255 > 127


def decode_bits(rgb: np.ndarray, n_bits: int, max_pixels: int | None = None) -> np.ndarray:
    """The n_bits an RGB uint8 image carries by the dwtDct method (the library's decoder on its BGR twin);
    ValueError for images the library refuses (fewer than 256 x 256 pixels)."""
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError("an RGB uint8 image is needed")
    if rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        raise ValueError(f"image too small for the watermark reader ({rgb.shape[1]}x{rgb.shape[0]}, fewer than "
                         f"{MIN_PIXELS:,} pixels)")
    return bits_from_votes(block_votes(rgb[..., :3], max_pixels), n_bits)


@dataclass(frozen=True)
class WatermarkMatch:
    mark: str  # the mark's name in the table (forensics/provenance/signatures.py WATERMARKS)
    generator: str
    matching: int  # bits that agree with the mark
    bits: int

    @property
    def detail(self) -> str:
        return (f"invisible watermark: {self.mark}, {self.matching} of {self.bits} bits ({self.generator}; "
                f"dwtDct, unsigned)")


def find_marks(rgb: np.ndarray, marks, max_pixels: int | None = MAX_READ_PIXELS) -> list[WatermarkMatch]:
    """The known marks an image carries at or above each mark's agreement threshold. The block votes are computed
    once; each mark then only regroups them by its length."""
    if rgb.ndim != 3 or rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        return []
    votes = block_votes(rgb[..., :3], max_pixels)
    found = []
    for mark in marks:
        matching = int((bits_from_votes(votes, len(mark.bits)) == np.asarray(mark.bits, bool)).sum())
        if matching >= mark.min_matching:
            found.append(WatermarkMatch(mark.name, mark.generator, matching, len(mark.bits)))
    return found
