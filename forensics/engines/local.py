"""The in-process scan engine: files -> decode and tile (worker threads or processes) -> batches -> ONNX Runtime
-> one row per file, in input order."""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..heatmap import display_side, heatmap_name, write_heatmap_png
from ..choices import CamFor, Decode
from ..decode_pool import ProcessDecoder, TileSpec
from ..errors import ModelError
from ..html import previews
from ..images import DecodedImage, decode_file
from ..options import ScanOptions
from ..scoring import score_images
from ..tiling import coverage
from ..rows import RowBuilder, RowSink, ScanSummary, image_probabilities
from ..runtime import Detector

Reuse = Callable[[Path], "dict | None"]


def auto_workers() -> int:
    """Decode threads: one per core but one, which ONNX Runtime's intra-op threads use. PIL releases the GIL, so
    decoding overlaps inference; on 2 cores one decode thread scanned 2,000 images in 94 s, two in 102 s."""
    return max(1, (os.cpu_count() or 1) - 1)


def auto_batch_size(device: str) -> int:
    """Enough tiles to amortise a call: 32 on CPU (larger batches gained nothing on 2 cores), 128 on CUDA."""
    return 128 if device == "cuda" else 32


MAX_BATCH_BYTES = 64 * 1024 * 1024  # input tiles of one inference call: a large crop means fewer tiles, not more GB
MAX_IN_FLIGHT_BYTES = 512 * 1024 * 1024  # tiles of images decoded ahead of inference


def tile_bytes(detector: Detector) -> int:
    crop = detector.card.tiling.crop
    return 3 * crop * crop * 4


def bounded_batch(batch_size: int, detector: Detector) -> int:
    """The batch in tiles, bounded by bytes: a card's crop of 1024 px gets 5 tiles a call, not 32."""
    return max(1, min(batch_size, MAX_BATCH_BYTES // tile_bytes(detector)))


def bounded_window(workers: int, detector: Detector) -> int:
    """Images decoded ahead of inference, bounded by the bytes their tiles may take."""
    per_image = tile_bytes(detector) * detector.card.tiling.max_tiles
    return max(2, min(workers * 4, MAX_IN_FLIGHT_BYTES // per_image))


@dataclass
class Prepared:
    """A decoded image reduced to what inference needs: its facts and tiles (pixels already dropped)."""

    decoded: DecodedImage | None
    tiles: np.ndarray | None = None
    origins: list[tuple[int, int]] = field(default_factory=list)
    reused: dict | None = None  # a row from the earlier run, still valid for this file
    previews: dict[str, str] = field(default_factory=dict)
    attribution_tiles: np.ndarray | None = None  # only when the attribution model tiles differently


def prepare(path: Path, detector: Detector, options: ScanOptions, attributor: Detector | None = None) -> Prepared:
    """Decode and tile one file; any failure becomes the row's error, never an exception.
    Pixels are dropped after tiling unless a heatmap may be drawn over them."""
    try:
        decoded = decode_file(path, options.max_pixels, **options.read_limits())
        if not decoded.ok:
            return Prepared(decoded)
        tiles, origins = detector.preprocessing.tiles(decoded.pixels)
        shown = previews(decoded.pixels, decoded.orientation) if options.previews else {}
        extra = None
        if attributor is not None and not attributor.preprocessing.cuts_like(detector.preprocessing):
            extra = attributor.preprocessing.tiles(decoded.pixels)[0]
        if not options.wants_cams():
            decoded.pixels = None
        return Prepared(decoded, tiles, origins, previews=shown, attribution_tiles=extra)
    except Exception as exc:  # a bad file must never stop the scan
        return Prepared(DecodedImage(path=path, error=f"internal error while decoding: {exc!r}"))


UNKNOWN_GENERATOR = "unknown"


class Attribution:
    """Adds which generator made it to rows the binary model called fake (the attribution model's top 3), or
    `unknown` when the attribution card's open-set rule says the image is unlike every generator it knows."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self.common = {"attribution_model": detector.card.name, "attribution_model_sha256": detector.sha256}
        rule = detector.card.open_set
        self.centroids = np.asarray(rule["centroids"], np.float32) if rule else None
        self.min_similarity = float(rule["threshold"]) if rule else None
        self.features = rule.get("features", "features") if rule else None

    def apply(self, pairs: list[tuple[dict, np.ndarray]]) -> None:
        if not pairs:
            return
        batch = [tiles for _, tiles in pairs]
        if self.centroids is None:
            logits, features = self.detector.run(batch)[0], None
        else:
            logits, features = self.detector.run_outputs(batch, ["logits", self.features])
        classes, start = self.detector.card.classes, 0
        for row, tiles in pairs:
            part = slice(start, start + len(tiles))
            start += len(tiles)
            probs = image_probabilities(logits[part])
            top = np.argsort(-probs)[:3]
            row.update(self.common, generator=classes[top[0]], generator_score=float(probs[top[0]]),
                       generator_top3="; ".join(f"{classes[i]}:{probs[i]:.4f}" for i in top))
            if features is not None:
                self._open_set(row, features[part])

    def _open_set(self, row: dict, features: np.ndarray) -> None:
        """The image's pooled features against each known generator's centroid (cosine similarity)."""
        pooled = features.mean(axis=(0, 2, 3)) if features.ndim == 4 else features.mean(axis=0)
        pooled = pooled / max(1e-12, float(np.linalg.norm(pooled)))
        similarity = self.centroids @ pooled
        nearest = int(similarity.argmax())
        if similarity[nearest] < self.min_similarity:
            name = self.detector.card.classes[nearest]
            forced = row["generator_top3"]
            top_pick = forced.split(";")[0]
            # one story: the columns and the note say the same thing (the softmax is a forced choice, not evidence)
            row.update(generator=UNKNOWN_GENERATOR, generator_score=None,
                       generator_top3=f"{UNKNOWN_GENERATOR} (forced choice among known generators: {forced})",
                       notes="; ".join(filter(None, [row["notes"], (
                           f"generator unknown: unlike every generator the attribution model knows (its features are "
                           f"at most {similarity[nearest]:.2f} similar to a known generator's, {name}'s, under the "
                           f"card's {self.min_similarity:.2f}); the softmax's top pick {top_pick} is a forced "
                           "choice, not evidence")])))


class HeatmapWriter:
    """Chooses which rows get a heatmap and writes each PNG, named after the image and its sha256, on the pool."""

    def __init__(self, folder: Path | None, cam_for: CamFor, crop: int, submit: Callable):
        self.dir, self.cam_for, self.crop, self.submit = folder, cam_for, crop, submit
        if self.dir is not None:
            Path(self.dir).mkdir(parents=True, exist_ok=True)

    def wanted(self, row: dict) -> bool:
        return self.dir is not None and (self.cam_for == CamFor.all or (self.cam_for == CamFor.fake
                                                                         and row["label"] == "fake"))

    def start(self, row: dict, item: Prepared, tile_cams: np.ndarray, cls: int, classes: list[str]) -> Future:
        path = Path(self.dir) / heatmap_name(item.decoded.path, row["sha256"])
        row.update(cam_class=classes[cls], cam_path=str(path), cam_max=float(np.maximum(tile_cams, 0).max()))
        decoded = item.decoded
        side = display_side(decoded.height, decoded.width, self.crop)
        if side < max(decoded.width, decoded.height):
            row["notes"] = "; ".join(filter(None, [row["notes"], f"heatmap scaled to {side} px for display"]))
        return self.submit(write_heatmap_png, decoded.pixels, tile_cams, item.origins, self.crop,
                           decoded.orientation, path, classes[cls])


class BatchRunner:
    """Collects prepared images in order and runs inference once enough tiles have gathered."""

    def __init__(self, detector: Detector, builder: RowBuilder, batch_size: int, sink: RowSink,
                 heatmaps: HeatmapWriter, attribution: Attribution | None = None):
        self.detector, self.builder, self.batch_size, self.sink = detector, builder, batch_size, sink
        self.heatmaps, self.attribution = heatmaps, attribution
        self.pending: list[Prepared] = []
        self.pending_tiles = 0
        self.waiting: deque[tuple[list[dict], list[tuple[dict, Future]]]] = deque()

    def add(self, item: Prepared) -> None:
        tiles = 0 if item.tiles is None else len(item.tiles)
        # Batches stay at or under batch_size tiles, so a CUDA session sees one input shape, not a new one per call.
        if self.pending_tiles and self.pending_tiles + tiles > self.batch_size:
            self.flush()
        self.pending.append(item)
        self.pending_tiles += tiles
        # With nothing waiting for inference, rows (errors, reused rows) pass straight through, in order.
        if self.pending_tiles >= self.batch_size or self.pending_tiles == 0:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        items, self.pending, self.pending_tiles = self.pending, [], 0
        scored = [p for p in items if p.tiles is not None]
        outputs, failure = {}, None
        if scored:
            try:
                outputs = self._infer(scored)
            except ModelError:  # the model broke its contract (output shape): no row can be trusted
                raise
            except Exception as exc:  # e.g. out of memory on one batch: those rows say so, the scan goes on
                failure = f"inference failed: {exc}"
        rows, writes, fakes = [], [], []
        for p in items:
            if p.reused is not None:
                rows.append(p.reused)
            elif p.tiles is None:
                rows.append(self.builder.error(p.decoded))
            elif failure:
                rows.append(self.builder.error(p.decoded, failure))
            else:
                logits, cams, rescored = outputs[id(p)]
                row, cls = self.builder.scored(p.decoded, logits, rescored)
                row.update(p.previews)
                if cls is not None:
                    row["coverage"] = round(coverage(p.origins, self.detector.card.tiling.crop, p.decoded.height,
                                                     p.decoded.width), 4)
                if cls is None:  # non-finite logits: an error row, no heatmap or attribution
                    rows.append(row)
                    p.decoded.pixels = None
                    continue
                if self.attribution and row["label"] == "fake":
                    fakes.append((row, p.tiles if p.attribution_tiles is None else p.attribution_tiles))
                if self.heatmaps.wanted(row):
                    writes.append((row, self.heatmaps.start(row, p, cams[:, cls], cls, self.detector.card.classes)))
                rows.append(row)
                p.decoded.pixels = None
        if self.attribution:
            try:
                self.attribution.apply(fakes)
            except Exception as exc:  # the verdicts stand; only the generator is missing, and the row says why
                for row, _ in fakes:
                    row["notes"] = "; ".join(filter(None, [row["notes"], f"attribution failed: {exc}"]))
        self.waiting.append((rows, writes))
        self._release(block=len(self.waiting) > 2)

    def _infer(self, scored: list[Prepared]) -> dict[int, tuple[np.ndarray, np.ndarray | None, bool]]:
        """Each item's tile logits (and maps), under the card's policies (forensics/scoring.py); a row's `tiles`
        says how many were scored, and its heatmap is drawn where they were."""
        results = score_images(self.detector, [p.tiles for p in scored], self.builder.threshold,
                               with_cams=self.heatmaps.dir is not None)
        out = {}
        for p, result in zip(scored, results):
            out[id(p)] = (result.logits, result.cams, result.rescored)
            p.origins = p.origins[:len(result.logits)]
        return out

    def _release(self, block: bool) -> None:
        """Hand finished batches to the sink in order. Heatmap PNGs are written on the pool while later batches
        run inference; a batch's rows go out once its PNGs exist (or say why one failed)."""
        while self.waiting:
            rows, writes = self.waiting[0]
            if not block and not all(f.done() for _, f in writes):
                return
            for row, future in writes:
                if future.exception() is not None:
                    row.update(cam_path=None, notes="; ".join(filter(None, [row["notes"],
                                                                             f"heatmap failed: {future.exception()}"])))
            self.waiting.popleft()
            self.sink(rows)
            block = len(self.waiting) > 2

    def finish(self) -> None:
        self.flush()
        while self.waiting:
            self._release(block=True)

def _bounded_map(pool: ThreadPoolExecutor, fn, items: Iterable, window: int):
    """pool.map that keeps at most `window` results in flight, so memory stays flat on huge folders."""
    queue: deque[Future] = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= window:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


class LocalEngine:
    """The in-process engine: decode threads (or processes) feeding batched ONNX Runtime inference."""

    name = "local"

    def __init__(self, detector: Detector, attributor: Detector | None, options: ScanOptions):
        self.detector, self.attributor, self.options = detector, attributor, options
        self.supports = {"heatmaps", "previews", "attribution", "resume", "all-tiles"}
        if options.decode == Decode.processes:
            # tiles come back through shared memory: no pixels for heatmaps or thumbnails, one preprocessing
            self.supports = {"resume"} | ({"attribution"} if attributor is None
                                          or attributor.preprocessing.cuts_like(detector.preprocessing) else set())

    def scan(self, paths: Iterable[Path], sink: RowSink, reuse: Reuse | None = None) -> ScanSummary:
        """Score every path, handing rows to `sink` in input order as each batch completes. With an attributor,
        images called fake also get the generator that most likely made them. `reuse(path)` returns a row from an
        earlier run to keep instead of scanning the file, or None."""
        detector, attributor, options = self.detector, self.attributor, self.options
        threshold = options.threshold_for(detector.card)
        summary = ScanSummary(device=detector.device, threshold=threshold, model=detector.card.name)
        workers = options.workers or auto_workers()

        def count(rows: list[dict]) -> None:
            for row in rows:
                summary.add(row)
            sink(rows)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gscan-decode") as pool:
            heatmaps = HeatmapWriter(options.cam_dir if options.wants_cams() else None, options.cam_for,
                                     detector.card.tiling.crop, pool.submit)
            settings = options.settings_text(threshold, attributor.sha256 if attributor else None)
            runner = BatchRunner(detector, RowBuilder(detector, threshold, settings),
                                 bounded_batch(options.batch_size or auto_batch_size(detector.device), detector),
                                 count, heatmaps,
                                 Attribution(attributor) if attributor else None)
            for item in self._prepared(paths, reuse or (lambda path: None), pool, workers):
                summary.reused += item.reused is not None
                runner.add(item)
            runner.finish()
        summary.seconds = time.perf_counter() - started
        return summary

    def _prepared(self, paths: Iterable[Path], reuse: Reuse, pool: ThreadPoolExecutor,
                  workers: int) -> Iterator[Prepared]:
        """Every path as a Prepared item, in input order, decoded on the thread pool or on worker processes."""
        detector, attributor, options = self.detector, self.attributor, self.options
        if options.decode == Decode.processes:
            spec = TileSpec(detector.preprocessing, options.max_pixels, options.read_limits())
            with ProcessDecoder(workers, spec) as decoder:
                for decoded, tiles, origins, row in decoder.decode(paths, reuse):
                    yield Prepared(None, reused=row) if row is not None else Prepared(decoded, tiles, origins)
            return

        def work(path: Path) -> Prepared:
            row = reuse(path)
            return Prepared(None, reused=row) if row else prepare(path, detector, options, attributor)

        yield from _bounded_map(pool, work, paths, window=bounded_window(workers, detector))
