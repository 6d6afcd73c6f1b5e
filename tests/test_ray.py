"""The Ray engine gives the local engine's rows; its decode and inference steps are tested without Ray too."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from forensics.engines.ray import ScanActor, decode_batch
from forensics.synthetic import add_trace, natural_image, save

REPO = Path(__file__).resolve().parents[1]
VOLATILE = {"scanned_at", "row_digest"}  # the digest covers the time


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rayscan")
    rng = np.random.default_rng(41)
    for i in range(50):
        px = natural_image(rng, int(rng.integers(40, 150)), int(rng.integers(40, 150)))
        save(add_trace(px) if i % 2 else px, root / f"img{i:02d}.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(fh)]


def test_decode_and_actor_steps_match_the_local_engine(folder: Path, tiny_onnx: Path, tmp_path: Path):
    from forensics.images import DEFAULT_MAX_PIXELS, find_images
    from forensics.runtime import Detector

    paths = sorted(find_images(folder))
    detector = Detector(tiny_onnx, device="cpu")
    card = detector.card
    batch = decode_batch({"path": np.array([os.fsencode(p) for p in paths], dtype=object)}, detector.preprocessing,
                         DEFAULT_MAX_PIXELS, {"root": folder})
    assert batch["tiles"].dtype == np.uint8 and batch["tiles"].shape[1:] == (card.tiling.max_tiles, 64, 64, 3)
    rows = ScanActor(str(tiny_onnx), "cpu", card.threshold, "")(batch)["row"]
    invoke("dir", folder, "--model", tiny_onnx, "--report", tmp_path / "local.csv")
    local = {r["path"]: r for r in read_csv(tmp_path / "local.csv")}
    assert len(rows) == len(local) == 51
    for row in rows:
        expected = local[row["path"]]
        assert row["status"] == expected["status"] and (row["error"] or "") == expected["error"]
        if row["status"] == "ok":
            assert abs(row["score"] - float(expected["score"])) < 1e-5 and row["label"] == expected["label"]
            assert str(row["tiles"]) == expected["tiles"] and row["sha256"] == expected["sha256"]


def test_engine_ray_without_the_extra_is_a_clear_error(folder: Path, tiny_onnx: Path, monkeypatch):
    if importlib.util.find_spec("ray") is not None:
        import builtins

        real_import = builtins.__import__

        def no_ray(name, *args, **kwargs):
            if name == "ray" or name.startswith("ray."):
                raise ImportError("no ray")
            return real_import(name, *args, **kwargs)
        monkeypatch.setattr(builtins, "__import__", no_ray)
    result = invoke("dir", folder, "--model", tiny_onnx, "--engine", "ray", expect=2)
    assert "[ray]'" in result.output and "pip install" in result.output


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")
def test_ray_engine_rows_equal_local_engine(folder: Path, tiny_onnx: Path, tmp_path: Path):
    invoke("dir", folder, "--model", tiny_onnx, "--report", tmp_path / "local.csv")
    code = ("import ray\n"
            "ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)\n"
            "from cli.main import app\n"
            f"app(['dir', {str(folder)!r}, '--model', {str(tiny_onnx)!r}, '--engine', 'ray', '-q', "
            f"'--report', {str(tmp_path / 'ray.csv')!r}])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    ray_rows, local_rows = read_csv(tmp_path / "ray.csv"), read_csv(tmp_path / "local.csv")
    assert len(ray_rows) == 51
    for a, b in zip(ray_rows, local_rows):
        assert a["path"] == b["path"] and a["status"] == b["status"] and a["error"] == b["error"]
        if a["status"] == "ok":
            assert abs(float(a["score"]) - float(b["score"])) < 1e-5
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}
