"""Hostile input, round three: what the model says is checked, reports are never lost or trusted blindly, and a
crash is never mistaken for a verdict. Each test builds its input and checks rows, exit codes and what is left on
disk."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.report import read_rows
from forensics.rows import NON_FINITE
from forensics.synthetic import natural_image

REPO = Path(__file__).resolve().parents[1]


def images(folder: Path, n: int = 4, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(natural_image(np.random.default_rng(i), size, size)).save(folder / f"{i}.png")
    return folder


def rows_of(report: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in read_rows(report)}


# -- what the model says -------------------------------------------------------------------------------------------

def crafted_model(tmp_path: Path, tiny_onnx: Path, name: str, tail: str, card_changes: dict | None = None) -> Path:
    """An ONNX model with the tiny model's card whose logits come from the input by a few plain ops: per-channel
    means (N, 3), the first two of them (N, 2), then `tail` breaks the contract in one way."""
    import onnx
    from onnx import TensorProto, helper

    card = json.loads(tiny_onnx.with_suffix(".json").read_text())
    card.pop("onnx_sha256", None)
    card.update({"name": name, "heatmap": "", **(card_changes or {})})
    nodes = [helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0),
             helper.make_node("Slice", ["means", "zero", "two", "one"], ["pair"])]
    consts = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("zero", 0), ("two", 2), ("one", 1))]
    consts.append(helper.make_tensor("bad", TensorProto.FLOAT, [1], [float("nan") if tail == "nan" else
                                                                     float("inf")]))
    tails = {"nan": [helper.make_node("Mul", ["pair", "bad"], ["logits"])],
             "inf": [helper.make_node("Add", ["pair", "bad"], ["logits"])],
             "one_row": [helper.make_node("ReduceMean", ["pair"], ["logits"], axes=[0], keepdims=1)],
             "three_columns": [helper.make_node("Identity", ["means"], ["logits"])],
             "one_dimensional": [helper.make_node("ReduceMean", ["pair"], ["logits"], axes=[1], keepdims=0)],
             "sound": [helper.make_node("Identity", ["pair"], ["logits"])]}
    graph = helper.make_graph(nodes + tails[tail], name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, {"gscan_card": json.dumps(card)})
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("tail", ["nan", "inf"])
def test_non_finite_logits_are_error_rows_never_real(tiny_onnx: Path, tmp_path: Path, tail: str):
    model = crafted_model(tmp_path, tiny_onnx, f"broken-{tail}", tail)
    folder, report = images(tmp_path / "in"), tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", model, "--report", report, "--fail-on-fake", "--fail-on-error", "-q", expect=1)
    rows = read_rows(report)
    assert len(rows) == 4 and all(r["status"] == "error" and r["error"] == NON_FINITE and r["label"] is None
                                  for r in rows)
    # nothing scored fake either, but nothing was scored: a moderation job fails closed unless told otherwise
    invoke("dir", folder, "--model", model, "--fail-on-fake", "-q", expect=1)
    invoke("dir", folder, "--model", model, "--fail-on-fake", "--allow-unscored", "-q", expect=0)


@pytest.mark.parametrize("tail", ["one_row", "three_columns", "one_dimensional"])
def test_a_model_answering_in_the_wrong_shape_is_refused_before_any_row(tiny_onnx: Path, tmp_path: Path, tail):
    model = crafted_model(tmp_path, tiny_onnx, f"shape-{tail}", tail)
    report = tmp_path / "r.jsonl"
    result = invoke("dir", images(tmp_path / "in"), "--model", model, "--report", report, expect=2)
    assert "the model is refused" in result.output and not report.exists()


def test_heatmap_outputs_the_card_promises_must_exist(tiny_onnx: Path, tmp_path: Path):
    folder = images(tmp_path / "in")
    missing = crafted_model(tmp_path, tiny_onnx, "no-maps", "sound", {"heatmap": "features_cam"})
    assert "does not have" in invoke("dir", folder, "--model", missing, expect=2).output
    plain = crafted_model(tmp_path, tiny_onnx, "plain", "sound")
    invoke("dir", folder, "--model", plain, "-q")  # a sound model without maps scans
    result = invoke("dir", folder, "--model", plain, "--cam-dir", tmp_path / "cams", expect=2)
    assert "names no heatmap output" in result.output


def test_an_internal_error_exits_3_with_one_line_and_the_trace_kept(tiny_onnx: Path, tmp_path: Path, monkeypatch):
    import forensics.session

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(forensics.session, "scan_to_report", boom)
    result = invoke("dir", images(tmp_path / "in"), "--model", tiny_onnx, "--fail-on-fake", expect=3)
    line = result.output.strip()
    assert line.startswith("internal error: RuntimeError: simulated bug") and "\n" not in line
    trace = Path(line.split("the full trace is in ")[1].rstrip(")"))
    assert "simulated bug" in trace.read_text() and "Traceback" in trace.read_text()


# -- reports are never lost, never trusted blindly -------------------------------------------------------------------

def rewrite(report: Path, change) -> None:
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    report.write_text("".join(json.dumps(change(r)) + "\n" for r in lines))


@pytest.mark.parametrize("edit", [
    {"label": "real", "score": 0.01},  # a fake turned real
    {"status": "weird"},
    {"tiles": "many"},
])
def test_resume_rescans_hand_edited_rows(tiny_onnx: Path, tmp_path: Path, edit: dict):
    folder, report = images(tmp_path / "in"), tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--threshold", 0, "-q")
    original = rows_of(report)
    rewrite(report, lambda r: {**r, **edit} if r["path"].endswith("0.png") else r)
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--threshold", 0, "--resume",
                    "--fail-on-fake", expect=1)
    assert "3 rows reused, 1 scanned (1 earlier rows not reused: 1 its digest does not verify" in result.output
    assert rows_of(report)["0.png"]["label"] == "fake" == original["0.png"]["label"]


def test_a_consistent_forgery_fails_its_digest_and_gscan_verify_lists_it(tiny_onnx: Path, tmp_path: Path):
    folder, report = images(tmp_path / "in"), tmp_path / "r.csv"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--threshold", 0, "-q")
    assert "4 rows, 4 intact, 0 changed" in invoke("verify", report).output
    text = report.read_text().splitlines()
    header = text[0].split(",")
    cells = text[2].split(",")
    cells[header.index("label")], cells[header.index("score")] = "real", "0.0"  # label consistent with score...
    cells[header.index("threshold")] = "0.5"  # ...and threshold: only the digest tells
    report.write_text("\n".join([text[0], text[1], ",".join(cells), *text[3:]]) + "\n")
    result = invoke("verify", report, expect=4)
    assert "changed: " in result.output and "1.png" in result.output and "4 rows, 3 intact, 1 changed" in result.output
    resumed = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--threshold", 0, "--resume", "-q",
                     "--fail-on-fake", expect=1)
    assert rows_of(report)["1.png"]["label"] == "fake" and resumed.exit_code == 1
    assert "4 rows, 4 intact" in invoke("verify", report).output


def test_resume_keeps_rows_of_files_no_longer_found(tiny_onnx: Path, tmp_path: Path):
    folder, report = images(tmp_path / "in"), tmp_path / "r.jsonl"
    images(folder / "sub", 2)
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "-q")
    assert len(read_rows(report)) == 6
    # resuming on a subfolder, or on a folder emptied (an unmounted disk): every earlier row is kept
    invoke("dir", folder / "sub", "--model", tiny_onnx, "--report", report, "--resume", "-q")
    assert len(read_rows(report)) == 6
    for f in folder.rglob("*.png"):
        f.unlink()
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume", "-q")
    assert len(read_rows(report)) == 6 and "6 intact" in invoke("verify", report).output


def test_resume_needs_the_heatmap_a_row_points_at(tiny_onnx: Path, tmp_path: Path):
    folder, report, cams = images(tmp_path / "in"), tmp_path / "r.jsonl", tmp_path / "cams"
    args = ("dir", folder, "--model", tiny_onnx, "--report", report, "--cam-dir", cams, "--cam-for", "all")
    invoke(*args)
    assert "4 rows reused" in invoke(*args, "--resume").output
    next(cams.glob("*.png")).unlink()  # a deleted heatmap
    assert "1 its heatmap is missing" in invoke(*args, "--resume").output
    other = tmp_path / "cams2"  # another heatmap folder: rows pointing at the old one are not reused
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--cam-dir", other, "--cam-for", "all",
                    "--resume")
    assert "0 rows reused" in result.output
    assert all(Path(r["cam_path"]).parent == other and Path(r["cam_path"]).is_file() for r in read_rows(report))


def test_a_killed_resumes_partial_rows_are_reused(tiny_onnx: Path, tmp_path: Path):
    folder, report = images(tmp_path / "in", 6), tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "-q")
    lines = report.read_text().splitlines(keepends=True)
    report.write_text("".join(lines[:2]))  # the report before the killed resume
    (tmp_path / "r.jsonl.partial").write_text("".join(lines[2:5]) + lines[5][:20])  # what the kill left
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume")
    assert "5 rows reused, 1 scanned" in result.output and len(read_rows(report)) == 6
    assert not (tmp_path / "r.jsonl.partial").exists()


def test_resume_html_from_a_csv_report_gets_typed_rows(tiny_onnx: Path, tmp_path: Path):
    folder, report, page = images(tmp_path / "in"), tmp_path / "r.csv", tmp_path / "p.html"
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "-q")
    row = read_rows(report)[0]
    assert isinstance(row["score"], float) and isinstance(row["tiles"], int) and row["generator"] is None
    invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--resume", "--html", page, "-q")
    data = json.loads(page.read_text().split('<script id="gscan-data" type="application/json">')[1]
                      .split("</script>")[0])
    assert all(isinstance(r["score"], float) for r in data["rows"])


def test_outputs_that_are_not_regular_files_are_refused(tiny_onnx: Path, tmp_path: Path):
    import socket

    folder = images(tmp_path / "in", 1)
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.jsonl"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        assert "not a regular file" in invoke("dir", folder, "--model", tiny_onnx, "--html", fifo, expect=2).output
        assert "not a regular file" in invoke("dir", folder, "--model", tiny_onnx, "--report", sock_path,
                                              expect=2).output
    finally:
        sock.close()
    assert fifo.is_fifo()


def test_disk_full_while_writing_the_report_is_a_clear_exit(tiny_onnx: Path, tmp_path: Path):
    import resource

    folder, report = images(tmp_path / "in", 40), tmp_path / "r.jsonl"

    def small_files():  # a disk that fills after 8 KB of report: writes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    out = subprocess.run([sys.executable, "-m", "cli", "dir", str(folder), "--model", str(tiny_onnx), "--report",
                          str(report), "-q", "--batch-size", "4"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, preexec_fn=small_files, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2, out.stderr
    assert "cannot write the report" in out.stderr and "Traceback" not in out.stderr
    kept = len(read_rows(report))
    assert 0 < kept < 40 and f"the {kept} rows that reached it stay in {report}" in " ".join(out.stderr.split())
    assert not (tmp_path / "r.jsonl.lock").exists()


def test_cam_dir_that_cannot_be_made_or_is_the_root_exits_2_before_scanning(tiny_onnx: Path, tmp_path: Path):
    folder, report = images(tmp_path / "in"), tmp_path / "r.jsonl"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--cam-dir", blocker / "cams", expect=2)
    assert "cannot be created" in result.output and not report.exists()
    assert "scanned folder itself" in invoke("dir", folder, "--model", tiny_onnx, "--cam-dir", folder,
                                             expect=2).output
    (tmp_path / "link").symlink_to(folder)
    assert "scanned folder itself" in invoke("dir", folder, "--model", tiny_onnx, "--cam-dir", tmp_path / "link",
                                             expect=2).output
    (folder / "heat").mkdir()
    (tmp_path / "sublink").symlink_to(folder / "heat", target_is_directory=True)
    args = ("dir", folder, "--model", tiny_onnx, "--report", report, "--cam-dir", tmp_path / "sublink", "--cam-for",
            "all")
    invoke(*args)
    invoke(*args, "--overwrite")  # heatmaps written through a link into the scanned folder are not scanned
    assert len(read_rows(report)) == 4


def test_no_litter_after_scans_and_interruptions(tiny_onnx: Path, tmp_path: Path):
    from forensics.options import ScanOptions
    from forensics.session import scan_to_report

    folder, work = images(tmp_path / "in"), tmp_path / "out"
    work.mkdir()
    for name in ("a.csv", "b.jsonl", "c.json"):
        invoke("dir", folder, "--model", tiny_onnx, "--report", work / name, "--html", work / f"{name}.html", "-q")

    def interrupt(rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan_to_report(folder, [str(tiny_onnx)], work / "d.jsonl", options=ScanOptions(), html=work / "d.html",
                       on_rows=interrupt)
    # each finished report has its seal; the interrupted one has neither a seal nor a seal's spool
    assert sorted(p.name for p in work.iterdir()) == ["a.csv", "a.csv.html", "a.csv.seal", "b.jsonl", "b.jsonl.html",
                                                     "b.jsonl.seal", "c.json", "c.json.html", "c.json.seal", "d.jsonl"]


# -- resources -------------------------------------------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    rows = zlib.compressobj(9)
    idat = b"".join(rows.compress(b"\x00" * (width + 1)) for _ in range(64)) + rows.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_an_icon_holding_a_huge_png_is_refused_before_decoding(tiny_onnx: Path, tmp_path: Path):
    png = png_header_only(30000, 30000)  # 900 megapixels behind a small file
    icon = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "huge.ico").write_bytes(icon)
    started = time.perf_counter()
    rows = rows_of_scan(folder, tiny_onnx, tmp_path)
    assert rows["huge.ico"]["status"] == "error" and "more than --max-pixels" in rows["huge.ico"]["error"]
    assert time.perf_counter() - started < 30
    code = ("from forensics.images import decode_file\n"  # VmHWM: ru_maxrss would count the forking parent's pages
            f"d = decode_file({str(folder / 'huge.ico')!r})\n"
            "print(d.error and next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert 0 < int(out.stdout.strip()) < 300 * 1024, out  # peak KB: the 3.6 GB decode never happens


def rows_of_scan(folder: Path, model: Path, tmp_path: Path, *extra) -> dict[str, dict]:
    report = tmp_path / "scan.jsonl"
    invoke("dir", folder, "--model", model, "--report", report, "-q", *extra)
    return rows_of(report)


def test_cards_cannot_ask_for_huge_crops_and_batches_are_bounded_by_bytes(tiny_onnx: Path, tmp_path: Path):
    from forensics.card import validate_card
    from forensics.engines.local import MAX_BATCH_BYTES, bounded_batch

    card = json.loads(tiny_onnx.with_suffix(".json").read_text())
    assert any("crop 8-1024" in p for p in validate_card({**card, "tiling": {**card["tiling"], "crop": 4096}}))

    class Big:
        class card:
            class tiling:
                crop, max_tiles = 1024, 9

    assert bounded_batch(32, Big) * 3 * 1024 * 1024 * 4 <= MAX_BATCH_BYTES and bounded_batch(32, Big) >= 1


def remove_chain(top: Path) -> None:
    """Remove a one-folder-per-level tree leaf first, one level at a time: shutil.rmtree (and pytest's cleanup of
    old temporary folders) recurses, and fails on a tree this deep."""
    chain = [top]
    while True:
        subfolders = [p for p in chain[-1].iterdir() if p.is_dir()]
        for f in chain[-1].iterdir():
            if not f.is_dir():
                f.unlink()
        if not subfolders:
            break
        chain.append(subfolders[0])
    for folder in reversed(chain):
        folder.rmdir()


def test_a_deep_tree_is_walked(tiny_onnx: Path, tmp_path: Path):
    deep = tmp_path / "deep"
    leaf = deep
    for _ in range(980):  # os.makedirs recurses too: one level at a time
        leaf = leaf / "d"
        leaf.mkdir(parents=leaf.parent == deep)
    try:
        Image.fromarray(natural_image(np.random.default_rng(0), 40, 40)).save(leaf / "x.png")
        from forensics.images import find_images

        assert [p.name for p in find_images(deep)] == ["x.png"]
    finally:
        remove_chain(deep)
    assert not deep.exists()


def test_an_unreadable_model_folder_is_skipped_with_a_warning(tiny_onnx: Path, tmp_path: Path, monkeypatch):
    """A container whose HOME belongs to another user: listing the user model folder is refused. (Built by
    refusing the listing, since a test run as root can read any folder.)"""
    from forensics.runtime import user_models_dir

    refused, listdir = str(user_models_dir()), os.listdir

    def no_access(path="."):
        if os.fspath(path) == refused:
            raise PermissionError(13, "Permission denied", refused)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", no_access)
    result = invoke("dir", images(tmp_path / "in", 1), "--model", tiny_onnx, "--report", tmp_path / "r.jsonl")
    assert "warning: model folder" in result.output and "skipped: Permission denied" in result.output
    assert len(read_rows(tmp_path / "r.jsonl")) == 1
    assert "gscan-binary-effnetlite0" in invoke("models").output  # the shipped models are still found


def test_decode_workers_die_with_a_killed_scan(tiny_onnx: Path, tmp_path: Path):
    folder = images(tmp_path / "in", 400, 96)
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "dir", str(folder), "--model", str(tiny_onnx), "--report",
                             str(tmp_path / "r.jsonl"), "--decode", "processes", "--workers", "2", "-q"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 60
    while time.time() < deadline and not _children(proc.pid):
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert workers, "the scan should have started its decode processes"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)
    while time.time() < deadline and (set(os.listdir("/dev/shm")) - before if before else set()):
        time.sleep(0.2)
    assert not (set(os.listdir("/dev/shm")) - before if os.path.isdir("/dev/shm") else set())


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_card_names_with_terminal_sequences_are_refused(tiny_onnx: Path, tmp_path: Path):
    model = crafted_model(tmp_path, tiny_onnx, "evil", "sound", {"name": "evil\x1b]52;c;ZXZpbA==\x07"})
    result = invoke("dir", images(tmp_path / "in", 1), "--model", model, expect=2)
    assert "\x1b" not in result.output and "name must be" in result.output


def test_outputs_never_imports_report():
    """report looks down to outputs (link-safe writes, report names); outputs never looks back up: no circle."""
    import ast

    tree = ast.parse((REPO / "forensics" / "outputs.py").read_text())
    assert "report" not in {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_a_broken_install_exits_3_not_1():
    """A module missing from an install fails at import, before the CLI runs: still one line and exit 3."""
    code = "import sys\nsys.modules['forensics.images'] = None\nsys.argv = ['gscan', '-V']\nfrom cli.entry import run\nrun()"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 3 and out.stderr.startswith("internal error: gscan could not start")
    assert "Traceback" not in out.stderr
