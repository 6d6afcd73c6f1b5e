"""Decoding on worker processes (`--decode processes`): the same rows as threads, bad files as error rows,
reused rows in place, and a scan that survives a dead worker."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from forensics.report import read_rows
from forensics.tiling import Preprocessing
from forensics.synthetic import natural_image, save

VOLATILE = {"scanned_at", "row_digest"}  # the digest covers the time


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Images of several sizes (some smaller than a tile), a corrupt file and an empty one."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(4)
    for i, (h, w) in enumerate([(40, 50), (64, 64), (130, 97), (200, 260), (96, 33)] * 4):
        save(natural_image(rng, h, w), root / f"img{i:03d}.{'png' if i % 2 else 'jpg'}",
             "PNG" if i % 2 else "JPEG", **({} if i % 2 else {"quality": 90}))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.jpg").write_bytes(b"")
    return root


def stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_processes_give_the_same_rows_as_threads(mixed_folder: Path, tiny_onnx: Path, tmp_path: Path):
    reports = {}
    for mode in ("threads", "processes"):
        reports[mode] = tmp_path / f"{mode}.csv"
        invoke("dir", mixed_folder, "--model", tiny_onnx, "--report", reports[mode], "--decode", mode,
               "--workers", 2, "--batch-size", 8, "-q")
    threads, processes = read_rows(reports["threads"]), read_rows(reports["processes"])
    assert len(processes) == len(list(mixed_folder.iterdir())) == 22
    assert stable(processes) == stable(threads)
    errors = {Path(r["path"]).name: r["error"] for r in processes if r["status"] == "error"}
    assert set(errors) == {"corrupt.png", "empty.jpg"} and "empty" in errors["empty.jpg"]


def test_processes_keep_reused_rows_in_place(mixed_folder: Path, tiny_onnx: Path, tmp_path: Path):
    report = tmp_path / "scan.jsonl"
    invoke("dir", mixed_folder, "--model", tiny_onnx, "--report", report, "-q")
    first = read_rows(report)
    invoke("dir", mixed_folder, "--model", tiny_onnx, "--report", report, "--resume", "--decode", "processes",
           "-q")
    assert stable(read_rows(report)) == stable(first)


def test_processes_refuse_what_needs_pixels(mixed_folder: Path, tiny_onnx: Path, tmp_path: Path):
    result = invoke("dir", mixed_folder, "--model", tiny_onnx, "--decode", "processes", "--cam-dir",
                    tmp_path / "cams", expect=2)
    assert "--decode threads" in result.output
    typo = invoke("dir", mixed_folder, "--model", tiny_onnx, "--decode", "fibres", expect=2).output
    assert "Invalid value" in typo and "fibres" in typo  # a choice: click names the values
    assert "--engine local" in invoke("dir", mixed_folder, "--model", tiny_onnx, "--decode", "processes",
                                      "--engine", "ray", expect=2).output


def test_a_dead_worker_costs_no_rows(mixed_folder: Path, tiny_onnx: Path):
    """A worker killed while holding a chunk: its files are retried one by one on a fresh pool and scored."""
    from concurrent.futures.process import BrokenProcessPool

    from forensics.decode_pool import ProcessDecoder, TileSpec
    from forensics.images import find_images
    from forensics.runtime import Detector

    card = Detector(tiny_onnx, device="cpu").card
    files = sorted(find_images(mixed_folder))
    with ProcessDecoder(2, TileSpec(Preprocessing.from_card(card), 10**8), chunk=4) as decoder:
        images = [f for f in files if f.name.startswith("img")][:4]
        killed = decoder.pool.submit(os._exit, 1)
        with pytest.raises(BrokenProcessPool):
            killed.result()
        results = decoder._results([(path, slot) for slot, path in enumerate(images)], killed)
        assert [d.path for d, _, _ in results] == images and all(d.ok and n > 0 for d, n, _ in results)
        rows = list(decoder.decode(files))  # and the pool the next chunk goes to is a fresh one
    assert [d.path for d, _, _, _ in rows] == files
    assert sum(d.ok for d, _, _, _ in rows) == len(files) - 2


def test_workers_that_keep_dying_stop_the_scan_with_a_clear_error(tiny_onnx: Path):
    """One bad file kills one worker; workers dying on file after file cannot run at all: say so, not retry forever."""
    from forensics.decode_pool import MAX_DEATHS_IN_A_ROW, ProcessDecoder, TileSpec
    from forensics.errors import GscanError
    from forensics.runtime import Detector

    card = Detector(tiny_onnx, device="cpu").card
    with ProcessDecoder(1, TileSpec(Preprocessing.from_card(card), 10**8)) as decoder:
        for _ in range(MAX_DEATHS_IN_A_ROW - 1):
            decoder._count_death()
        with pytest.raises(GscanError, match="--decode threads"):
            decoder._count_death()


def test_models_that_differ_only_in_adaptive_tiling_share_tiles():
    from dataclasses import replace

    from forensics.card import TilingPolicy

    base = Preprocessing(TilingPolicy(crop=64, max_tiles=9), (0.5,) * 3, (0.5,) * 3)
    adaptive = replace(base, policy=replace(base.policy, first_tiles=4, margin=6.0))
    assert adaptive.cuts_like(base) and base.cuts_like(adaptive) and adaptive != base
    assert not replace(base, policy=replace(base.policy, max_tiles=4)).cuts_like(base)
    assert not replace(base, mean=(0.4, 0.5, 0.5)).cuts_like(base)


def test_the_shipped_detector_and_its_companion_scan_on_processes(tmp_path: Path):
    """The shipped card tiles adaptively and its attribution companion does not: on processes, the same rows,
    generators included, as on threads."""
    samples = Path(__file__).resolve().parents[1] / "samples"
    rows = {}
    for decode in ("threads", "processes"):
        invoke("dir", samples, "--decode", decode, "--report", tmp_path / f"{decode}.jsonl", "--device", "cpu")
        rows[decode] = stable(read_rows(tmp_path / f"{decode}.jsonl"))
    assert rows["threads"] == rows["processes"]
    assert any(r["generator"] for r in rows["processes"]) and any(r["tiles"] == 4 for r in rows["processes"])
