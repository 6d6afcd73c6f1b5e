"""Broken, hostile and awkward files: each gets exactly one row with a specific reason, and the scan goes on."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.images import decode_bytes, decode_file
from forensics.synthetic import natural_image

RNG = np.random.default_rng(7)
PIXELS = natural_image(RNG, 70, 90)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny file whose header declares a huge image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + png_chunk(b"IEND", b""))


def bad_crc_png() -> bytes:
    data = bytearray(encode(Image.fromarray(PIXELS), "PNG"))
    data[45] ^= 0xFF  # inside the first IDAT chunk: its CRC no longer matches
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(PIXELS), "JPEG", exif=exif.tobytes())


def frames() -> list[Image.Image]:
    return [Image.fromarray(PIXELS), Image.fromarray(255 - PIXELS)]


def palette_with_transparency() -> bytes:
    return encode(Image.fromarray(PIXELS).convert("P"), "PNG", transparency=0)


PNG = encode(Image.fromarray(PIXELS), "PNG")
JPEG = encode(Image.fromarray(PIXELS), "JPEG", quality=90)

# name -> (bytes, expected status, a phrase the error or notes must contain)
CASES = {
    "zero.png": (b"", "error", "empty file"),
    # decoded as a browser shows them (the rest filled), and the notes say so: an error row would let a fake
    # with its last bytes cut pass a --fail-on-fake gate
    "truncated.png": (PNG[: len(PNG) // 2], "ok", "PNG cut inside its 'IDAT' chunk (truncated)"),
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "ok", "does not end with its end-of-image marker"),
    "random.jpg": (RNG.bytes(3000), "error", "not a recognised image"),
    "text.jpg": (b"This is a text file, not a picture.\n" * 20, "error", "looks like text"),
    "image-named.txt": (PNG, "ok", ""),
    "bad-crc.png": (bad_crc_png(), "ok", "CRC does not match, ignored as viewers do: IDAT"),
    "bomb.png": (bomb_png(100_000, 100_000), "error", "--max-pixels"),
    "one-pixel.png": (encode(Image.fromarray(PIXELS[:1, :1]), "PNG"), "ok", ""),
    "seven-by-five.png": (encode(Image.fromarray(PIXELS[:5, :7]), "PNG"), "ok", ""),
    "sixteen-bit.png": (encode(Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257), "PNG"), "ok", ""),
    "gray.png": (encode(Image.fromarray(PIXELS[..., 0]), "PNG"), "ok", ""),
    "palette-transparent.png": (palette_with_transparency(), "ok", ""),
    "rgba.png": (encode(Image.fromarray(PIXELS).convert("RGBA"), "PNG"), "ok", "alpha channel ignored"),
    "cmyk.jpg": (encode(Image.fromarray(PIXELS).convert("CMYK"), "JPEG"), "ok", ""),
    "progressive.jpg": (encode(Image.fromarray(PIXELS), "JPEG", progressive=True), "ok", ""),
    "animated.gif": (encode(frames()[0], "GIF", save_all=True, append_images=frames()[1:]), "ok", "first frame of 2"),
    "animated.webp": (encode(frames()[0], "WEBP", save_all=True, append_images=frames()[1:]), "ok",
                      "first frame of 2"),
    "multipage.tiff": (encode(frames()[0], "TIFF", save_all=True, append_images=frames()[1:]), "ok",
                       "first frame of 2"),
    "rotated.jpg": (exif_rotated_jpeg(), "ok", "EXIF orientation 6: scored as stored"),
    "name with spaces 'and' \"quotes\".png": (PNG, "ok", ""),
    "new\nline.png": (PNG, "ok", ""),
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name, (data, _, _) in CASES.items():
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image and not named like one: not a row")
    os.symlink(root / "does-not-exist.png", root / "broken-link.png")
    os.symlink(root / "loop-b.png", root / "loop-a.png")
    os.symlink(root / "loop-a.png", root / "loop-b.png")
    os.mkdir(root / "sub")
    (root / "sub" / "nested.jpg").write_bytes(JPEG)
    # a name that is not valid UTF-8
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9t\xe9.png"), "wb") as fh:
        fh.write(PNG)
    return root


EXTRA = {"broken-link.png": ("error", "broken symlink"), "loop-a.png": ("error", "symlink loop"),
         "loop-b.png": ("error", "symlink loop"), "nested.jpg": ("ok", ""), "latin1-\udce9t\udce9.png": ("ok", "")}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_every_bad_file_gets_one_row_with_a_reason(bad_folder: Path, tiny_onnx: Path, tmp_path: Path, suffix):
    report = tmp_path / f"r{suffix}"
    invoke("dir", bad_folder, "--model", tiny_onnx, "--report", report)
    from forensics.report import read_rows

    rows = read_rows(report)
    by_name = {Path(r["path"]).name: r for r in rows}
    expected = {name: (status, phrase) for name, (_, status, phrase) in CASES.items()} | EXTRA
    if suffix == ".csv":  # CSV is text: the undecodable name is shown escaped, not lost
        expected["latin1-\\xe9t\\xe9.png"] = expected.pop("latin1-\udce9t\udce9.png")
    assert len(rows) == len(expected) and set(by_name) == set(expected)
    for name, (status, phrase) in expected.items():
        row = by_name[name]
        assert row["status"] == status, (name, row)
        text = (row["error"] or "") + " " + (row["notes"] or "")
        assert phrase in text, (name, row)
        if status == "ok":
            assert row["label"] in ("real", "fake") and int(row["tiles"]) >= 1
        else:
            assert row["error"] and not row["label"]


def test_non_utf8_name_is_lossless_in_json(bad_folder: Path, tiny_onnx: Path, tmp_path: Path):
    report = tmp_path / "r.json"
    invoke("dir", bad_folder, "--model", tiny_onnx, "--report", report)
    paths = [r["path"] for r in json.loads(report.read_text())]
    raw = [os.fsencode(p) for p in paths]
    assert os.path.join(os.fsencode(bad_folder), b"latin1-\xe9t\xe9.png") in raw
    assert all(os.path.lexists(p) for p in raw)  # every reported path leads back to the file


def test_small_images_are_padded_not_resized(tiny_onnx: Path, tmp_path: Path):
    from forensics.report import read_rows

    report = tmp_path / "r.jsonl"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.png").write_bytes(CASES["one-pixel.png"][0])
    invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report", report)
    row = read_rows(report)[0]
    assert (row["width"], row["height"], row["tiles"]) == (1, 1, 1)


def test_unreadable_file(monkeypatch, tmp_path: Path):
    path = tmp_path / "secret.png"
    path.write_bytes(PNG)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: simulate the kernel's refusal instead
        import forensics.images as images

        real_open = os.open

        def deny(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(images.os, "open", deny)
    assert decode_file(path).error == "permission denied"


def test_file_vanishing_mid_scan(monkeypatch, tmp_path: Path):
    import forensics.images as images

    path = tmp_path / "gone.png"
    path.write_bytes(PNG)
    real_open = os.open

    def delete_then_open(file, *args, **kwargs):  # found by the walk, gone when its turn to be read came
        if Path(file) == path and path.exists():
            path.unlink()
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(images.os, "open", delete_then_open)
    assert decode_file(path).error == "file vanished before it could be read"


def test_max_pixels_refuses_large_images(tiny_onnx: Path, tmp_path: Path):
    from forensics.report import read_rows

    (tmp_path / "in").mkdir()
    Image.fromarray(natural_image(np.random.default_rng(1), 300, 400)).save(tmp_path / "in" / "big.png")
    invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report", tmp_path / "r.jsonl", "--max-pixels", 100_000)
    row = read_rows(tmp_path / "r.jsonl")[0]
    assert row["status"] == "error" and "120,000 pixels, more than --max-pixels 100,000" in row["error"]


@pytest.mark.slow
def test_very_large_image_is_tiled_in_bounded_memory(tiny_onnx: Path, tmp_path: Path):
    import subprocess
    import sys

    big = tmp_path / "in" / "huge.jpg"
    big.parent.mkdir()
    gradient = np.linspace(0, 255, 12000, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(gradient, (9000, 12000, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(big, quality=85)
    del pixels
    # VmHWM, not ru_maxrss: the latter inherits the (large) test process's peak across fork and exec
    code = ("from cli.main import app\n"
            f"try:\n    app(['dir', {str(big.parent)!r}, '--model', {str(tiny_onnx)!r}, '-q', '--report', "
            f"{str(tmp_path / 'r.jsonl')!r}])\nexcept SystemExit:\n    pass\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    peak_mb = int(out.stdout.strip().splitlines()[-1]) / 1024
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["status"] == "ok" and (row["width"], row["height"]) == (12000, 9000) and row["tiles"] >= 1
    assert peak_mb < 1500, peak_mb  # the decoded image is 324 MB; tiles are a handful of crops


def test_decoder_fuzz_never_raises():
    """Bounded fuzz of decode and tile: arbitrary and mutated image bytes in, a result out, no exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from forensics.card import TilingPolicy
    from forensics.tiling import extract_tiles

    seeds = [PNG, JPEG, CASES["animated.gif"][0], CASES["multipage.tiff"][0], CASES["animated.webp"][0]]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
           st.integers(0, 10_000), st.binary(max_size=64))
    def check(seed: bytes, flips, cut, junk):
        data = bytearray(seed)
        for pos, value in flips:
            if data:
                data[pos % len(data)] = value
        data = bytes(data[: max(1, cut)] if cut < len(data) else data) + junk
        decoded = decode_bytes(data, Path("fuzz.bin"), max_pixels=4_000_000)
        assert decoded.ok == (decoded.pixels is not None)
        if decoded.ok:
            tiles, _ = extract_tiles(decoded.pixels, TilingPolicy(crop=32, max_tiles=4), (0.5,) * 3, (0.5,) * 3)
            assert np.isfinite(tiles).all()
        else:
            assert decoded.error

    check()
