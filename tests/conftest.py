"""Shared fixtures: a generated binary dataset and a tiny detector trained and exported from it once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forensics.synthetic import make_binary_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_ARCH = "test_resnet"
TINY_CROP = 64


def invoke(*args: str, expect: int | None = 0):
    from cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="session")
def binary_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("binary")
    return {"train": make_binary_dataset(root / "train", 48, seed=1),
            "val": make_binary_dataset(root / "val", 16, seed=2)}


@pytest.fixture(scope="session")
def tiny_run(binary_data, tmp_path_factory) -> Path:
    """A test_resnet trained for a few epochs on the generated data (through the CLI)."""
    run = tmp_path_factory.mktemp("run") / "tiny"
    invoke("train", binary_data["train"], "--val", binary_data["val"], "--out", run, "--arch", TINY_ARCH,
           "--crop", TINY_CROP, "--epochs", 4, "--batch-size", 16, "--lr", 3e-3, "--workers", 0,
           "--patience", 4, "--max-tiles", 4, "--crops-per-image", 4,
           # the period-2 trace would not survive JPEG: this fixture tests the pipeline, not robustness
           "--jpeg-prob", 0, "--blur-prob", 0)
    return run


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny.onnx"
    invoke("export", tiny_run, "--out", out)
    return out


@pytest.fixture
def skip_unless_shared():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"project data not present at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


@pytest.fixture(autouse=True, scope="session")
def _report_key(tmp_path_factory):
    """Reports are signed with a key made for the test session, never the tester's own."""
    key = tmp_path_factory.mktemp("config") / "report.key"
    key.write_text("test-session-key-" + os.urandom(16).hex() + "\n")  # made here: no first-scan notice in tests
    os.environ["GSCAN_REPORT_KEY_FILE"] = str(key)
    os.environ["GSCAN_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))  # crash traces
    os.environ.pop("GSCAN_REPORT_KEY", None)
    yield


@pytest.fixture(autouse=True, scope="session")
def _user_models(tmp_path_factory):
    """Models a test exports by name go to a temporary user model folder, never the tester's own."""
    os.environ["GSCAN_MODELS"] = str(tmp_path_factory.mktemp("user-models"))
    yield
