"""The same scan on Ray Data: decode tasks feed a pool of long-lived actors, each holding one ONNX Runtime session.

Rows equal the local engine's: decoding, tiling, normalisation, aggregation and row building are the same
functions; only the transport differs. Decode tasks emit fixed-size uint8 arrays (Ray cannot size PIL objects),
read bytes themselves (Ray's read_images fails a whole job on one corrupt file) and never raise.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ..choices import Decode
from ..errors import GscanError
from ..extras import require_extra
from ..images import DecodedImage, decode_file
from ..options import ScanOptions
from ..condition import Condition
from ..provenance import Provenance
from ..rows import RowBuilder, RowSink, ScanSummary
from ..scoring import score_images
from ..runtime import Detector
from ..text import path_text
from ..tiling import Preprocessing, coverage
from .local import auto_batch_size

FACT_FIELDS = ("sha256", "file_size", "mtime", "format", "width", "height", "orientation", "error")


def require_ray():
    require_extra("ray", "--engine ray")
    import ray
    import ray.data  # noqa: F401

    return ray


def decode_batch(batch: dict, preprocessing: Preprocessing, max_pixels: int, read_limits: dict) -> dict:
    """Paths -> facts plus uint8 patches padded to a fixed (max_tiles, crop, crop, 3)."""
    max_tiles, _, crop, _ = preprocessing.slot_shape
    n = len(batch["path"])
    out = {"path": list(batch["path"]), "notes": [], "provenance": [], "condition": [],
           "n_tiles": np.zeros(n, np.int32),
           "tile_pixels": np.zeros((n, max_tiles), np.int64),  # image pixels inside each tile: the row's coverage
           "tiles": np.zeros((n, max_tiles, crop, crop, 3), np.uint8), **{k: [] for k in FACT_FIELDS}}
    for i, raw in enumerate(batch["path"]):
        path = Path(os.fsdecode(raw))
        try:
            decoded = decode_file(path, max_pixels, **read_limits)
        except Exception as exc:  # never fail the job for one file
            decoded = DecodedImage(path=path, error=f"internal error while decoding: {exc!r}")
        for key in FACT_FIELDS:
            out[key].append(getattr(decoded, key))
        out["notes"].append("\n".join(decoded.notes))
        read = decoded.provenance is not None
        out["provenance"].append([decoded.provenance.kind, decoded.provenance.detail] if read else [])
        out["condition"].append([decoded.condition.kind, decoded.condition.detail] if decoded.condition else [])
        if decoded.ok:
            patches, origins = preprocessing.patches(decoded.pixels)
            out["n_tiles"][i] = len(patches)
            out["tiles"][i, :len(patches)] = patches
            out["tile_pixels"][i, :len(origins)] = [round(coverage([o], crop, decoded.height, decoded.width)
                                                          * decoded.height * decoded.width) for o in origins]
    return out


class ScanActor:
    """Holds one ONNX Runtime session (one intra-op thread) and turns decoded batches into report rows."""

    def __init__(self, model_path: str, device: str, threshold: float, settings: str):
        from ..runtime import open_detector

        self.detector = open_detector(Path(model_path), device=device, intra_threads=1)
        if device == "cuda" and "CUDAExecutionProvider" not in self.detector.session.get_providers():
            raise GscanError("CUDA was asked for but this actor's ONNX Runtime session has no CUDA provider")
        self.builder = RowBuilder(self.detector, threshold, settings)
        self.preprocessing = self.detector.preprocessing

    def __call__(self, batch: dict) -> dict:
        chunks, owners = [], []
        for i, n in enumerate(batch["n_tiles"]):
            if n:
                chunks.append(self.preprocessing.normalise(batch["tiles"][i][:n], int(batch["height"][i]),
                                                           int(batch["width"][i])))
                owners.append(i)
        results = dict(zip(owners, score_images(self.detector, chunks, self.builder.threshold)))
        rows = []
        for i in range(len(batch["path"])):
            decoded = DecodedImage(path=Path(os.fsdecode(batch["path"][i])),
                                   notes=[x for x in str(batch["notes"][i]).split("\n") if x],
                                   provenance=_provenance(batch["provenance"][i]),
                                   condition=_condition(batch["condition"][i]),
                                   **{k: _plain(batch[k][i]) for k in FACT_FIELDS})
            if i in results:
                row, cls = self.builder.scored(decoded, results[i].logits, results[i].rescored)
                if cls is not None:
                    scored = int(batch["tile_pixels"][i][:len(results[i].logits)].sum())
                    row["coverage"] = round(min(1.0, scored / max(1, decoded.height * decoded.width)), 4)
                rows.append(row)
            else:
                rows.append(self.builder.error(decoded))
        return {"row": rows}


def _provenance(cells) -> Provenance | None:
    """The decode task's [kind, detail] back as a Provenance (empty: metadata was not read)."""
    cells = list(cells) if cells is not None else []
    return Provenance(str(cells[0]), str(cells[1])) if len(cells) == 2 else None


def _condition(cells) -> Condition | None:
    cells = list(cells) if cells is not None else []
    return Condition(str(cells[0]), str(cells[1])) if len(cells) == 2 else None


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


class RayEngine:
    """Scan on a Ray cluster (`address`, or a local one); reports only, one model, every file scanned."""

    name = "ray"
    supports: set[str] = set()  # no heatmaps, thumbnails, attribution or resume: see CAPABILITIES

    def __init__(self, detector: Detector, options: ScanOptions, address: str | None = None,
                 max_actors: int | None = None):
        self.detector, self.options, self.address, self.max_actors = detector, options, address, max_actors
        if options.decode != Decode.threads:
            raise GscanError("--engine ray decodes in its own tasks: --decode processes is for --engine local")

    def scan(self, paths: Iterable[Path], sink: RowSink, reuse=None) -> ScanSummary:
        """Rows handed to `sink` in input order."""
        ray = require_ray()
        started_here = not ray.is_initialized()
        if started_here:
            # Ray's C++ core logs to stderr (a raw `core_worker.cc` line at shutdown): only fatal ones, unless
            # the user asked for more
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     **({} if self.address else {"num_cpus": os.cpu_count(), "object_store_memory": 200 * 1024 ** 2}))
        try:
            return self._run(ray, [{"path": os.fsencode(path_text(p))} for p in paths], sink)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, items: list[dict], sink: RowSink) -> ScanSummary:
        detector, options, device = self.detector, self.options, self.detector.device
        gpus = ray.cluster_resources().get("GPU", 0)
        if device == "cuda" and gpus < 1:
            raise GscanError("--device cuda with --engine ray, but the Ray cluster has no GPU")
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = self.max_actors or (int(gpus) if device == "cuda" else max(1, cpus - 1))  # room for decode tasks
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        card = detector.card
        threshold = options.threshold_for(card)
        summary = ScanSummary(device=device, threshold=threshold, model=card.name)
        t0 = time.perf_counter()
        if items:
            batch = max(1, (options.batch_size or auto_batch_size(device)) // max(1, card.tiling.max_tiles // 2))
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 8, 64)))
            ds = ds.map_batches(decode_batch, batch_size=8, batch_format="numpy",
                                fn_kwargs={"preprocessing": detector.preprocessing, "max_pixels": options.max_pixels,
                                           "read_limits": options.read_limits()})
            ds = ds.map_batches(ScanActor, batch_size=batch, batch_format="numpy",
                                fn_constructor_args=(str(detector.path), device, threshold,
                                                     options.settings_text(threshold, None)),
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                                num_gpus=1 if device == "cuda" else None, num_cpus=1)
            for record in ds.iter_rows():
                row = dict(record["row"])
                summary.add(row)
                sink([row])
        summary.seconds = time.perf_counter() - t0
        return summary
