"""One scan from start to end: load the detectors once, check the options once against the chosen engine, open
the report and the triage page, run the engine, close what it opened."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .engines.base import Engine
from .errors import GscanError, GscanWarning
from .images import find_images
from .options import ScanOptions
from .rows import RowSink, ScanSummary
from .runtime import Detector
from .text import path_text


@dataclass
class ScanResult:
    summary: ScanSummary
    detector: Detector
    report: Path | None
    attributor: Detector | None = None
    html: Path | None = None  # the triage page written, if any
    cam_dir: Path | None = None  # where heatmaps went, if asked for


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


def checked_detectors(models: list[str] | None, device: str, engine: str,
                      options: ScanOptions) -> tuple[Detector, Detector | None]:
    """The models a scan runs, set up for its options and checked against their cards before any row."""
    from .runtime import load_detectors

    # a card's companion is a convenience of the local engine, not a requirement: Ray does not load it
    detector, attributor = load_detectors(models, device, companion=engine != "ray")
    if engine == "ray" and attributor is None and detector.card.companion:
        warnings.warn(GscanWarning(f"--engine ray does not run attribution: {detector.card.name}'s companion "
                                   f"{detector.card.companion} is not loaded, so rows carry no generator (use "
                                   "--engine local for it)"), stacklevel=3)
    for model in (detector, detector.exact):
        if model is not None:
            model.all_tiles = options.tiles.value == "all"
    for model, cams in ((detector, options.wants_cams()), (detector.exact, options.wants_cams()),
                        (attributor, False)):
        if model is not None:
            model.check_contract(cams)
    return detector, attributor


def scan_to_report(root: Path, models: list[str] | None = None, report: Path | None = None, device: str = "auto",
                   options: ScanOptions | None = None, on_rows: RowSink = lambda rows: None,
                   resume: bool = False, html: Path | None = None, engine: str = "local",
                   ray_address: str | None = None, prune: bool = False, overwrite: bool = False,
                   sign_key: Path | None = None) -> ScanResult:
    """Load the models, scan root and stream the rows into the report (if any), the page and on_rows.

    resume: reuse the report's rows that still hold (forensics/resume.py), scan the rest, and write the whole
    report anew in scan order (atomically: the old one stays until the new is whole). Rows of files no longer found
    are kept as they were, after the others, unless prune. sign_key: an Ed25519 private key (PEM) that signs the
    report's seal, so that others can check it with the public key (forensics/seal.py).
    """
    from .html import TriagePage
    from .integrity import report_key
    from .outputs import ReportLock, check_outputs, is_stdout
    from .report import ReportWriter
    from .seal import SigningKey
    from .resume import Resume, earlier_rows

    root = Path(root)
    if not root.exists() and not root.is_symlink():
        raise GscanError(f"path {root} does not exist")
    options = (options or ScanOptions()).replace(root=link_root(root), previews=html is not None)
    options = options.replace(skip=check_outputs(root, report, html, options.cam_dir))
    if resume and (report is None or is_stdout(report)):
        raise GscanError("--resume needs --report FILE: the report to resume")
    if report is not None and not is_stdout(report) and not (resume or overwrite) and os.path.lexists(report):
        raise GscanError(f"report {report} exists: --overwrite replaces it, --resume continues it (its rows are "
                         "never replaced silently)")
    if html is not None and not (resume or overwrite) and os.path.lexists(html):
        raise GscanError(f"page {html} exists: --overwrite replaces it (an earlier triage page is never replaced "
                         "silently)")
    detector, attributor = checked_detectors(models, device, engine, options)
    chosen = choose_engine(engine, detector, attributor, options, resume, ray_address)
    key = report_key() if report is not None else None
    signer = SigningKey(sign_key) if sign_key is not None else None
    if signer is not None and (report is None or is_stdout(report)):
        raise GscanError("--sign-key signs a report's seal: it needs --report FILE (stdout has no seal)")
    with contextlib.ExitStack() as held:
        if report is not None and not is_stdout(report):
            held.enter_context(ReportLock(report))  # before reading it for --resume: one scan per report
        resumed = Resume(earlier_rows(report), detector, attributor, options, key) if resume else None
        writer = ReportWriter(report, atomic=resume, key=key, signer=signer) if report else None
        page = TriagePage(html) if html else None
        sink = _sink(writer, page, on_rows)
        seen: set[str] = set()

        def found():
            for path in find_images(root, skip=options.skip):
                seen.add(path_text(path))
                yield path

        try:
            summary = chosen.scan(found(), sink, resumed.reuse if resumed else None)
            if resumed:
                _carry_unseen(resumed, seen, summary, sink, prune)
        except BaseException:
            if writer:
                writer.close(complete=False)  # keep the valid prefix; never replace a report with an unfinished one
            if page:
                page.discard()
            raise
        if writer:
            try:
                writer.close()
            except OSError as exc:  # a full disk at the very end: the report's rows are there, its seal may not be
                kept, where = writer.readable_rows()
                raise GscanError(f"cannot finish the report {writer.path} or its seal: {exc.strerror or exc}; the "
                                 f"{kept} rows written stay in {where}") from None
    summary.provenance_read = options.provenance is not None
    summary.signed = key is not None
    summary.signer = signer.fingerprint if signer else ""
    if page:
        card = detector.card
        try:
            page.close({"folder": path_text(root), "model": card.name, "model_sha256": detector.sha256,
                        "threshold": summary.threshold, "threshold_method": card.threshold_method,
                        "gscan_version": __version__,
                        "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        except OSError as exc:  # a full disk: the report is whole, the page is not written
            held_by = f"; the {summary.files} rows scanned so far stay in {report}" if writer else ""
            raise GscanError(f"cannot write the triage page {html}: {exc.strerror or exc}{held_by}") from None
    return ScanResult(summary, detector, Path(report) if report else None, attributor, Path(html) if html else None,
                      Path(options.cam_dir) if options.cam_dir else None)


def _sink(writer, page, on_rows: RowSink) -> RowSink:
    def sink(rows: list[dict], keep_digest: bool = False) -> None:
        if writer:
            try:
                writer.write(rows, keep_digest=keep_digest)
            except BrokenPipeError:
                raise  # `--report - | head`: the CLI's quiet exit 141
            except OSError as exc:  # a full disk: the rows that reached it stay, and the user is told how many
                writer.close(complete=False)
                kept, where = writer.readable_rows()
                raise GscanError(f"cannot write the report {writer.path}: {exc.strerror or exc}; the {kept} rows "
                                 f"that reached it stay in {where}") from None
        if page:
            try:
                page.add(rows)
            except OSError as exc:  # a full disk under the page's spool: stop, and say what the report holds
                held = ""
                if writer:
                    writer.close(complete=False)
                    kept, where = writer.readable_rows()
                    held = f"; the {kept} rows scanned so far stay in {where}"
                raise GscanError(f"cannot write the triage page {page.path}: {exc.strerror or exc}{held}") from None
        on_rows(rows)

    return sink


def _carry_unseen(resumed, seen: set[str], summary: ScanSummary, sink, prune: bool) -> None:
    """Rows of files the resumed scan did not find: kept unchanged (digest and all), or counted as pruned."""
    unseen = resumed.unseen(seen)
    summary.rescanned = sum(resumed.rejected.values())
    summary.rescan_reasons = dict(resumed.rejected)
    if prune:
        summary.pruned = len(unseen)
        return
    if unseen:
        sink(unseen, keep_digest=True)
    for row in unseen:
        summary.add(row)
    summary.kept_unseen = len(unseen)
