"""Hostile input, round two: no evasion, no code run, no writes through links, no stale rows, no injection.

Each test builds its input in a few lines and checks the row, the exit code and that nothing outside the
output paths changed."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.report import read_rows
from forensics.synthetic import natural_image

PIXELS = natural_image(np.random.default_rng(17), 72, 80)


def encode(fmt: str, pixels: np.ndarray = PIXELS, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_with_chunk(kind: bytes, data: bytes, good_crc: bool = True) -> bytes:
    png = encode("PNG")
    crc = zlib.crc32(kind + data) ^ (0 if good_crc else 0xFFFFFFFF)
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]  # right after IHDR


def scan_rows(folder: Path, model: Path, tmp: Path, *extra, expect: int = 0) -> dict[str, dict]:
    report = tmp / "rows.jsonl"
    invoke("dir", folder, "--model", model, "--report", report, "--overwrite", *extra, expect=expect)
    return {Path(r["path"]).name: r for r in read_rows(report)}


# -- evasion: what a browser shows is scored -------------------------------------------------------------------

def test_damaged_files_a_browser_shows_are_scored_and_noted(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "cut-tail.jpg").write_bytes(encode("JPEG")[:-2])
    (folder / "bad-text-crc.png").write_bytes(png_with_chunk(b"tEXt", b"Comment\0hello", good_crc=False))
    (folder / "private-chunk-crc.png").write_bytes(png_with_chunk(b"prVt", b"x" * 40, good_crc=False))
    (folder / "big-ztxt.png").write_bytes(png_with_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(os.urandom(5 << 20))))
    (folder / "big-iccp.png").write_bytes(png_with_chunk(b"iCCP", b"icc\0\0" + zlib.compress(os.urandom(5 << 20))))
    rows = scan_rows(folder, tiny_onnx, tmp_path)
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert "end-of-image marker" in rows["cut-tail.jpg"]["notes"]
    assert "tEXt" in rows["bad-text-crc.png"]["notes"] and "prVt" in rows["private-chunk-crc.png"]["notes"]
    # --fail-on-fake sees them: at threshold 0 every scored image is fake
    invoke("dir", folder, "--model", tiny_onnx, "--threshold", 0, "--fail-on-fake", "-q", expect=1)


def test_every_image_format_gets_a_row(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, fmt in (("a.avif", "AVIF"), ("b.jp2", "JPEG2000"), ("c.qoi", "QOI"), ("d.tga", "TGA"),
                      ("e.ico", "ICO"), ("f.ppm", "PPM")):
        (folder / name).write_bytes(encode(fmt))
    (folder / "avif-named.jpg").write_bytes(encode("AVIF"))
    (folder / "g.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + os.urandom(200))
    (folder / "h.jxl").write_bytes(b"\xff\x0a" + os.urandom(200))
    rows = scan_rows(folder, tiny_onnx, tmp_path)
    assert len(rows) == 9
    for name in ("a.avif", "b.jp2", "c.qoi", "d.tga", "e.ico", "f.ppm", "avif-named.jpg"):
        assert rows[name]["status"] == "ok", rows[name]
    assert "unsupported format: HEIF" in rows["g.heic"]["error"]
    assert rows["h.jxl"]["error"] == "unsupported format: JPEG XL"
    # a moderation job can fail on what it could not verify
    invoke("dir", folder, "--model", tiny_onnx, "-q", "--fail-on-error", expect=1)


def test_postscript_is_never_handed_to_ghostscript(tiny_onnx: Path, tmp_path: Path, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError()))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "eps.jpg").write_bytes(encode("EPS"))
    (folder / "pdf.png").write_bytes(b"%PDF-1.4\n" + os.urandom(100))
    rows = scan_rows(folder, tiny_onnx, tmp_path)
    assert rows["eps.jpg"]["error"].startswith("unsupported format: EPS (never decoded")
    assert rows["pdf.png"]["error"].startswith("unsupported format: PDF") and calls == []


def test_unlistable_folder_is_an_error_row(tiny_onnx: Path, tmp_path: Path, monkeypatch):
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (folder / "ok.png").write_bytes(encode("PNG"))
    locked = str(folder / "locked")
    real_scandir, real_listdir = os.scandir, os.listdir

    def deny(path=".", *rest):  # root lists anything: simulate the kernel's refusal
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return (real_scandir if deny.scan else real_listdir)(path, *rest)
    deny.scan = True
    monkeypatch.setattr(os, "scandir", deny)
    monkeypatch.setattr(os, "listdir", lambda p=".": (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if os.fspath(p) == locked else real_listdir(p))
    rows = scan_rows(folder, tiny_onnx, tmp_path)
    assert rows["ok.png"]["status"] == "ok"
    assert rows["locked"]["error"] == "folder could not be listed: Permission denied"


# -- reads outside the tree -------------------------------------------------------------------------------------

def test_links_leaving_the_scanned_folder_are_not_read(tiny_onnx: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.png").write_bytes(encode("PNG"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "own.png").write_bytes(encode("PNG"))
    os.symlink(outside / "secret.png", folder / "escape.png")
    os.symlink(folder / "own.png", folder / "inside-link.png")
    rows = scan_rows(folder, tiny_onnx, tmp_path)
    assert rows["escape.png"]["status"] == "error" and "leaves the scanned folder" in rows["escape.png"]["error"]
    assert rows["escape.png"]["sha256"] is None and rows["escape.png"]["file_size"] is None
    assert rows["inside-link.png"]["status"] == "ok"
    followed = scan_rows(folder, tiny_onnx, tmp_path, "--follow-links")
    assert followed["escape.png"]["status"] == "ok"


def test_fifo_and_device_arguments_never_hang(tiny_onnx: Path, tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", tmp_path / "pipe.png")
    os.symlink("/dev/zero", tmp_path / "zero.png")
    for name, kind in (("pipe.png", "FIFO"), ("zero.png", "character device")):
        report = tmp_path / f"{name}.jsonl"
        invoke("dir", tmp_path / name, "--model", tiny_onnx, "--report", report)
        (row,) = read_rows(report)
        assert row["status"] == "error" and kind in row["error"]


def test_files_over_the_size_limit_are_not_read(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "small.png").write_bytes(encode("PNG", PIXELS[:8, :8]))
    (folder / "large.png").write_bytes(encode("PNG"))
    with open(folder / "sparse.png", "wb") as fh:  # 3 GB on paper, nothing on disk
        fh.truncate(3 << 30)
    limit = len(encode("PNG")) - 1
    rows = scan_rows(folder, tiny_onnx, tmp_path, "--max-file-size", limit)
    assert rows["small.png"]["status"] == "ok"
    assert "more than --max-file-size" in rows["large.png"]["error"]
    assert "3,221,225,472 bytes" in rows["sparse.png"]["error"]


def test_high_bit_depth_images_count_their_decoded_bytes(tmp_path: Path):
    from forensics.images import decode_bytes

    sixteen = encode("PNG", (PIXELS[..., 0].astype(np.uint16) * 257))
    ok = decode_bytes(sixteen, tmp_path / "a.png", max_pixels=72 * 80)
    assert ok.ok and ok.pixels.dtype == np.uint8 and abs(int(ok.pixels[..., 0].astype(int).mean())
                                                         - int(PIXELS[..., 0].mean())) <= 1
    floats = io.BytesIO()
    Image.fromarray(PIXELS[..., 0].astype(np.float32) / 255).save(floats, format="TIFF")
    assert decode_bytes(floats.getvalue(), tmp_path / "f.tif", max_pixels=72 * 80).ok
    # 4 bytes a pixel (float32, grey) is the cap's limit; RGBA float would not fit, nor would more pixels
    refused = decode_bytes(floats.getvalue(), tmp_path / "f.tif", max_pixels=72 * 80 - 1)
    assert "more than --max-pixels" in refused.error


# -- writes -----------------------------------------------------------------------------------------------------

@pytest.fixture
def victim(tmp_path: Path) -> Path:
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    return target


def test_no_write_through_planted_links(tiny_onnx: Path, tmp_path: Path, victim: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode("PNG"))
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "report.csv")
    assert "symbolic link" in invoke("dir", folder, "--model", tiny_onnx, "--report", out / "report.csv",
                                     expect=2).output
    for planted in ("report.json.partial", "triage.html.partial", "triage.html.rows"):
        os.symlink(victim, out / planted)
    cams = out / "cams"
    cams.mkdir()
    sha = __import__("hashlib").sha256(encode("PNG")).hexdigest()
    os.symlink(victim, cams / f"a-{sha[:12]}.png.tmp")
    invoke("dir", folder, "--model", tiny_onnx, "--report", out / "report.json", "--html", out / "triage.html",
           "--cam-dir", cams, "--cam-for", "all")
    assert victim.read_text() == "precious\n"
    assert len(json.loads((out / "report.json").read_text())) == 1 and (cams / f"a-{sha[:12]}.png").is_file()
    assert (out / "triage.html").is_file() and not (out / "triage.html").is_symlink()


def test_overlapping_outputs_are_refused_and_own_outputs_skipped(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = folder / "a.png"
    image.write_bytes(encode("PNG"))
    before = image.read_bytes()
    assert "same file" in invoke("dir", folder, "--model", tiny_onnx, "--report", tmp_path / "x.jsonl", "--html",
                                 tmp_path / "x.jsonl", expect=2).output
    assert "a file the scan reads" in invoke("dir", folder, "--model", tiny_onnx, "--html", image, expect=2).output
    assert image.read_bytes() == before
    for _ in range(2):  # the second run must not score the first run's heatmaps
        rows = scan_rows(folder, tiny_onnx, tmp_path, "--cam-dir", folder / "cams", "--cam-for", "all")
        assert list(rows) == ["a.png"]


def test_a_report_is_written_by_one_scan_at_a_time(tiny_onnx: Path, tmp_path: Path):
    from forensics.outputs import ReportLock

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode("PNG"))
    report = tmp_path / "r.csv"
    with ReportLock(report):
        result = invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report", report, expect=2)
    assert "another gscan is writing" in result.output
    invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report", report)  # free again


# -- resume never mixes rows ------------------------------------------------------------------------------------

def test_resume_reuses_only_rows_of_the_same_model_settings_and_content(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(encode("PNG", np.roll(PIXELS, i, axis=1)))
    report = tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report)
    assert "3 rows reused" in invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume").output
    # another threshold: every row is rescanned and carries the new one
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume", "--threshold", 0.25)
    assert "0 rows reused, 3 scanned (3 earlier rows not reused: 3 another model or other settings)" in result.output
    assert {r["threshold"] for r in read_rows(report)} == {0.25}
    # a file swapped for other content of the same size, its mtime put back: rescanned, new sha256
    target = folder / "1.png"
    st = target.stat()
    swapped = bytearray(target.read_bytes())
    swapped[-20] ^= 1  # inside the IEND-adjacent data: same size
    target.write_bytes(bytes(swapped))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume", "--threshold", 0.25)
    assert "2 rows reused, 1 scanned (1 earlier rows not reused: 1 the file changed)" in result.output
    rows = {Path(r["path"]).name: r for r in read_rows(report)}
    assert rows["1.png"]["sha256"] == __import__("hashlib").sha256(bytes(swapped)).hexdigest()


@pytest.mark.parametrize("content", ["[{\"path\": \"a\"}, {\"pa", "garbage\x00\x01 not a report\n",
                                     "name,size\na.png,3\n"])
def test_a_damaged_report_is_a_clear_error_on_resume(tiny_onnx: Path, tmp_path: Path, content: str):
    (tmp_path / "in").mkdir()
    suffix = ".json" if content.startswith("[") else ".jsonl" if "garbage" in content else ".csv"
    report = tmp_path / f"r{suffix}"
    report.write_text(content)
    result = invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report", report, "--resume", expect=2)
    assert "damaged" in result.output or "not a gscan report" in result.output


# -- injection --------------------------------------------------------------------------------------------------

def test_spreadsheet_formulas_are_neutralised_in_csv_only(tiny_onnx: Path, tmp_path: Path, monkeypatch):
    import csv

    folder = tmp_path / "in"
    folder.mkdir()
    name = "=cmd|' -C calc'!A0.png"
    (folder / name).write_bytes(encode("PNG"))
    monkeypatch.chdir(folder)  # `gscan dir .`: the path cell is the bare name
    invoke("dir", ".", "--model", tiny_onnx, "--report", tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as fh:
        cell = next(csv.DictReader(fh))["path"]
    assert cell == "'" + name  # a text cell to a spreadsheet, never a formula
    assert read_rows(tmp_path / "r.csv")[0]["path"] == name  # read back as written
    invoke("dir", ".", "--model", tiny_onnx, "--report", tmp_path / "r.jsonl")
    assert read_rows(tmp_path / "r.jsonl")[0]["path"] == name  # raw in JSON Lines


def test_terminal_sequences_in_names_are_shown_escaped(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x\x1b]52;c;ZXZpbA==\x07.png").write_bytes(encode("PNG"))
    output = invoke("dir", folder, "--model", tiny_onnx).output
    assert "\x1b]52" not in output and "\\x1b]52" in output


def test_bidi_controls_in_names_are_visible(tiny_onnx: Path, tmp_path: Path):
    from forensics.text import visible

    assert visible("photo-\u202egpj.exe") == "photo-<U+202E>gpj.exe"
    folder = tmp_path / "in\u202eevil"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode("PNG"))
    invoke("dir", folder, "--model", tiny_onnx, "--html", tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    assert "in<U+202E>evil" in page.replace("&lt;", "<").replace("&gt;", ">") and "\u202e" not in page.split(
        '<script id="gscan-data"')[0]


# -- cards and options ------------------------------------------------------------------------------------------

def _with_card(tiny_onnx: Path, out: Path, **changes) -> Path:
    import onnx

    model = onnx.load(str(tiny_onnx))
    for prop in model.metadata_props:
        if prop.key == "gscan_card":
            card = json.loads(prop.value)
            card.update(changes)
            prop.value = json.dumps(card, allow_nan=True)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("changes", [{"threshold": "0.5"}, {"threshold": float("nan")}, {"threshold": 5},
                                     {"threshold": -1}, {"tiling": {"crop": -1, "max_tiles": 4}},
                                     {"tiling": {"crop": 100000, "max_tiles": 4}}, {"mean": [0.5, 0.5]},
                                     {"std": [0.0, 1.0, 1.0]}, {"name": "x" * 1_000_000},
                                     {"companion": "../../../../elsewhere/x"}, {"schema_version": 99},
                                     {"rescore_margin": 2.0}, {"precision": "int8", "rescore_margin": -1}])
def test_hostile_cards_are_refused(tiny_onnx: Path, tmp_path: Path, changes: dict):
    model = _with_card(tiny_onnx, tmp_path / "hostile.onnx", **changes)
    (tmp_path / "in").mkdir()
    result = invoke("dir", tmp_path / "in", "--model", model, expect=2)
    assert "invalid model card" in result.output


def test_a_named_model_must_carry_its_hash(tiny_onnx: Path, tmp_path: Path):
    home = Path(os.environ["GSCAN_MODELS"])
    shutil.copy(tiny_onnx, home / "checked.onnx")
    card = json.loads(tiny_onnx.with_suffix(".json").read_text())
    (tmp_path / "in").mkdir()
    assert "no card checked.json" in invoke("dir", tmp_path / "in", "--model", "checked", expect=2).output
    (home / "checked.json").write_text(json.dumps({**card, "onnx_sha256": ""}))
    assert "names no onnx_sha256" in invoke("dir", tmp_path / "in", "--model", "checked", expect=2).output
    (home / "checked.json").write_text(json.dumps(card))
    invoke("dir", tmp_path / "in", "--model", "checked")
    for path in (home / "checked.onnx", home / "checked.json"):
        path.unlink()


@pytest.mark.parametrize("args", [("--threshold", "nan"), ("--threshold", "inf"), ("--threshold", "1.5"),
                                  ("--workers", "-1"), ("--batch-size", "-1")])
def test_bad_option_values_exit_2(tiny_onnx: Path, tmp_path: Path, args):
    result = invoke("dir", tmp_path, "--model", tiny_onnx, *args, expect=2)
    assert "Traceback" not in result.output and "Invalid value" in result.output


def test_output_paths_that_cannot_be_written_exit_2(tiny_onnx: Path, tmp_path: Path):
    (tmp_path / "in").mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file" in invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--cam-dir", a_file,
                                 expect=2).output
    assert "is a folder" in invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report", tmp_path,
                                   expect=2).output
    assert "is a file, not a folder" in invoke("dir", tmp_path / "in", "--model", tiny_onnx, "--report",
                                               a_file / "r.csv", expect=2).output


def test_json_never_holds_nan(tmp_path: Path):
    from forensics.report import ReportWriter

    with ReportWriter(tmp_path / "r.jsonl") as writer:
        writer.write([{"path": "a", "status": "ok", "score": float("nan"), "cam_max": float("inf")}])
    text = (tmp_path / "r.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text)["score"] is None


# -- names the system chokes on ---------------------------------------------------------------------------------

def test_a_path_too_long_for_the_system_is_a_row_not_a_lost_scan(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode("PNG"))
    here = os.getcwd()
    try:  # build a tree deeper than PATH_MAX (4096 bytes) one relative step at a time
        os.chdir(folder)
        for _ in range(18):
            os.mkdir("d" * 240)
            os.chdir("d" * 240)
        with open("deep.png", "wb") as fh:
            fh.write(encode("PNG"))
    finally:
        os.chdir(here)
    rows = scan_rows(folder, tiny_onnx, tmp_path)
    assert rows["a.png"]["status"] == "ok"
    deep = [r for name, r in rows.items() if name != "a.png"]
    assert len(deep) == 1 and deep[0]["status"] == "error"
    assert "too long" in deep[0]["error"].lower()


def test_an_undecodable_folder_name_still_gets_its_page(tiny_onnx: Path, tmp_path: Path):
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/in-\xe9t\xe9"))
    folder.mkdir()
    (folder / "a.png").write_bytes(encode("PNG"))
    invoke("dir", folder, "--model", tiny_onnx, "--html", tmp_path / "t.html", "--report", tmp_path / "r.jsonl")
    assert "in-\\xe9t\\xe9" in (tmp_path / "t.html").read_text() and len(read_rows(tmp_path / "r.jsonl")) == 1
