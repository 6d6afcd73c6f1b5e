"""Find image files by content and decode one file safely into RGB pixels plus facts, or a reason it failed."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# We bound pixels ourselves (max_pixels) before decoding; PIL's own bomb check would raise mid-scan.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
DEFAULT_MAX_PIXELS = 150_000_000
EXIF_ORIENTATION = 0x0112
_STRIPE_PIXELS = 4_000_000

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(head: bytes) -> str | None:
    """Image format named by a file's first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(16)) is not None
    except OSError:
        return False


def find_images(root: Path) -> Iterator[Path]:
    """Every file under root that is an image by content or claims to be one by extension, in sorted order.

    Symlinks are listed (their decode reports a broken or looping link) but never followed into directories,
    so a link loop cannot make the walk run forever.
    """
    root = Path(root)
    if root.is_file() or (root.is_symlink() and not root.is_dir()):
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            path = base / name
            if path.is_symlink() and not path.exists():
                yield path  # broken link or loop: still a row, with the reason
            elif path.is_file() and _looks_like_image(path):
                yield path


@dataclass
class DecodedImage:
    """One file's pixels (H x W x 3 uint8, as stored) and facts, or the reason it could not be decoded."""

    path: Path
    sha256: str = ""
    file_size: int = 0
    mtime: float = 0.0
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    frames: int = 1
    orientation: int = 1
    pixels: np.ndarray | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """RGB uint8 pixels; 16-bit and 32-bit integer images are scaled, not clipped."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.width * img.height <= _STRIPE_PIXELS:
        return np.asarray(img, dtype=np.uint8)
    # np.asarray goes through tobytes(), which holds two more full copies at its peak; copy in stripes instead.
    out = np.empty((img.height, img.width, 3), dtype=np.uint8)
    rows = max(1, _STRIPE_PIXELS // img.width)
    for y in range(0, img.height, rows):
        out[y:y + rows] = np.asarray(img.crop((0, y, img.width, min(img.height, y + rows))))
    return out


def decode_bytes(data: bytes, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes into a DecodedImage; never raises for bad content."""
    out = DecodedImage(path=path, sha256=hashlib.sha256(data).hexdigest(), file_size=len(data))
    if not data:
        out.error = "empty file (0 bytes)"
        return out
    sniffed = sniff_format(data[:16])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            out.format = img.format or sniffed or ""
            out.width, out.height = img.size
            out.mode = img.mode
            out.frames = int(getattr(img, "n_frames", 1) or 1)
            if out.width * out.height > max_pixels:
                out.error = (f"image is {out.width}x{out.height} = {out.width * out.height:,} pixels, "
                             f"more than --max-pixels {max_pixels:,}")
                return out
            out.orientation = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
            if out.frames > 1:
                img.seek(0)
                out.notes.append(f"first frame of {out.frames}")
            img.load()
            out.pixels = _to_rgb_array(img)
    except UnidentifiedImageError:
        out.error = f"not a recognised image ({_describe_content(data, sniffed)})"
    except Image.DecompressionBombError as exc:
        out.error = f"decompression bomb refused: {exc}"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        out.error = f"corrupt {out.format or sniffed or 'image'} data: {exc}"
    except MemoryError:
        out.error = "not enough memory to decode this image"
    except Exception as exc:  # hostile files reach decoder paths that raise anything; a row, not a crash
        out.error = f"corrupt {out.format or sniffed or 'image'} data ({type(exc).__name__}): {exc}"
    if out.pixels is not None and out.orientation not in (0, 1):
        out.notes.append(f"EXIF orientation {out.orientation}: scored as stored, not rotated")
    if out.error:
        out.pixels = None
    return out


def _describe_content(data: bytes, sniffed: str | None) -> str:
    if sniffed:
        return f"{sniffed} signature but undecodable content"
    sample = data[:512]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "looks like text"
    return "unknown binary content"


def decode_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read and decode one file; I/O problems become the row's error, never an exception."""
    path = Path(path)
    try:
        st = path.stat()
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        reason = "broken symlink" if path.is_symlink() else "file vanished before it could be read"
        return DecodedImage(path=path, error=reason)
    except PermissionError:
        return DecodedImage(path=path, error="permission denied")
    except OSError as exc:
        reason = "symlink loop" if exc.errno == 40 else f"cannot read file: {exc.strerror or exc}"
        return DecodedImage(path=path, error=reason)
    out = decode_bytes(data, path, max_pixels)
    out.mtime = st.st_mtime
    if out.ok and "A" in out.mode:
        out.notes.append(f"{out.mode} image: alpha channel ignored")
    if out.ok and st.st_size != len(data):
        out.notes.append("file changed while being read: scored the bytes hashed")
    return out
