"""Aligned fake twins: a bank of small generator-like decoders (forensics/training/decoders.py), trained on
reals, makes one twin per real image. A twin is the real passed through one decoder: same content,
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

from ..errors import DataError
from ..images import decode_file, find_images
from .decoders import DEFAULT_BANK, DecoderSpec, TwinAutoencoder
from .models import readable_like_others

MANIFEST = "synth.json"
GENERATED = "generator.json"  # the manifest of `gscan synth --generator` (written by generators.py)
DECODER_FOLDER = "decoders"
Progress = Callable[[dict], None]


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
