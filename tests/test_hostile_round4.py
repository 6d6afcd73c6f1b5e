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


# -- reports that prove they are whole -----------------------------------------------------------------------------

@pytest.fixture
def sealed(tiny_onnx: Path, tmp_path: Path):
    """A folder of six images scanned twice with the same key: report a (--threshold 0) and b (--threshold 1)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.png").write_bytes(plain_png(10 + i, size=64))
    invoke("keys", "--out", tmp_path / "keys")
    reports = {}
    for name, threshold in (("a", 0.0), ("b", 1.0)):
        for fmt in ("csv", "jsonl", "json"):
            report = tmp_path / f"{name}.{fmt}"
            invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--threshold", threshold, "-q",
                   "--sign-key", tmp_path / "keys" / "gscan-signing.key")
            reports[name, fmt] = report
    return reports, tmp_path / "keys" / "gscan-signing.pub"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _rows_of(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(head, row lines, tail) of a report, for editing it as an attacker would."""
    lines = _lines(path)
    if path.suffix == ".csv":
        return lines[:1], lines[1:], []
    if path.suffix == ".json":
        body = [line.rstrip(",\n") + "\n" for line in lines[1:-1]]
        return lines[:1], body, lines[-1:]
    return [], lines, []


def _write(path: Path, head, rows, tail) -> None:
    if path.suffix == ".json":
        rows = [r.rstrip("\n") + ("," if i < len(rows) - 1 else "") + "\n" for i, r in enumerate(rows)]
    path.write_text("".join(head + rows + tail))


def _verify(report: Path, *extra, expect: int):
    return " ".join(invoke("verify", report, *extra, expect=expect).output.split())


EDITS = {
    "delete": (lambda rows, other: rows[:2] + rows[3:], "sealed row(s) missing before row 3"),
    "truncate": (lambda rows, other: rows[:4], "the report ends 2 sealed row(s) early"),
    "empty": (lambda rows, other: [], "the report ends 6 sealed row(s) early"),
    "reorder": (lambda rows, other: [rows[1], rows[0], *rows[2:]], "row 2 is sealed row 1, out of its sealed order"),
    "duplicate": (lambda rows, other: [*rows[:3], rows[2], *rows[4:]], "row 4 is sealed row 3 again"),
    "splice": (lambda rows, other: rows[:3] + other[3:4] + rows[4:], "row 4 is not a sealed row"),
}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_verify_names_deleted_truncated_reordered_and_spliced_rows(sealed, fmt: str, edit: str):
    reports, public = sealed
    report = reports["a", fmt]
    _verify(report, expect=0)
    head, rows, tail = _rows_of(report)
    change, expected = EDITS[edit]
    _write(report, head, change(rows, _rows_of(reports["b", fmt])[1]), tail)
    for extra in ((), ("--public-key", public)):
        said = _verify(report, *extra, expect=4)
        assert expected in said, said
        assert "NOT whole" in said


def test_verify_refuses_extra_and_duplicated_columns_and_keys(sealed):
    reports, public = sealed
    csv_report = reports["a", "csv"]
    head, rows, tail = _rows_of(csv_report)
    _write(csv_report, [head[0].rstrip("\n") + ",label\n"], [r.rstrip("\n") + ",real\n" for r in rows], tail)
    assert "repeated ['label']" in _verify(csv_report, expect=4)
    jsonl = reports["a", "jsonl"]
    head, rows, tail = _rows_of(jsonl)
    _write(jsonl, head, [rows[0].replace('"label": "fake"', '"label": "fake", "label": "real"'), *rows[1:]], tail)
    assert "repeats the key(s) ['label']" in _verify(jsonl, "--public-key", public, expect=4)
    head, rows, tail = _rows_of(reports["a", "json"])
    _write(reports["a", "json"], head, [rows[0].replace('{"path"', '{"extra": 1, "path"'), *rows[1:]], tail)
    assert "extra ['extra']" in _verify(reports["a", "json"], expect=4)


def test_a_third_party_checks_the_seal_with_the_public_key_alone(sealed, tmp_path: Path, monkeypatch):
    reports, public = sealed
    report = reports["a", "csv"]
    monkeypatch.setenv("GSCAN_REPORT_KEY_FILE", str(tmp_path / "no-such.key"))  # another machine: no secret
    said = _verify(report, "--public-key", public, expect=0)
    assert "row digests not checked" in said and "seal checked with the public key" in said and "; whole" in said
    invoke("keys", "--out", tmp_path / "other")
    assert "not signed with this public key" in _verify(report, "--public-key", tmp_path / "other" /
                                                        "gscan-signing.pub", expect=4)
    seal = report.with_name(report.name + ".seal")
    header, *lines = _lines(seal)
    forged = json.loads(header)
    forged["rows"] = 5
    seal.write_text(json.dumps(forged) + "\n" + "".join(lines[:5]))
    assert "signature does not hold" in _verify(report, "--public-key", public, expect=4)
    seal.unlink()
    assert "seal is missing" in _verify(report, "--public-key", public, expect=4) or \
        ".seal is missing" in _verify(report, "--public-key", public, expect=4)
    invoke("verify", report, expect=2)  # no key, no public key: nothing to check with


def test_formula_and_control_character_names_round_trip_through_csv(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("'=x.png", "=y.png", "bell\x07esc\x1b[31m.png", "back\\slash.png"):
        (folder / name).write_bytes(plain_png(20, size=64))
    report = tmp_path / "r.csv"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "-q")
    raw = report.read_text()
    assert "\x1b" not in raw and "\x07" not in raw  # `cat report.csv` runs nothing
    invoke("verify", report)  # an untouched report verifies
    rows = read_rows(report)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in folder.iterdir())
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume")
    assert len(read_rows(report)) == 4, result.output  # resume adds no second row for any of them


# -- resume, outputs on a full disk, smaller cases ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_of_a_report_with_an_unknown_column_is_exit_2_with_the_reason(tiny_onnx: Path, tmp_path: Path,
                                                                             fmt: str):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(plain_png(30, size=64))
    report = tmp_path / f"r.{fmt}"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "-q")
    head, rows, tail = _rows_of(report)
    if fmt == "csv":
        _write(report, [head[0].rstrip("\n") + ",verdict\n"], [r.rstrip("\n") + ",clean\n" for r in rows], tail)
    else:
        _write(report, head, [r.replace('{"path"', '{"verdict": "clean", "path"') for r in rows], tail)
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume", "-q", expect=2)
    assert "has columns gscan does not write (verdict)" in " ".join(result.output.split())


def test_an_existing_triage_page_is_not_replaced_without_overwrite(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(plain_png(31, size=64))
    page = tmp_path / "page.html"
    page.write_text("an investigator's earlier page")
    result = invoke("dir", folder, "--model", tiny_onnx, "--html", page, "-q", expect=2)
    assert "page" in result.output and "--overwrite" in result.output
    assert page.read_text() == "an investigator's earlier page"
    invoke("dir", folder, "--model", tiny_onnx, "--html", page, "--overwrite", "-q")
    assert "<html" in page.read_text().lower()


def _small_disk(limit: int):
    def apply():  # writes past `limit` bytes fail with EFBIG, as on a full disk
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _scan_on_small_disk(tiny_onnx: Path, folder: Path, limit: int, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "dir", str(folder), "--model", str(tiny_onnx), "-q",
                           "--batch-size", "4", *map(str, extra)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, preexec_fn=_small_disk(limit), env={**os.environ, "PYTHONPATH": str(REPO)})


def test_heatmaps_and_pages_that_do_not_fit_on_the_disk_are_exit_2(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (160, 160, 3), np.uint8)).save(folder / f"{i}.png")
    report = tmp_path / "r.csv"
    # noise PNGs of 160 px make heatmaps of about 40 KB: a 60 KB file limit fits the report but no heatmap
    out = _scan_on_small_disk(tiny_onnx, folder, 60_000, "--report", report, "--cam-dir", tmp_path / "cams",
                              "--cam-for", "all")
    assert out.returncode == 2, out.stderr
    failed = sum("heatmap failed" in (r["notes"] or "") for r in read_rows(report))
    assert failed and f"{failed} of the heatmaps asked for could not be written" in " ".join(out.stderr.split())
    page, report = tmp_path / "page.html", tmp_path / "r2.csv"
    out = _scan_on_small_disk(tiny_onnx, folder, 60_000, "--report", report, "--html", page)
    assert out.returncode == 2 and "cannot write the triage page" in out.stderr and "Traceback" not in out.stderr
    kept = len(read_rows(report))
    assert f"the {kept} rows scanned so far stay in {report}" in " ".join(out.stderr.split()) and not page.exists()


def test_json_rows_on_a_full_disk_are_counted_where_they_are(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i}.png").write_bytes(plain_png(100 + i, size=64))
    report = tmp_path / "r.json"
    out = _scan_on_small_disk(tiny_onnx, folder, 8192, "--report", report)
    assert out.returncode == 2, out.stderr
    partial = tmp_path / "r.json.partial"
    kept = len(read_rows(report))  # read_rows falls back to NAME.partial for an unfinished JSON report
    assert 0 < kept < 40 and f"the {kept} rows that reached it stay in {partial}" in " ".join(out.stderr.split())
    assert not [p.name for p in tmp_path.iterdir() if ".seal" in p.name]  # an unfinished report: no seal, no spool


def test_an_apng_declaring_billions_of_frames_is_not_believed():
    frames = [Image.fromarray(natural_image(np.random.default_rng(i), 32, 32)) for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    data = bytearray(buf.getvalue())
    at = data.index(b"acTL")
    data[at + 4:at + 8] = struct.pack(">I", 2**31 - 1)
    data[at + 12:at + 16] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 12])))
    decoded = decode_bytes(bytes(data), Path("a.png"))
    assert decoded.ok and any("not believed" in n for n in decoded.notes), decoded.notes


def test_a_trusted_certificate_on_a_broken_signature_is_not_called_trusted():
    from forensics.provenance.content_credentials import _validation

    store = {"validation_results": {"activeManifest": {
        "success": [{"code": "signingCredential.trusted"}], "failure": [{"code": "claimSignature.mismatch"}]}}}
    said = _validation(store, trusting=True)
    assert "signature invalid" in said and "signer trusted" not in said and "does not hold" in said


def test_a_comfyui_checkpoint_name_with_escaped_quotes_is_whole():
    from forensics.provenance.metadata import text_claims
    from provenance_files import comfy_chunks

    claims = text_claims(list(comfy_chunks('my "best" model.safetensors').items()))
    assert any('checkpoint my "best" model.safetensors' in c.detail for c in claims), claims


def test_verify_streams_a_large_report_in_bounded_memory(tmp_path: Path):
    from forensics.report import ReportWriter
    from forensics.rows import COLUMNS

    template = dict.fromkeys(COLUMNS)
    template.update(status="ok", sha256="ab" * 32, label="real", score=0.25, threshold=0.5, tiles=4, coverage=1.0,
                    model="m", model_sha256="cd" * 32, notes="n" * 200)
    peaks = {}
    for rows in (2_000, 40_000):
        report = tmp_path / f"r{rows}.jsonl"
        with ReportWriter(report, key=b"k" * 32) as writer:
            for start in range(0, rows, 1000):
                writer.write([{**template, "path": f"/img/{i:08d}.png"} for i in range(start, start + 1000)])
        code = ("import os\nos.environ['GSCAN_REPORT_KEY'] = 'k' * 32\n"
                "from forensics.verify import verify_report\nfrom forensics.integrity import report_key\n"
                f"r = verify_report({str(report)!r}, report_key(create=False))\n"
                f"assert r.intact and r.rows == {rows}, (r.rows, r.problems[:3], r.changed[:3])")
        peaks[rows] = _peak_kb(code)
    # 20x the rows (about 30 MB of report more) costs next to nothing in memory: rows are never held together
    assert peaks[40_000] - peaks[2_000] < 8 * 1024, peaks
