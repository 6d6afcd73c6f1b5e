"""In which condition an image reached the scanner, read from the file itself: its format, a JPEG's quantisation
tables (the quality it was last saved at), camera EXIF and its size. The three conditions are the ones model
cards measure their detectors in (as stored, recompressed to JPEG q75, laundered: downscaled then recompressed),
so that a row can say what its verdict is worth in the condition it was made in (rows.RowBuilder)."""

from __future__ import annotations

from dataclasses import dataclass

AS_STORED, RECOMPRESSED, LAUNDERED = "as stored", "recompressed", "laundered"
CONDITIONS = (AS_STORED, RECOMPRESSED, LAUNDERED)
LOSSLESS = {"PNG", "BMP", "DIB", "TIFF", "QOI", "TGA", "PPM", "GIF", "ICO"}
HIGH_QUALITY = 90  # a JPEG saved at this quality or above keeps most of what the detectors look at
SMALL_SIDE = 512  # a recompressed image whose short side is below this was most likely downscaled on its way

# The IJG (libjpeg) luminance table at quality 50; a quality q scales it by 5000/q (q < 50) or 200 - 2q
_IJG_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                  14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
                  92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)


def _ijg_sum(quality: int) -> int:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return sum(min(255, max(1, (q * scale + 50) // 100)) for q in _IJG_LUMINANCE)


_IJG_SUMS = {q: _ijg_sum(q) for q in range(1, 101)}


def jpeg_quality(quantization: dict | None) -> int | None:
    """The IJG quality whose luminance table is closest (by its sum, so order does not matter) to the file's first
    table; None without one. Encoders other than libjpeg are placed on the same scale."""
    if not quantization:
        return None
    table = quantization.get(0) or next(iter(quantization.values()), None)
    if not table or len(table) != 64:
        return None
    total = sum(int(v) for v in table)
    return min(_IJG_SUMS, key=lambda q: (abs(_IJG_SUMS[q] - total), -q))


@dataclass(frozen=True)
class Condition:
    kind: str  # AS_STORED, RECOMPRESSED or LAUNDERED
    detail: str  # what the file showed, e.g. "JPEG q~75, 300x300, no camera EXIF"

    @property
    def text(self) -> str:
        return f"{self.kind} ({self.detail})"


def reached_as(fmt: str, width: int, height: int, quality: int | None, camera: bool, lossy: bool | None = None,
               ) -> Condition:
    """The condition of an image from what its file shows. A camera JPEG or a lossless file is `as stored`; a
    lossy file saved below HIGH_QUALITY (or of unknown quality) is `recompressed`, or `laundered` when its short
    side is also below SMALL_SIDE (downscaled and recompressed, as the cards' laundered condition)."""
    size = f"{width}x{height}"
    exif = "camera EXIF" if camera else "no camera EXIF"
    if fmt in LOSSLESS or (fmt == "WEBP" and lossy is False):
        return Condition(AS_STORED, f"{fmt} lossless, {size}")
    saved = f"{fmt} q~{quality}" if quality else f"{fmt} (lossy)"
    if camera or (quality is not None and quality >= HIGH_QUALITY):
        return Condition(AS_STORED, f"{saved}, {size}, {exif}")
    kind = LAUNDERED if min(width, height) < SMALL_SIDE else RECOMPRESSED
    return Condition(kind, f"{saved}, {size}, {exif}")
