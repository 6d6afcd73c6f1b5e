"""Aligned fake twins: a bank of small generator-like decoders, trained on reals, makes one twin per real image.

Each decoder is an autoencoder whose decoding half upsamples the way a family of generators does (transposed
convolution as in pix2pix/CycleGAN; nearest then convolution and a 1x1 to-RGB as in ProGAN/StyleGAN; bilinear;
pixel shuffle; StyleGAN2's [1,3,3,1]-filtered upsampling with modulated convolutions and noise; an x8 decoder
with residual blocks like a latent-diffusion VAE's). A twin is the real passed through one decoder: same content,
same size, and, for a JPEG real, the same last compression (the real's own quantisation tables), so that what
tells the two apart is the decoder's trace (Zhang et al., WIFS 2019; Rajan et al., ICLR 2025).
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, JpegImagePlugin
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import DataError
from ..images import decode_file, find_images
from .models import readable_like_others

UPSAMPLERS = ("transposed", "nearest", "bilinear", "pixelshuffle", "stylegan2", "vae")
MANIFEST = "synth.json"
GENERATED = "generator.json"  # the manifest of `gscan synth --generator` (written by generators.py)
DECODER_FOLDER = "decoders"
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder of the bank: how it upsamples, how many x2 stages, how wide."""

    name: str
    upsample: str
    stages: int
    channels: int = 32

    @property
    def latent(self) -> int:
        # enough latent channels that a few hundred CPU steps reach about 30 dB: the trace, not blur, should differ
        return min(48, 3 * 4 ** self.stages)


DEFAULT_BANK = (
    DecoderSpec("transposed-x2", "transposed", 1),
    DecoderSpec("transposed-x4", "transposed", 2),
    DecoderSpec("nearest-x2", "nearest", 1),
    DecoderSpec("nearest-x4", "nearest", 2),
    DecoderSpec("bilinear-x2", "bilinear", 1),
    DecoderSpec("pixelshuffle-x2", "pixelshuffle", 1),
    DecoderSpec("stylegan2-x2", "stylegan2", 1),
    DecoderSpec("stylegan2-x4", "stylegan2", 2),
    DecoderSpec("nearest-x8", "nearest", 3),
    DecoderSpec("vae-x8", "vae", 3),
)


def _fir_up(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's upsampling: zeros inserted, then the separable [1,3,3,1] low-pass (gain 4)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device)
    kernel = (torch.outer(k, k) / k.sum() ** 2 * 4).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(up, (2, 1, 2, 1)), kernel, groups=c)


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated and demodulated 3x3 convolution, the style from the latent's mean."""

    def __init__(self, c_in: int, c_out: int, style_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3) / math.sqrt(c_in * 9))
        self.affine = nn.Linear(style_dim, c_in)
        nn.init.ones_(self.affine.bias)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weight = self.weight[None] * self.affine(style)[:, None, :, None, None]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        out = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(-1, c, 3, 3), padding=1, groups=n)
        return out.reshape(n, -1, h, w) + self.bias[None, :, None, None]


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise with a learned strength, as StyleGAN adds after each convolution."""

    def __init__(self):
        super().__init__()
        self.strength = nn.Parameter(torch.full((), 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.strength * torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 twice, with a skip: the block of a latent-diffusion VAE's decoder."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpStage(nn.Module):
    """One x2 stage of a decoder, in the style of its family."""

    def __init__(self, kind: str, c: int, style_dim: int):
        super().__init__()
        self.kind = kind
        act = nn.LeakyReLU(0.2)
        if kind == "transposed":  # pix2pix / CycleGAN / DCGAN: 4x4 stride-2 transposed convolution
            self.body = nn.Sequential(nn.ConvTranspose2d(c, c, 4, 2, 1), act)
        elif kind in ("nearest", "bilinear"):  # ProGAN / StyleGAN: interpolate, then two 3x3 convolutions
            up = nn.Upsample(scale_factor=2, mode=kind, **({"align_corners": False} if kind == "bilinear" else {}))
            self.body = nn.Sequential(up, nn.Conv2d(c, c, 3, padding=1), act, nn.Conv2d(c, c, 3, padding=1), act)
        elif kind == "pixelshuffle":  # sub-pixel convolution
            self.body = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), act)
        elif kind == "stylegan2":
            self.conv0, self.conv1 = ModulatedConv(c, c, style_dim), ModulatedConv(c, c, style_dim)
            self.noise0, self.noise1, self.act = NoiseInjection(), NoiseInjection(), act
        elif kind == "vae":  # nearest x2, a 3x3 convolution, a residual block
            self.body = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1),
                                      ResBlock(c))
        else:
            raise DataError(f"unknown upsampler {kind!r}: use one of {', '.join(UPSAMPLERS)}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.kind != "stylegan2":
            return self.body(x)
        x = self.act(self.noise0(self.conv0(_fir_up(x), style)))
        return self.act(self.noise1(self.conv1(x, style)))


class TwinAutoencoder(nn.Module):
    """Strided-convolution encoder, then a generator-like decoder back to the input's size."""

    def __init__(self, spec: DecoderSpec):
        super().__init__()
        if not 1 <= spec.stages <= 3:
            raise DataError(f"decoder {spec.name}: 1 to 3 x2 stages, not {spec.stages}")
        c = spec.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(spec.stages):
            layers += [nn.Conv2d(c, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*layers, nn.Conv2d(c, spec.latent, 1))
        self.from_latent = nn.Conv2d(spec.latent, c, 3, padding=1)
        self.stages = nn.ModuleList(UpStage(spec.upsample, c, spec.latent) for _ in range(spec.stages))
        # a 1x1 to-RGB as ProGAN/StyleGAN have; the others end in a 3x3 convolution
        k = 1 if spec.upsample in ("nearest", "stylegan2") else 3
        self.to_rgb = nn.Conv2d(c, 3, k, padding=k // 2)
        self.factor = 2 ** spec.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        style = z.mean(dim=(2, 3))
        h = F.leaky_relu(self.from_latent(z), 0.2)
        for stage in self.stages:
            h = stage(h, style)
        return self.to_rgb(h)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.tensor(pixels).permute(2, 0, 1).float().div(127.5).sub(1.0)


def _to_pixels(x: torch.Tensor) -> np.ndarray:
    return x.add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _load_reals(paths: list[Path]) -> list[np.ndarray]:
    out = []
    for path in paths:
        decoded = decode_file(path)
        if not decoded.ok:
            raise DataError(f"cannot make a twin of {path}: {decoded.error}")
        out.append(decoded.pixels)
    return out


def _random_crops(images: list[np.ndarray], n: int, size: int, rng: random.Random) -> torch.Tensor:
    crops = []
    for _ in range(n):
        img = images[rng.randrange(len(images))]
        h, w = img.shape[:2]
        y, x = rng.randint(0, max(0, h - size)), rng.randint(0, max(0, w - size))
        patch = np.zeros((size, size, 3), np.uint8)
        part = img[y:y + size, x:x + size]
        patch[:part.shape[0], :part.shape[1]] = part
        crops.append(_to_tensor(patch))
    return torch.stack(crops)


def train_decoder(spec: DecoderSpec, images: list[np.ndarray], steps: int, seed: int, crop: int = 64,
                  batch: int = 16) -> tuple[TwinAutoencoder, dict]:
    """L1 reconstruction of random crops of the reals, Adam with a cosine decay; returns model and its record."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = TwinAutoencoder(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    started, losses = time.perf_counter(), []
    model.train()
    for _ in range(steps):
        x = _random_crops(images, batch, crop, rng)
        loss = F.l1_loss(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    held = _random_crops(images, 32, crop, random.Random(seed + 1))
    with torch.inference_mode():
        recon = model(held)
    crop_psnr = float(np.mean([psnr(_to_pixels(a), _to_pixels(b)) for a, b in zip(held, recon)]))
    record = {**asdict(spec), "latent": spec.latent, "steps": steps, "crop": crop, "batch": batch, "seed": seed,
              "loss": "L1", "optimizer": "Adam 2e-3, cosine decay", "final_l1": float(np.mean(losses[-20:])),
              "crop_psnr_db": round(crop_psnr, 2), "seconds": round(time.perf_counter() - started, 1)}
    return model, record


def reconstruct(model: TwinAutoencoder, pixels: np.ndarray, seed: int) -> np.ndarray:
    """The decoder's twin of a whole image at its own size (reflect-padded to the decoder's factor), with the
    real's mean colour per channel restored so that a global colour shift never marks the twin."""
    h, w = pixels.shape[:2]
    f = model.factor
    x = _to_tensor(pixels)[None]
    pad_h, pad_w = (-h) % f, (-w) % f
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    torch.manual_seed(seed)  # the StyleGAN2 decoders' noise: the same twin on every run
    with torch.inference_mode():
        y = model(x)[..., :h, :w]
    y = y - y.mean(dim=(2, 3), keepdim=True) + x[..., :h, :w].mean(dim=(2, 3), keepdim=True)
    return _to_pixels(y[0])


def encode_like(twin: np.ndarray, real_path: Path) -> tuple[bytes, str, str]:
    """(bytes, suffix, how): a JPEG real's twin gets the real's own quantisation tables and chroma
    subsampling, so both carry the same last compression; any other real's twin is stored losslessly."""
    img = Image.fromarray(twin)
    buf = io.BytesIO()
    with Image.open(real_path) as real:
        if real.format == "JPEG":
            sampling = JpegImagePlugin.get_sampling(real)
            img.save(buf, format="JPEG", qtables=real.quantization,
                     subsampling=sampling if sampling >= 0 else 0)
            return buf.getvalue(), ".jpg", "JPEG with the real's quantisation tables"
    img.save(buf, format="PNG")
    return buf.getvalue(), ".png", "PNG"


def _decoder_for(index: int, source: str, bank: list[DecoderSpec]) -> DecoderSpec:
    # round robin within each source, offset by source, so every source gets every decoder about equally
    offset = sum(source.encode()) % len(bank)
    return bank[(index + offset) % len(bank)]


def load_bank(folder: Path) -> tuple[list[DecoderSpec], dict[str, TwinAutoencoder], list[dict]]:
    """Decoders saved by an earlier synth run (its OUT folder), to make twins of other reals with the same bank."""
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{folder} holds no {MANIFEST}: give the --out folder of an earlier gscan synth")
    records = json.loads(manifest.read_text())["decoders"]
    specs, models = [], {}
    for record in records:
        spec = DecoderSpec(record["name"], record["upsample"], record["stages"], record["channels"])
        model = TwinAutoencoder(spec)
        model.load_state_dict(load_file(str(Path(folder) / DECODER_FOLDER / f"{spec.name}.safetensors")))
        specs.append(spec)
        models[spec.name] = model.eval()
    return specs, models, records


@dataclass
class SynthConfig:
    real_dir: Path
    out: Path
    bank_from: Path | None = None  # reuse the decoders of an earlier run instead of training new ones
    decoders: tuple[str, ...] = ()  # names from DEFAULT_BANK; empty: all
    steps: int = 400
    train_images: int = 400  # reals the decoders learn from, spread over sources
    seed: int = 0


def synthesize(config: SynthConfig, on_progress: Progress = lambda e: None) -> dict:
    """Train (or load) the bank, write one twin per real under OUT mirroring REAL_DIR, and OUT/synth.json."""
    real_dir, out = Path(config.real_dir).resolve(), Path(config.out)
    reals = [p for p in find_images(real_dir) if p.is_file()]
    if not reals:
        raise DataError(f"no images found under {real_dir}")
    if config.bank_from:
        bank, models, records = load_bank(config.bank_from)
    else:
        bank, models, records = _train_bank(config, reals, on_progress)
    (out / DECODER_FOLDER).mkdir(parents=True, exist_ok=True)
    for spec in bank:
        _save_decoder(out, spec, models[spec.name])
    twins = _write_twins(real_dir, reals, bank, models, out, config.seed, on_progress)
    for record in records:
        values = [t["psnr_db"] for t in twins if t["decoder"] == record["name"]]
        record["twin_psnr_db"] = round(float(np.mean(values)), 2) if values else None
        record["twins"] = len(values)
    manifest = {"real_dir": str(real_dir), "bank_from": str(config.bank_from or ""), "seed": config.seed,
                "decoders": records, "twins": twins}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _save_decoder(out: Path, spec: DecoderSpec, model: TwinAutoencoder, record: dict | None = None) -> None:
    """A decoder's weights (and, as training goes, its record beside them, so that a rerun continues)."""
    folder = Path(out) / DECODER_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{spec.name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    readable_like_others(weights)
    if record is not None:
        (folder / f"{spec.name}.json").write_text(json.dumps(record, indent=1) + "\n")


def _finished_decoder(out: Path, spec: DecoderSpec, settings: dict) -> tuple[TwinAutoencoder, dict] | None:
    """A decoder an interrupted run already trained with the same settings, or None."""
    folder = Path(out) / DECODER_FOLDER
    weights, record_path = folder / f"{spec.name}.safetensors", folder / f"{spec.name}.json"
    if not (weights.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text())
        if record.get("settings") != settings:
            return None
        model = TwinAutoencoder(spec)
        model.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, RuntimeError):
        return None  # a half-written file from a killed run: train it again
    return model.eval(), record


def _source_of(path: Path, real_dir: Path) -> str:
    rel = path.relative_to(real_dir).parts
    return rel[0] if len(rel) > 1 else "."


def _train_bank(config: SynthConfig, reals: list[Path], on_progress: Progress):
    names = config.decoders or tuple(s.name for s in DEFAULT_BANK)
    known = {s.name: s for s in DEFAULT_BANK}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"unknown decoder(s) {unknown}: the bank has {', '.join(known)}")
    rng = random.Random(config.seed)
    by_source: dict[str, list[Path]] = {}
    for p in reals:
        by_source.setdefault(_source_of(p, Path(config.real_dir).resolve()), []).append(p)
    per = max(1, config.train_images // len(by_source))
    picked = [p for group in by_source.values() for p in rng.sample(group, min(per, len(group)))]
    images = _load_reals(picked)
    bank, models, records = [], {}, []
    on_progress({"event": "bank", "total": len(names)})
    for i, name in enumerate(names):
        settings = {"real_dir": str(Path(config.real_dir).resolve()), "steps": config.steps, "seed": config.seed + i,
                    "train_images": len(images)}
        found = _finished_decoder(config.out, known[name], settings)
        on_progress({"event": "decoder_start", "name": name, "index": i, "total": len(names),
                     "reused": found is not None})
        if found is not None:
            model, record = found
        else:
            model, record = train_decoder(known[name], images, config.steps, config.seed + i)
            record.update(train_images=len(images), settings=settings)
            _save_decoder(config.out, known[name], model, record)  # kept at once: a killed run loses no decoder
        bank.append(known[name])
        models[name] = model
        records.append(record)
        on_progress({"event": "decoder", "index": i, "total": len(names), "reused": found is not None, **record})
    return bank, models, records


def _write_twins(real_dir: Path, reals: list[Path], bank: list[DecoderSpec], models: dict, out: Path, seed: int,
                 on_progress: Progress) -> list[dict]:
    twins, index_in_source = [], {}
    for n, path in enumerate(reals):
        source = _source_of(path, real_dir)
        index_in_source[source] = index_in_source.get(source, -1) + 1
        spec = _decoder_for(index_in_source[source], source, bank)
        pixels = _load_reals([path])[0]
        twin = reconstruct(models[spec.name], pixels, seed + n)
        data, suffix, how = encode_like(twin, path)
        rel = path.relative_to(real_dir).with_suffix(suffix)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        twins.append({"real": str(path.relative_to(real_dir)), "twin": str(rel), "decoder": spec.name,
                      "psnr_db": round(psnr(stored, pixels), 2), "stored_as": how})
        on_progress({"event": "twin", "done": n + 1, "total": len(reals)})
    return twins


def twin_map(folder: Path) -> dict[Path, Path]:
    """Resolved real path -> its twin's path, from a synth output folder's manifest: twins of the bank, or the
    outputs of an image-to-image `--generator` (its generator.json names each output's real)."""
    generated = Path(folder) / GENERATED
    if generated.is_file():
        images = json.loads(generated.read_text())["images"]
        return {Path(e["source"]).resolve(): Path(folder) / e["file"] for e in images if e.get("source")
                and e.get("file")}
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{folder} holds no {MANIFEST} or {GENERATED}: give the --out folder of gscan synth")
    manifest = json.loads(manifest_path.read_text())
    real_dir = Path(manifest["real_dir"])
    return {(real_dir / t["real"]).resolve(): Path(folder) / t["twin"] for t in manifest["twins"]}
