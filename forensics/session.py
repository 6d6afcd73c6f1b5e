"""One scan from start to end: load the detectors once, check the options once against the chosen engine, open
the report and the triage page, run the engine, close what it opened."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import __version__
from .engines.base import Engine
from .errors import GscanError
from .images import find_images
from .options import ScanOptions
from .rows import RowSink, ScanSummary, mtime_text
from .runtime import Detector, sha256_file
from .text import path_text


@dataclass
class ScanResult:
    summary: ScanSummary
    detector: Detector
    report: Path | None
    attributor: Detector | None = None


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



def resume_rows(previous: dict[str, dict], detector: Detector, attributor: Detector | None,
                options: ScanOptions) -> Callable[[Path], dict | None]:
    """reuse(path) for an engine: the earlier row of that file when it still holds (reusable_row)."""
    threshold = options.threshold_for(detector.card)
    expected = {"model_sha256": detector.sha256,
                "scan_settings": options.settings_text(threshold, attributor.sha256 if attributor else None)}
    return lambda path: reusable_row(path, previous, expected)


def choose_engine(name: str, detector: Detector, attributor: Detector | None, options: ScanOptions,
                  resume: bool, ray_address: str | None = None) -> Engine:
    """The engine by name, refused (GscanError) when it cannot do what the options ask: checked here, once."""
    if name == "local":
        from .engines.local import LocalEngine

        engine: Engine = LocalEngine(detector, attributor, options)
    elif name == "ray":
        from .engines.ray import RayEngine

        engine = RayEngine(detector, options, ray_address)
    else:
        raise GscanError(f"unknown engine {name!r}: use local or ray")
    needed = options.needs() | ({"attribution"} if attributor else set()) | ({"resume"} if resume else set())
    missing = needed - engine.supports
    if missing:
        how = f"--decode {options.decode.value}" if name == "local" else f"--engine {name}"
        raise GscanError(f"{how} cannot do {', '.join(sorted(missing))} (heatmaps, the triage page's thumbnails, "
                         "attribution with its own preprocessing and --resume need --engine local --decode threads)")
    return engine


def scan_directory(root: Path, detector: Detector, sink: RowSink, options: ScanOptions | None = None,
                   attributor: Detector | None = None) -> ScanSummary:
    """Scan every image found under root (by content or name, recursively) on the local engine."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise GscanError(f"path {root} does not exist")
    options = (options or ScanOptions()).replace(root=link_root(root))
    engine = choose_engine("local", detector, attributor, options, resume=False)
    return engine.scan(find_images(root, skip=options.skip), sink)


def link_root(root: Path) -> Path | None:
    """The folder links must stay inside: the scanned folder. A file named on the command line is read wherever
    it leads (the user chose it), but still never as a FIFO or device."""
    return root if root.is_dir() else None


def scan_to_report(root: Path, models: list[str] | None = None, report: Path | None = None, device: str = "auto",
                   options: ScanOptions | None = None, on_rows: RowSink = lambda rows: None,
                   resume: bool = False, html: Path | None = None, engine: str = "local",
                   ray_address: str | None = None) -> ScanResult:
    """Load the models, scan root and stream the rows into the report (if any), the page and on_rows.

    resume: reuse the report's rows that still hold (same file content, model and settings), scan the rest, and
    write the whole report anew in scan order (atomically: the old one stays until the new is whole).
    """
    from .html import TriagePage
    from .outputs import ReportLock, check_outputs
    from .report import ReportWriter, is_stdout, read_rows
    from .runtime import load_detectors

    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise GscanError(f"path {root} does not exist")
    options = (options or ScanOptions()).replace(root=link_root(root), previews=html is not None)
    options = options.replace(skip=check_outputs(root, report, html, options.cam_dir))
    if resume and (report is None or is_stdout(report)):
        raise GscanError("--resume needs --report FILE: the report to resume")
    # a card's companion is a convenience of the local engine, not a requirement: Ray does not load it
    detector, attributor = load_detectors(models, device, companion=engine != "ray")
    for model, cams in ((detector, options.wants_cams()), (detector.exact, options.wants_cams()),
                        (attributor, False)):
        if model is not None:
            model.check_contract(cams)
    chosen = choose_engine(engine, detector, attributor, options, resume, ray_address)
    with contextlib.ExitStack() as held:
        if report is not None and not is_stdout(report):
            held.enter_context(ReportLock(report))  # before reading it for --resume: one scan per report
        reuse = resume_rows({row["path"]: row for row in read_rows(report)}, detector, attributor,
                            options) if resume else None
        writer = ReportWriter(report, atomic=resume) if report else None
        page = TriagePage(html) if html else None

        def sink(rows: list[dict]) -> None:
            if writer:
                writer.write(rows)
            if page:
                page.add(rows)
            on_rows(rows)

        try:
            summary = chosen.scan(find_images(root, skip=options.skip), sink, reuse)
        except BaseException:
            if writer:
                writer.close(complete=False)  # keep the valid prefix; never replace a report with an unfinished one
            raise
        if writer:
            writer.close()
    summary.provenance_read = options.provenance is not None
    if page:
        card = detector.card
        page.close({"folder": path_text(root), "model": card.name, "model_sha256": detector.sha256,
                    "threshold": summary.threshold, "threshold_method": card.threshold_method,
                    "gscan_version": __version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return ScanResult(summary, detector, Path(report) if report else None, attributor)
