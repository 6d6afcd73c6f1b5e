"""The CLI as a user and a CI job see it: help, version, exit codes, empty folders, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from forensics.errors import GscanError
from forensics import __version__
from forensics.report import COLUMNS
from forensics.synthetic import add_trace, natural_image, save

REPO = Path(__file__).resolve().parents[1]


def test_version_and_help():
    assert invoke("--version").output.strip() == f"gscan {__version__}"
    for command in ("dir", "models", "train", "eval", "export"):
        assert "Usage" in invoke(command, "-h").output


def test_missing_path_exits_2(tiny_onnx, tmp_path: Path):
    result = invoke("dir", tmp_path / "nope", "--model", tiny_onnx, expect=2)
    assert "does not exist" in result.output


def test_unreadable_model_exits_2(tmp_path: Path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert "cannot load ONNX model" in invoke("dir", tmp_path, "--model", bad, expect=2).output
    assert "no model named" in invoke("dir", tmp_path, "--model", "no-such-model", expect=2).output


def test_card_hash_mismatch_exits_2(tiny_onnx, tmp_path: Path):
    copy = tmp_path / "m.onnx"
    copy.write_bytes(tiny_onnx.read_bytes() + b"")
    card = json.loads(tiny_onnx.with_suffix(".json").read_text())
    card["onnx_sha256"] = "0" * 64
    copy.with_suffix(".json").write_text(json.dumps(card))
    assert "not the one the card describes" in invoke("dir", tmp_path, "--model", copy, expect=2).output


def test_cuda_without_gpu_is_a_clear_error(tiny_onnx, tmp_path: Path):
    from forensics.runtime import cuda_device_count

    if cuda_device_count() == 0:
        result = invoke("dir", tmp_path, "--model", tiny_onnx, "--device", "cuda", expect=2)
        assert "no CUDA GPU" in result.output


def test_empty_directory_gives_header_only_report(tiny_onnx, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    report = tmp_path / "r.csv"
    invoke("dir", tmp_path / "empty", "--model", tiny_onnx, "--report", report, "--fail-on-fake")
    assert report.read_text().strip() == ",".join(COLUMNS)


def test_fail_on_fake_exit_codes(tiny_onnx, tmp_path: Path):
    rng = np.random.default_rng(5)
    save(add_trace(natural_image(rng, 64, 64)), tmp_path / "fake.png")
    save(natural_image(rng, 64, 64), tmp_path / "real.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    # the real image alone at threshold 1 is called real; at 0 everything is fake: exit codes follow
    invoke("dir", tmp_path / "real.png", "--model", tiny_onnx, "--fail-on-fake", "--threshold", 1.0, expect=0)
    invoke("dir", tmp_path, "--model", tiny_onnx, "--fail-on-fake", "--threshold", 0.0, expect=1)
    invoke("dir", tmp_path, "--model", tiny_onnx, "--fail-on-error", "--threshold", 1.0, expect=1)  # broken.png
    invoke("dir", tmp_path / "real.png", "--model", tiny_onnx, "--fail-on-error", expect=0)
    result = invoke("dir", tmp_path, "--model", tiny_onnx, expect=0)  # per-file errors still exit 0
    assert "1" in result.output and "broken.png" in result.output


def test_scan_side_install_holds_no_training_packages():
    """`pip install .` installs what a scan imports; the training stack is the train extra."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    base, train = names(project["dependencies"]), names(project["optional-dependencies"]["train"])
    assert base == {"typer", "rich", "pillow", "numpy", "onnxruntime-gpu", "platformdirs", "c2pa-python",
                    "cryptography"}
    assert {"torch", "timm", "safetensors", "onnx", "grad-cam", "scikit-learn", "matplotlib"} <= train


def test_scan_does_not_import_torch(tiny_onnx, tmp_path: Path):
    save(natural_image(np.random.default_rng(6), 40, 40), tmp_path / "a.png")
    code = ("import sys\nfrom cli.main import app\n"
            f"try:\n    app(['dir', {str(tmp_path)!r}, '--model', {str(tiny_onnx)!r}, '-q'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'timm', 'sklearn', 'matplotlib', 'onnx', 'safetensors', "
            "'pytorch_grad_cam', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_models_lists_shipped_models():
    from forensics.runtime import list_models

    result = invoke("models")
    for info in list_models():
        assert info.card.name in result.output


def test_every_package_is_in_the_wheel():
    """pyproject lists every package of the repository, under the one top-level name the wheel installs: a
    subpackage left out installs a gscan that fails at import (CI installs the project, not the checkout)."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {folder: package for package, folder in setuptools["package-dir"].items()}
    on_disk = set()
    for top in ("forensics", "cli", "exported_models"):
        for init in (REPO / top).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO).parts
            on_disk.add(".".join([mapped.get(parts[0], parts[0]), *parts[1:]]))
    assert on_disk == set(setuptools["packages"])
    assert {p.split(".")[0] for p in setuptools["packages"]} == {"forensics"}  # no generic top-level names


def test_messages_name_the_distribution_pip_installs(monkeypatch):
    """Every install hint is a command that works today: gscan-forensics is not on PyPI (and `gscan` there is
    another project), so hints name the source folder gscan came from, packages by pip's names."""
    import forensics.extras as extras

    tomllib = pytest.importorskip("tomllib")
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"] == extras.DISTRIBUTION
    monkeypatch.setattr(extras, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    monkeypatch.setattr(extras, "source_folder", lambda: "/opt/gscan")
    with pytest.raises(GscanError, match=re.escape("pip install '/opt/gscan[train]'")):
        extras.require_extra("train", "gscan train")
    monkeypatch.setattr(extras, "source_folder", lambda: None)
    with pytest.raises(GscanError) as caught:
        extras.require_extra("train", "gscan train")
    message = str(caught.value)
    assert "gscan-forensics[" not in message
    assert "pip install '.[train]' (run in the gscan source folder" in message and "scikit-learn" in message
    assert "grad-cam" in message and "sklearn" not in message and "pytorch_grad_cam" not in message
