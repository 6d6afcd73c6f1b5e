"""The scan pipeline: files -> decode and tile (worker threads) -> batches -> ONNX Runtime -> one row per file."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import __version__
from .errors import GscanError
from .decode_pool import ProcessDecoder, TileSpec
from .images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, DecodedImage, decode_file, find_images
from .report import mtime_text, path_text
from .runtime import Detector, sha256_file
from .cam import MAX_DISPLAY_SIDE, write_heatmap_png
from .html import previews
from .tiling import extract_tiles

RowSink = Callable[[list[dict]], None]


@dataclass
class ScanOptions:
    batch_size: int = 0  # tiles per inference call; 0: automatic
    workers: int = 0  # decode threads; 0: automatic
    threshold: float | None = None  # None: the model card's
    max_pixels: int = DEFAULT_MAX_PIXELS
    cam_dir: Path | None = None  # write a heatmap PNG per selected image here
    cam_for: str = "fake"  # fake, all or none
    previous: dict[str, dict] | None = None  # resume: rows of an earlier run of this scan, by path
    previews: bool = False  # embed-ready thumbnails for the triage page
    decode: str = "threads"  # threads, or processes (tiles back through shared memory; no heatmaps or thumbnails)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes; larger files are error rows, never read
    follow_links: bool = False  # score files reached through links that leave the scanned folder
    root: Path | None = None  # the scanned folder (set by scan_directory): links must stay inside it
    skip: tuple[Path, ...] = ()  # gscan's own output folders inside the scanned tree: not scanned

    def settings_text(self, threshold: float, attribution_sha256: str | None) -> str:
        """Every setting that shapes a row besides the model: a resumed scan reuses a row only when it matches."""
        cams = self.cam_for if self.cam_dir is not None else "none"
        return (f"threshold={threshold!r};attribution={(attribution_sha256 or 'none')[:16]};"
                f"max_pixels={self.max_pixels};max_file_size={self.max_file_size};"
                f"follow_links={int(self.follow_links)};cams={cams}")

    def read_limits(self) -> dict:
        """decode_file's keyword arguments for these options."""
        return {"max_file_size": self.max_file_size, "root": None if self.follow_links else self.root}

    def wants_cams(self) -> bool:
        return self.cam_dir is not None and self.cam_for != "none"


@dataclass
class ScanSummary:
    files: int = 0
    real: int = 0
    fake: int = 0
    errors: int = 0
    tiles: int = 0
    reused: int = 0  # rows taken from the report being resumed
    seconds: float = 0.0
    device: str = "cpu"
    threshold: float = 0.5
    model: str = ""
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict) -> None:
        """Count one finished row."""
        self.files += 1
        self.tiles += int(row["tiles"] or 0)
        if row["status"] == "error":
            self.errors += 1
        else:
            self.labels[row["label"]] = self.labels.get(row["label"], 0) + 1
        self.real, self.fake = self.labels.get("real", 0), self.labels.get("fake", 0)

    @property
    def images_per_second(self) -> float:
        """Images scored per second: rows reused by --resume cost nothing and are not counted."""
        scanned = self.files - self.reused
        return scanned / self.seconds if self.seconds > 0 else 0.0


def auto_workers() -> int:
    """Decode threads: one per core but one, which ONNX Runtime's intra-op threads use. PIL releases the GIL, so
    decoding overlaps inference; on 2 cores one decode thread scanned 2,000 images in 94 s, two in 102 s."""
    return max(1, (os.cpu_count() or 1) - 1)


def auto_batch_size(device: str) -> int:
    """Enough tiles to amortise a call: 32 on CPU (larger batches gained nothing on 2 cores), 128 on CUDA."""
    return 128 if device == "cuda" else 32


@dataclass
class Prepared:
    """A decoded image reduced to what inference needs: its facts and tiles (pixels already dropped)."""

    decoded: DecodedImage | None
    tiles: np.ndarray | None = None
    origins: list[tuple[int, int]] = field(default_factory=list)
    reused: dict | None = None  # a row from the earlier run, still valid for this file
    previews: dict[str, str] = field(default_factory=dict)
    attribution_tiles: np.ndarray | None = None  # only when the attribution model tiles differently


def reusable_row(path: Path, previous: dict[str, dict], expected: dict[str, str]) -> dict | None:
    """The earlier run's row for this file if its path, size and modification time are unchanged, it was made by
    the same model and settings (`expected`: column -> value), and the file's sha256 still matches (hashed again:
    far cheaper than inference, and a swapped file with its old mtime restored is caught)."""
    row = previous.get(path_text(path))
    if row is None or any(str(row.get(k) or "") != str(v) for k, v in expected.items()):
        return None
    try:
        st = path.stat()
        if str(row.get("file_size")) != str(st.st_size) or row.get("file_mtime") != mtime_text(st.st_mtime):
            return None
        return row if row.get("sha256") and sha256_file(path) == row["sha256"] else None
    except OSError:
        return None


def _same_preprocessing(a: Detector, b: Detector) -> bool:
    return (a.card.tiling, a.card.mean, a.card.std) == (b.card.tiling, b.card.mean, b.card.std)


def prepare(path: Path, detector: Detector, options: ScanOptions, attributor: Detector | None = None) -> Prepared:
    """Decode and tile one file; any failure becomes the row's error, never an exception.
    Pixels are dropped after tiling unless a heatmap may be drawn over them."""
    try:
        decoded = decode_file(path, options.max_pixels, **options.read_limits())
        if not decoded.ok:
            return Prepared(decoded)
        card = detector.card
        tiles, origins = extract_tiles(decoded.pixels, card.tiling, card.mean, card.std)
        shown = previews(decoded.pixels, decoded.orientation) if options.previews else {}
        extra = None
        if attributor is not None and not _same_preprocessing(detector, attributor):
            a = attributor.card
            extra = extract_tiles(decoded.pixels, a.tiling, a.mean, a.std)[0]
        if not options.wants_cams():
            decoded.pixels = None
        return Prepared(decoded, tiles, origins, previews=shown, attribution_tiles=extra)
    except Exception as exc:  # a bad file must never stop the scan
        return Prepared(DecodedImage(path=path, error=f"internal error while decoding: {exc!r}"))


class RowBuilder:
    """Turns prepared images and their logits into report rows with chain-of-custody fields."""

    def __init__(self, detector: Detector, threshold: float, settings: str = ""):
        self.detector, self.threshold = detector, threshold
        self.common = {"model": detector.card.name, "model_sha256": detector.sha256, "gscan_version": __version__,
                       "threshold": threshold, "scan_settings": settings}

    def base(self, decoded: DecodedImage) -> dict:
        return {"path": path_text(decoded.path), "sha256": decoded.sha256 or None,
                "file_size": decoded.file_size or None,
                "file_mtime": mtime_text(decoded.mtime) if decoded.mtime else None, "width": decoded.width or None,
                "height": decoded.height or None, "format": decoded.format or None,
                "notes": "; ".join(decoded.notes) or None, "label": None, "score": None, "tiles": None,
                "cam_class": None, "cam_path": None, "cam_max": None,
                **self.common, "scanned_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def error(self, decoded: DecodedImage, reason: str | None = None) -> dict:
        return {**self.base(decoded), "status": "error", "error": reason or decoded.error}

    def scored(self, decoded: DecodedImage, tile_logits: np.ndarray) -> tuple[dict, int]:
        """The row and the index of the class it settles on (the class a heatmap explains)."""
        card = self.detector.card
        probs = image_probabilities(tile_logits)
        row = {**self.base(decoded), "status": "ok", "error": None, "tiles": int(len(tile_logits))}
        if card.task == "binary":
            score = float(probs[card.positive_index])
            row.update(score=score, label="fake" if score >= self.threshold else "real")
        else:
            top = int(probs.argmax())
            row.update(score=float(probs[top]), label=card.classes[top])
        return row, card.classes.index(row["label"])


def image_probabilities(tile_logits: np.ndarray) -> np.ndarray:
    """One image's class probabilities: its tiles' logits averaged, then softmax."""
    logits = tile_logits.mean(axis=0)
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


class Attribution:
    """Adds which generator made it to rows the binary model called fake (the attribution model's top 3)."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self.common = {"attribution_model": detector.card.name, "attribution_model_sha256": detector.sha256}

    def apply(self, pairs: list[tuple[dict, np.ndarray]]) -> None:
        if not pairs:
            return
        logits, _ = self.detector.run([tiles for _, tiles in pairs])
        classes, start = self.detector.card.classes, 0
        for row, tiles in pairs:
            probs = image_probabilities(logits[start:start + len(tiles)])
            start += len(tiles)
            top = np.argsort(-probs)[:3]
            row.update(self.common, generator=classes[top[0]], generator_score=float(probs[top[0]]),
                       generator_top3="; ".join(f"{classes[i]}:{probs[i]:.4f}" for i in top))


class HeatmapWriter:
    """Chooses which rows get a heatmap and writes each PNG, named by the file's sha256, on the worker pool."""

    def __init__(self, options: ScanOptions, crop: int, submit: Callable):
        self.dir, self.cam_for, self.crop, self.submit = options.cam_dir, options.cam_for, crop, submit
        if self.dir is not None:
            Path(self.dir).mkdir(parents=True, exist_ok=True)

    def wanted(self, row: dict) -> bool:
        return self.dir is not None and (self.cam_for == "all" or (self.cam_for == "fake" and row["label"] == "fake"))

    def start(self, row: dict, item: Prepared, tile_cams: np.ndarray, cls: int, classes: list[str]) -> Future:
        # The name comes from the content hash, never from the input path, so no file name can steer it.
        path = Path(self.dir) / f"{row['sha256']}.png"
        row.update(cam_class=classes[cls], cam_path=str(path), cam_max=float(np.maximum(tile_cams, 0).max()))
        decoded = item.decoded
        if max(decoded.width, decoded.height) > MAX_DISPLAY_SIDE:
            row["notes"] = "; ".join(filter(None, [row["notes"], f"heatmap scaled to {MAX_DISPLAY_SIDE} px for display"]))
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
        logits, cams, failure = None, None, None
        if scored:
            try:
                logits, cams = self.detector.run([p.tiles for p in scored],
                                                 with_cams=self.heatmaps.dir is not None)
            except Exception as exc:  # e.g. out of memory on one batch: those rows say so, the scan goes on
                failure = f"inference failed: {exc}"
        rows, writes, fakes, start = [], [], [], 0
        for p in items:
            if p.reused is not None:
                rows.append(p.reused)
            elif p.tiles is None:
                rows.append(self.builder.error(p.decoded))
            elif failure:
                rows.append(self.builder.error(p.decoded, failure))
            else:
                n = len(p.tiles)
                row, cls = self.builder.scored(p.decoded, logits[start:start + n])
                row.update(p.previews)
                if self.attribution and row["label"] == "fake":
                    fakes.append((row, p.tiles if p.attribution_tiles is None else p.attribution_tiles))
                if self.heatmaps.wanted(row):
                    writes.append((row, self.heatmaps.start(row, p, cams[start:start + n, cls], cls,
                                                            self.detector.card.classes)))
                rows.append(row)
                p.decoded.pixels = None
                start += n
        if self.attribution:
            try:
                self.attribution.apply(fakes)
            except Exception as exc:  # the verdicts stand; only the generator is missing, and the row says why
                for row, _ in fakes:
                    row["notes"] = "; ".join(filter(None, [row["notes"], f"attribution failed: {exc}"]))
        self.waiting.append((rows, writes))
        self._release(block=len(self.waiting) > 2)

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


def _check_decode_mode(options: ScanOptions, detector: Detector, attributor: Detector | None) -> None:
    if options.decode not in ("threads", "processes"):
        raise GscanError(f"unknown decode mode {options.decode!r}: use threads or processes")
    if options.decode == "processes" and (options.wants_cams() or options.previews or (
            attributor is not None and not _same_preprocessing(detector, attributor))):
        raise GscanError("--decode processes hands back tiles only: heatmaps, the triage page's thumbnails and an "
                         "attribution model with its own preprocessing need --decode threads")


def _prepared_items(paths: Iterable[Path], detector: Detector, options: ScanOptions, attributor: Detector | None,
                    pool: ThreadPoolExecutor, workers: int) -> Iterator[Prepared]:
    """Every path as a Prepared item, in input order, decoded on the thread pool or on worker processes."""
    previous = options.previous or {}
    threshold = detector.card.threshold if options.threshold is None else options.threshold
    expected = {"model_sha256": detector.sha256,
                "scan_settings": options.settings_text(threshold, attributor.sha256 if attributor else None)}

    def reuse(path: Path) -> dict | None:
        return reusable_row(path, previous, expected) if previous else None

    if options.decode == "processes":
        card = detector.card
        with ProcessDecoder(workers, TileSpec(card.tiling, card.mean, card.std, options.max_pixels, options.read_limits())) as decoder:
            for decoded, tiles, origins, row in decoder.decode(paths, reuse):
                yield Prepared(None, reused=row) if row is not None else Prepared(decoded, tiles, origins)
        return

    def work(path: Path) -> Prepared:
        row = reuse(path)
        return Prepared(None, reused=row) if row else prepare(path, detector, options, attributor)

    yield from _bounded_map(pool, work, paths, window=workers * 4)


def scan_paths(paths: Iterable[Path], detector: Detector, sink: RowSink, options: ScanOptions,
               attributor: Detector | None = None) -> ScanSummary:
    """Score every path, handing rows to `sink` in input order as each batch completes.
    With an attributor, images called fake also get the generator that most likely made them."""
    threshold = detector.card.threshold if options.threshold is None else options.threshold
    summary = ScanSummary(device=detector.device, threshold=threshold, model=detector.card.name)
    workers = options.workers or auto_workers()
    batch_size = options.batch_size or auto_batch_size(detector.device)

    def count(rows: list[dict]) -> None:
        for row in rows:
            summary.add(row)
        sink(rows)

    if options.wants_cams() and not detector.card.heatmap:
        raise GscanError(f"model {detector.card.name} has no heatmap output (its head is not pooling + linear)")
    _check_decode_mode(options, detector, attributor)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gscan-decode") as pool:
        heatmaps = HeatmapWriter(options if options.wants_cams() else ScanOptions(), detector.card.tiling.crop,
                                 pool.submit)
        settings = options.settings_text(threshold, attributor.sha256 if attributor else None)
        runner = BatchRunner(detector, RowBuilder(detector, threshold, settings), batch_size, count, heatmaps,
                             Attribution(attributor) if attributor else None)
        for item in _prepared_items(paths, detector, options, attributor, pool, workers):
            summary.reused += item.reused is not None
            runner.add(item)
        runner.finish()
    summary.seconds = time.perf_counter() - started
    return summary


def scan_directory(root: Path, detector: Detector, sink: RowSink, options: ScanOptions | None = None,
                   attributor: Detector | None = None) -> ScanSummary:
    """Scan every image found under root (by content, recursively)."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise GscanError(f"path {root} does not exist")
    options = dataclasses.replace(options or ScanOptions(), root=_link_root(root))
    return scan_paths(find_images(root, skip=options.skip), detector, sink, options, attributor)


def _link_root(root: Path) -> Path | None:
    """The folder links must stay inside: the scanned folder. A file named on the command line is read wherever
    it leads (the user chose it), but still never as a FIFO or device."""
    return root if root.is_dir() else None


@dataclass
class ScanResult:
    summary: ScanSummary
    detector: Detector
    report: Path | None
    attributor: Detector | None = None


def scan_to_report(root: Path, models: list[str] | None = None, report: Path | None = None, device: str = "auto",
                   options: ScanOptions | None = None, on_rows: RowSink = lambda rows: None,
                   resume: bool = False, html: Path | None = None, engine: str = "local",
                   ray_address: str | None = None) -> ScanResult:
    """Load a model, scan root and stream the rows into the report (if any) and to on_rows.

    resume: reuse the report's rows for files whose path, size and modification time are unchanged, scan the
    rest, and write the whole report anew in scan order (atomically: the old one stays until the new is whole).
    """
    from .html import TriagePage
    from .outputs import ReportLock, check_outputs
    from .report import ReportWriter, is_stdout, read_rows
    from .runtime import load_detectors

    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise GscanError(f"path {root} does not exist")
    options = dataclasses.replace(options or ScanOptions(), root=_link_root(root))
    options.skip = check_outputs(root, report, html, options.cam_dir)
    if resume and (report is None or is_stdout(report)):
        raise GscanError("--resume needs --report FILE: the report to resume")
    with contextlib.ExitStack() as held:
        if report is not None and not is_stdout(report):
            held.enter_context(ReportLock(report))  # before reading it for --resume: one scan per report
        if resume:
            options.previous = {row["path"]: row for row in read_rows(report)}
        detector, attributor = load_detectors(models, device)
        if engine == "ray" and attributor is not None and len(models or []) < 2:
            attributor = None  # a card's companion is a convenience of the local engine, not a requirement
        options.previews = html is not None
        writer = ReportWriter(report, atomic=resume) if report else None
        page = TriagePage(html) if html else None
        summary = _scan_into(root, detector, attributor, options, writer, page, on_rows, engine, ray_address)
    if page:
        card = detector.card
        page.close({"folder": path_text(root), "model": card.name, "model_sha256": detector.sha256,
                    "threshold": summary.threshold, "threshold_method": card.threshold_method,
                    "gscan_version": __version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return ScanResult(summary, detector, Path(report) if report else None, attributor)


def _scan_into(root: Path, detector: Detector, attributor: Detector | None, options: ScanOptions, writer, page,
               on_rows: RowSink, engine: str, ray_address: str | None) -> ScanSummary:
    """Run the chosen engine, streaming rows to the report, the page and on_rows; the report is finalised only
    when the scan completed."""

    def sink(rows: list[dict]) -> None:
        if writer:
            writer.write(rows)
        if page:
            page.add(rows)
        on_rows(rows)

    try:
        if engine == "ray":
            if attributor is not None or options.previous or options.decode != "threads":
                raise GscanError("--engine ray runs one model, without --resume, decoding in its own tasks: "
                                 "use --engine local for those")
            from .engines.ray import scan_with_ray

            summary = scan_with_ray(find_images(root, skip=options.skip), detector.path, sink, options,
                                    detector.device, ray_address)
        elif engine == "local":
            summary = scan_directory(root, detector, sink, options, attributor)
        else:
            raise GscanError(f"unknown engine {engine!r}: use local or ray")
    except BaseException:
        if writer:
            writer.close(complete=False)  # keep the valid prefix; never replace a report with an unfinished one
        raise
    if writer:
        writer.close()
    return summary
