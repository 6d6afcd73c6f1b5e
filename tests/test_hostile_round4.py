"""Hostile input, round four: a fake made unscorable never passes a moderation job, metadata never keeps pixels
from being scored and has a memory cap, pooled scores are checked, icons are checked over every entry. Each test
builds its file or model."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.images import MAX_METADATA, decode_bytes
from forensics.report import read_rows
from forensics.rows import NON_FINITE
from forensics.synthetic import natural_image
from test_hostile_round3 import crafted_model, png_header_only

REPO = Path(__file__).resolve().parents[1]


def chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def plain_png(seed: int = 0, size: int = 96) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(natural_image(np.random.default_rng(seed), size, size)).save(buf, "PNG")
    return buf.getvalue()


def with_chunks(png: bytes, chunks: list[bytes]) -> bytes:
    """The PNG with extra chunks right after IHDR (where metadata usually sits)."""
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]


def ztxt_bomb(n: int, inflated: int) -> list[bytes]:
    body = zlib.compress(b"A" * inflated, 9)
    return [chunk(b"zTXt", f"Comment{i}".encode() + b"\x00\x00" + body) for i in range(n)]


def exif_orientation_as_text() -> bytes:
    """A JPEG whose EXIF Orientation (0x0112) is stored as ASCII "abc" instead of a SHORT."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHI4s", 0x0112, 2, 4, b"abc\x00") + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    buf = io.BytesIO()
    Image.fromarray(natural_image(np.random.default_rng(5), 96, 96)).save(buf, "JPEG", quality=90,
                                                                          exif=b"Exif\x00\x00" + tiff)
    return buf.getvalue()


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "orientation-text.jpg").write_bytes(exif_orientation_as_text())
    (folder / "ztxt-33x4MiB.png").write_bytes(with_chunks(plain_png(1), ztxt_bomb(33, 4 * 2**20 - 64)))
    (folder / "plain.png").write_bytes(plain_png(2))
    return folder


def test_metadata_never_keeps_pixels_from_being_scored(hostile_folder: Path, tiny_onnx: Path, tmp_path: Path):
    report = tmp_path / "r.jsonl"
    invoke("dir", hostile_folder, "--model", tiny_onnx, "--report", report, "-q")
    rows = {Path(r["path"]).name: r for r in read_rows(report)}
    assert all(r["status"] == "ok" and r["score"] is not None for r in rows.values()), rows
    assert "EXIF Orientation 'abc' is not 1-8" in rows["orientation-text.jpg"]["notes"]
    assert "metadata cap: left out of decoding, pixels scored" in rows["ztxt-33x4MiB.png"]["notes"]


def test_an_unscorable_image_fails_a_moderation_job_closed(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "plain.png").write_bytes(plain_png(3))
    (folder / "big.png").write_bytes(plain_png(4, size=200))  # over --max-pixels below: no verdict possible
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG signature, nothing decodable
    (folder / "notes.png").write_bytes(b"just some text, not an image")  # not an image: never fails closed
    # --threshold 1.0: nothing scores fake, so exit 1 can only come from the images that could not be scored
    common = ("dir", folder, "--model", tiny_onnx, "--threshold", 1.0, "--max-pixels", 20000, "--fail-on-fake", "-q")
    result = invoke(*common, expect=1)
    assert "of 4 files, 2 images could not be scored (1 over --max-pixels, 1 not a recognised image;" \
        in " ".join(result.output.split())
    assert "--allow-unscored" in result.output
    invoke(*common, "--allow-unscored", expect=0)
    (folder / "big.png").unlink()
    (folder / "broken.png").unlink()
    invoke(*common, expect=0)


def _peak_kb(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code + "\nprint(next(int(l.split()[1]) for l in "
                          "open('/proc/self/status') if l.startswith('VmHWM')))"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


def test_a_huge_uncompressed_xmp_chunk_is_capped(tmp_path: Path):
    xmp = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + b"<x:xmpmeta>" + b" " * (120 * 2**20) + b"</x:xmpmeta>"
    path = tmp_path / "xmp.png"
    path.write_bytes(with_chunks(plain_png(6), [chunk(b"iTXt", xmp)]))
    del xmp
    code = ("from forensics.images import decode_file\n"
            f"d = decode_file({str(path)!r}, max_file_size=1 << 30)\n"
            "assert d.ok and d.pixels is not None, d.error\n"
            "assert any('metadata cap' in n for n in d.notes), d.notes")
    baseline = _peak_kb("import forensics.images")
    # the file's own 120 MiB are read once; Pillow never holds its text (1.59 GB before)
    assert _peak_kb(code) - baseline < 120 * 1024 + 2 * MAX_METADATA // 1024


def test_small_text_chunks_are_left_to_pillow():
    from provenance_files import A1111_PARAMETERS, png_with_text

    decoded = decode_bytes(png_with_text({"parameters": A1111_PARAMETERS}), Path("a.png"))
    assert decoded.ok and not any("metadata cap" in n for n in decoded.notes)


def test_pooled_scores_are_checked_for_finiteness(tiny_onnx: Path, tmp_path: Path):
    # finite tile logits whose float32 mean overflows: 3e38 on every tile of the fake class
    model = crafted_model(tmp_path, tiny_onnx, "overflow", "sound")
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(model)
    node = graph.graph.node[-1]  # Identity(pair) -> logits: scale the pair by 3e38 instead
    graph.graph.initializer.append(numpy_helper.from_array(np.array([0.0, 3e38], np.float32), "huge"))
    graph.graph.node.remove(node)
    graph.graph.node.append(helper.make_node("Add", ["pair", "huge"], ["logits"]))
    onnx.save(graph, model)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(plain_png(i, size=200))  # several tiles each
    report = tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", model, "--report", report, "--fail-on-fake", "-q", expect=None)
    rows = read_rows(report)
    assert all(r["status"] == "ok" and r["label"] == "fake" and r["score"] == 1.0 or
               r["status"] == "error" and r["error"] == NON_FINITE for r in rows), rows
    assert not any(r["status"] == "ok" and (r["score"] is None or r["label"] == "real") for r in rows)


def test_an_icon_with_hundreds_of_entries_is_checked_to_the_last(tiny_onnx: Path, tmp_path: Path):
    huge = png_header_only(30000, 30000)
    small = plain_png(7, size=16)
    n = 300
    directory = b"".join(struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(small), 6 + 16 * n) for _ in range(n - 1))
    offset = 6 + 16 * n + len(small)
    directory += struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(huge), offset)
    icon = struct.pack("<HHH", 0, 1, n) + directory + small + huge
    decoded = decode_bytes(icon, Path("x.ico"))
    assert not decoded.ok and "more than --max-pixels" in decoded.error
