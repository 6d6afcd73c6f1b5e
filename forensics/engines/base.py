"""The one interface every scan engine offers a session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Protocol

from ..rows import RowSink, ScanSummary

# what an engine may support beyond scoring: heatmap PNGs, the triage page's thumbnails, an attribution model
# on the fakes, reusing an earlier report's rows, and every tile of an image (--tiles all: no fixed tile count)
CAPABILITIES = frozenset({"heatmaps", "previews", "attribution", "resume", "all-tiles"})


class Engine(Protocol):
    name: str
    supports: set[str]  # a subset of CAPABILITIES

    def scan(self, paths: Iterable[Path], sink: RowSink,
             reuse: Callable[[Path], dict | None] | None = None) -> ScanSummary:
        """Score every path and hand its row to sink, in input order; reuse(path) may supply an earlier row."""
