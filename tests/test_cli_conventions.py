"""The CLI behaves like the tools people already use: choices, -V, --report -, models --json, pipes, user models."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from forensics import __version__
from forensics.report import COLUMNS
from forensics.synthetic import natural_image, save

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convention-scan")
    rng = np.random.default_rng(11)
    for i in range(6):
        save(natural_image(rng, 64 + 8 * i, 72), root / f"img{i}.png")
    (root / "notes.txt").write_text("not an image\n")
    return root


def test_short_version_flag():
    assert invoke("-V").output.strip() == f"gscan {__version__}"


def test_a_typo_in_a_choice_is_a_usage_error(folder: Path, tiny_onnx: Path):
    for option, typo in (("--device", "gpu"), ("--engine", "spark"), ("--cam-for", "fakes")):
        result = invoke("dir", folder, "--model", tiny_onnx, option, typo, expect=2)
        assert "Invalid value" in result.output and typo in result.output
    assert "auto|cpu|cuda" in invoke("dir", "-h").output


def test_report_to_stdout_is_json_lines(folder: Path, tiny_onnx: Path):
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", "-")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    images = sorted(p.name for p in folder.iterdir() if p.suffix == ".png")
    assert sorted(Path(r["path"]).name for r in rows) == images  # notes.txt is not an image by content or name
    assert all(list(r) == COLUMNS for r in rows) and all(r["status"] == "ok" for r in rows)
    assert "gscan summary" in result.stderr and "gscan summary" not in result.stdout
    assert "--report FILE" in invoke("dir", folder, "--model", tiny_onnx, "--report", "-", "--resume",
                                     expect=2).output


def test_models_json_lists_cards():
    from forensics.runtime import list_models

    records = json.loads(invoke("models", "--json").stdout)
    assert [r["path"] for r in records] == [str(m.path) for m in list_models()]
    shipped = [r for r in records if r["shipped"]]
    assert {r["name"] for r in shipped} >= {"gscan-binary-effnetlite0"} and all(r["card"]["onnx_sha256"] for r in shipped)


def test_export_by_name_goes_to_the_user_model_folder(tiny_run: Path):
    invoke("export", tiny_run, "--out", "my-detector")
    home = Path(os.environ["GSCAN_MODELS"])
    assert (home / "my-detector.onnx").is_file() and (home / "my-detector.json").is_file()
    listing = invoke("models").output
    assert "my-detector" in listing and "yours" in listing
    mine = [r for r in json.loads(invoke("models", "--json").stdout) if r["path"] == str(home / "my-detector.onnx")]
    assert len(mine) == 1 and mine[0]["shipped"] is False
    image = home.parent / "one.png"
    save(natural_image(np.random.default_rng(3), 64, 64), image)
    rows = [json.loads(x) for x in invoke("dir", image, "--model", "my-detector", "--report", "-").stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert "model name or a path ending in .onnx" in invoke("export", tiny_run, "--out", "a/b", expect=2).output


def test_empty_folder_warns_and_exits_0(tmp_path: Path, tiny_onnx: Path):
    result = invoke("dir", tmp_path, "--model", tiny_onnx)
    assert "no files found" in result.stderr


def test_broken_pipe_exits_quietly_and_not_1(folder: Path, tiny_onnx: Path):
    """`gscan dir x --fail-on-fake | head`: the reader left; never the code that means "fake found"."""
    code = ("import sys\nfrom cli.main import run\n"
            f"sys.argv = ['gscan', 'dir', {str(folder)!r}, '--model', {str(tiny_onnx)!r}, '--threshold', '0', "
            "'--fail-on-fake', '--report', '-']\nrun()\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first row
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr


def test_resumed_scan_reports_no_speed_for_reused_rows():
    from forensics.rows import ScanSummary

    summary = ScanSummary(files=500, reused=500, seconds=0.05)
    assert summary.images_per_second == 0.0
    assert ScanSummary(files=500, reused=400, seconds=10.0).images_per_second == 10.0


def test_train_refuses_an_existing_run_folder(binary_data, tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    result = invoke("train", binary_data["train"], "--out", tmp_path / "run", "--arch", "test_resnet", expect=2)
    assert "--force" in result.output and (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_checkpoint_is_readable_like_the_other_files(tiny_run: Path):
    card_mode = stat.S_IMODE((tiny_run / "card.json").stat().st_mode)
    assert stat.S_IMODE((tiny_run / "model.safetensors").stat().st_mode) == card_mode


def test_saturated_threshold_is_warned_about():
    from forensics.card import ModelCard, TilingPolicy
    from forensics.training.train import TrainConfig, threshold_warnings

    card = ModelCard(name="t", task="binary", arch="test_resnet", classes=["real", "fake"],
                     tiling=TilingPolicy(crop=64, max_tiles=1), mean=(0.5,) * 3, std=(0.5,) * 3)
    card.threshold, card.metrics["val"] = 1.0, {"fpr": 0.10}
    warnings = threshold_warnings(card, TrainConfig(data_dir=Path("d"), out=Path("o"), target_fpr=0.01))
    assert len(warnings) == 2 and "saturated" in warnings[0] and "10.0%" in warnings[1]
    card.threshold, card.metrics["val"] = 0.8, {"fpr": 0.01}
    assert threshold_warnings(card, TrainConfig(data_dir=Path("d"), out=Path("o"))) == []


def test_training_commands_name_the_extra_they_need(binary_data, tmp_path: Path, monkeypatch):
    import forensics.extras as extras

    real = extras.import_module

    def without_torch(name):
        if name == "torch":
            raise ImportError("no torch")
        return real(name)
    monkeypatch.setattr(extras, "import_module", without_torch)
    for args in (("train", binary_data["train"], "--out", tmp_path / "r"), ("synth", binary_data["train"], "--out",
                                                                              tmp_path / "s")):
        result = invoke(*args, expect=2)
        assert "[train]'" in result.output and "pip install" in result.output and "torch" in result.output


def test_ctrl_c_says_what_was_written_and_how_to_continue(folder: Path, tiny_onnx: Path, tmp_path: Path,
                                                          monkeypatch):
    from forensics.engines.local import LocalEngine

    real = LocalEngine.scan

    def interrupted(self, paths, sink, reuse=None):
        def stop_after_first_batch(rows):
            sink(rows)
            raise KeyboardInterrupt
        return real(self, paths, stop_after_first_batch, reuse)
    monkeypatch.setattr(LocalEngine, "scan", interrupted)
    report = tmp_path / "r.csv"
    result = invoke("dir", folder, "--model", tiny_onnx, "--report", report, "--batch-size", 2, expect=130)
    assert "interrupted after" in result.stderr and "--resume" in result.stderr
    kept = report.read_text().splitlines()[1:]
    assert 1 <= len(kept) < 6  # the valid prefix stays


def test_models_json_is_shareable_and_full_on_request():
    def absolute_strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in absolute_strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in absolute_strings(v)]
        return [value] if isinstance(value, str) and value.startswith("/") else []

    short = json.loads(invoke("models", "--json").stdout)
    full = json.loads(invoke("models", "--json", "--full").stdout)
    assert [r["name"] for r in short] == [r["name"] for r in full]
    for record in short:
        assert absolute_strings(record["card"]) == []  # no path of the machine the model was trained on
    shipped = {r["name"]: r for r in full}["gscan-attribution-effnetlite0"]["card"]
    brief = {r["name"]: r for r in short}["gscan-attribution-effnetlite0"]["card"]
    assert isinstance(shipped["open_set"]["centroids"], list)
    assert brief["open_set"]["centroids"].startswith(f"<{len(shipped['open_set']['centroids'])} x ")
    assert len(json.dumps(short)) < len(json.dumps(full)) * 0.6
