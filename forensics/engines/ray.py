"""The same scan on Ray Data: decode tasks feed a pool of long-lived actors, each holding one ONNX Runtime session.

Rows equal the local engine's: decoding, tiling, normalisation, aggregation and row building are the same
functions; only the transport differs. Decode tasks emit fixed-size uint8 arrays (Ray cannot size PIL objects),
read bytes themselves (Ray's read_images fails a whole job on one corrupt file) and never raise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import GscanError
from ..images import DecodedImage, decode_file
from ..report import path_text
from ..extras import require_extra
from ..scan import RowBuilder, RowSink, ScanOptions, ScanSummary, auto_batch_size
from ..tiling import normalise, tile_origins

FACT_FIELDS = ("sha256", "file_size", "mtime", "format", "width", "height", "orientation", "error")


def require_ray():
    require_extra("ray", "--engine ray")
    import ray
    import ray.data  # noqa: F401

    return ray


def decode_batch(batch: dict, crop: int, max_tiles: int, max_pixels: int, read_limits: dict | None = None) -> dict:
    """Paths -> facts plus uint8 tiles padded to a fixed (max_tiles, crop, crop, 3) with each tile's valid size."""
    from ..card import TilingPolicy

    policy = TilingPolicy(crop=crop, max_tiles=max_tiles)
    n = len(batch["path"])
    out = {"path": list(batch["path"]), "notes": [], "n_tiles": np.zeros(n, np.int32),
           "tiles": np.zeros((n, max_tiles, crop, crop, 3), np.uint8),
           "valid": np.zeros((n, max_tiles, 2), np.int32), **{k: [] for k in FACT_FIELDS}}
    for i, raw in enumerate(batch["path"]):
        path = Path(os.fsdecode(raw))
        try:
            decoded = decode_file(path, max_pixels, **(read_limits or {}))
        except Exception as exc:  # never fail the job for one file
            decoded = DecodedImage(path=path, error=f"internal error while decoding: {exc!r}")
        for key in FACT_FIELDS:
            out[key].append(getattr(decoded, key))
        out["notes"].append("\n".join(decoded.notes))
        if decoded.ok:
            origins = tile_origins(decoded.height, decoded.width, policy)
            out["n_tiles"][i] = len(origins)
            for t, (y, x) in enumerate(origins):
                patch = decoded.pixels[y:y + crop, x:x + crop]
                out["tiles"][i, t, :patch.shape[0], :patch.shape[1]] = patch
                out["valid"][i, t] = patch.shape[:2]
    return out


class ScanActor:
    """Holds one ONNX Runtime session (one intra-op thread) and turns decoded batches into report rows."""

    def __init__(self, model_path: str, device: str, threshold: float | None, settings: str = ""):
        from ..runtime import Detector

        self.detector = Detector(Path(model_path), device=device, intra_threads=1)
        if device == "cuda" and "CUDAExecutionProvider" not in self.detector.session.get_providers():
            raise GscanError("CUDA was asked for but this actor's ONNX Runtime session has no CUDA provider")
        card = self.detector.card
        self.builder = RowBuilder(self.detector, card.threshold if threshold is None else threshold, settings)

    def _normalised(self, tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
        card = self.detector.card
        out = np.full((len(tiles), 3, card.tiling.crop, card.tiling.crop), card.tiling.pad_value, np.float32)
        for t, ((h, w), tile) in enumerate(zip(valid, tiles)):
            out[t, :, :h, :w] = normalise(tile[:h, :w], card.mean, card.std)
        return out

    def __call__(self, batch: dict) -> dict:
        chunks, owners = [], []
        for i, n in enumerate(batch["n_tiles"]):
            if n:
                chunks.append(self._normalised(batch["tiles"][i][:n], batch["valid"][i][:n]))
                owners.append(i)
        logits = self.detector.run(np.concatenate(chunks))[0] if chunks else None
        rows, start = [], 0
        for i in range(len(batch["path"])):
            decoded = DecodedImage(path=Path(os.fsdecode(batch["path"][i])),
                                   notes=[x for x in str(batch["notes"][i]).split("\n") if x],
                                   **{k: _plain(batch[k][i]) for k in FACT_FIELDS})
            if i in owners:
                n = int(batch["n_tiles"][i])
                rows.append(self.builder.scored(decoded, logits[start:start + n])[0])
                start += n
            else:
                rows.append(self.builder.error(decoded))
        return {"row": rows}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def scan_with_ray(paths: Iterable[Path], model_path: Path, sink: RowSink, options: ScanOptions,
                  device: str = "cpu", address: str | None = None, max_actors: int | None = None) -> ScanSummary:
    """Scan on a Ray cluster (`address`, or a local one), rows handed to `sink` in input order."""
    import time

    ray = require_ray()
    from ..runtime import Detector

    if options.wants_cams() or options.previews:
        raise GscanError("--engine ray writes reports only: heatmaps and the triage page need --engine local")
    card = Detector(model_path, device="cpu").card
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": os.cpu_count(), "object_store_memory": 200 * 1024 ** 2}))
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if device == "cuda" and gpus < 1:
            raise GscanError("--device cuda with --engine ray, but the Ray cluster has no GPU")
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max_actors or (int(gpus) if device == "cuda" else max(1, cpus - 1))  # leave room for decode tasks
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = [{"path": os.fsencode(path_text(p))} for p in paths]
        summary = ScanSummary(device=device, threshold=card.threshold if options.threshold is None else options.threshold,
                              model=card.name)
        t0 = time.perf_counter()
        if items:
            batch = max(1, (options.batch_size or auto_batch_size(device)) // max(1, card.tiling.max_tiles // 2))
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 8, 64)))
            ds = ds.map_batches(decode_batch, batch_size=8, batch_format="numpy",
                                fn_kwargs={"crop": card.tiling.crop, "max_tiles": card.tiling.max_tiles,
                                           "max_pixels": options.max_pixels, "read_limits": options.read_limits()})
            ds = ds.map_batches(ScanActor, batch_size=batch, batch_format="numpy",
                                fn_constructor_args=(str(model_path), device, options.threshold,
                                                     options.settings_text(summary.threshold, None)),
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                                num_gpus=1 if device == "cuda" else None, num_cpus=1)
            for record in ds.iter_rows():
                row = dict(record["row"])
                summary.add(row)
                sink([row])
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        if started_here:
            ray.shutdown()

