"""Finding images by content and decoding files into pixels or a reason."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from forensics.images import decode_bytes, decode_file, find_images, sniff_format
from forensics.synthetic import natural_image, save


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_find_images_by_content_not_extension(tmp_path: Path):
    rng = np.random.default_rng(0)
    save(natural_image(rng, 20, 20), tmp_path / "a.png")
    save(natural_image(rng, 20, 20), tmp_path / "disguised.txt")  # a PNG named .txt: still found
    save(natural_image(rng, 20, 20), tmp_path / "sub" / "b.jpeg", fmt="JPEG")
    (tmp_path / "notes.txt").write_text("just text")  # not an image, no image extension: not a candidate
    (tmp_path / "fake.jpg").write_text("not an image")  # claims to be one: gets a row (with an error)
    found = sorted(p.name for p in find_images(tmp_path))
    assert found == ["a.png", "b.jpeg", "disguised.txt", "fake.jpg"]


def test_sniff_formats():
    assert sniff_format(b"\x89PNG\r\n\x1a\n....") == "PNG"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"hello") is None


def test_decode_reports_reasons(tmp_path: Path):
    good = png_bytes(natural_image(np.random.default_rng(1), 16, 24))
    ok = decode_bytes(good, tmp_path / "x.png")
    assert ok.ok and ok.pixels.shape == (16, 24, 3) and ok.format == "PNG" and (ok.width, ok.height) == (24, 16)
    assert decode_bytes(b"", tmp_path / "e.png").error == "empty file (0 bytes)"
    assert "looks like text" in decode_bytes(b"hello world\n", tmp_path / "t.jpg").error
    cut = decode_bytes(good[: len(good) // 2], tmp_path / "trunc.png")
    assert cut.ok and "truncated" in cut.notes[0]  # decoded as a viewer shows it, and said so


def test_decode_file_missing_and_pixel_limit(tmp_path: Path):
    assert decode_file(tmp_path / "gone.png").error == "file vanished before it could be read"
    path = save(natural_image(np.random.default_rng(2), 40, 50), tmp_path / "big.png")
    refused = decode_file(path, max_pixels=1000)
    assert not refused.ok and "--max-pixels" in refused.error and refused.sha256
