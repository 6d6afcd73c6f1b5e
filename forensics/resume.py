"""--resume: which rows of an earlier report a scan may keep instead of scanning the file again. A row is kept only
when it is one this scan would have written: its digest verifies, the same model and settings made it, the file is
unchanged (size, time, sha256), its cells are well-typed and consistent (a label that follows from its score,
threshold and provenance), and a heatmap it needs is where this scan writes them."""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from pathlib import Path

from .heatmap import heatmap_name
from .integrity import digest_holds
from .options import ScanOptions
from .provenance import GENERATIVE
from .report import read_rows, read_unfinished_rows
from .errors import GscanError
from .rows import COLUMNS, mtime_text, unknown_keys
from .runtime import Detector, sha256_file
from .text import path_text

PROVENANCE_KINDS = (None, "generated", "edited-with-ai", "captured")


def earlier_rows(report: Path) -> dict[str, dict]:
    """The report's rows by path, and the rows an interrupted resume left in NAME.partial (newer, so they win)."""
    rows = {row["path"]: row for row in read_rows(report)}
    for row in rows.values():
        extra = unknown_keys(row)
        if extra:  # an edited or foreign report: refused whole (exit 2), never half-carried into the new one
            raise GscanError(f"report {report} has columns gscan does not write ({', '.join(sorted(extra)[:5])}): "
                             "it was edited or is not a gscan report; move it away or use --overwrite")
    rows.update({row["path"]: row for row in read_unfinished_rows(report) if not unknown_keys(row)})
    return rows


def model_hashes(detector: Detector) -> set[str]:
    """What model_sha256 says for rows of this detector: its own hash, or both hashes for rows its fp32 partner
    scored again near the threshold."""
    hashes = {detector.sha256}
    if detector.exact is not None:
        hashes.add(f"{detector.sha256}+{detector.exact.sha256}")
    return hashes


def _number(value, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= high


def cell_problem(row: dict, classes: list[str], binary: bool, threshold: float) -> str | None:
    """Why the row's cells are not ones a scan writes, or None."""
    if row.get("status") == "error":
        ok = isinstance(row.get("error"), str) and row["error"] and row.get("label") is None
        return None if ok else "an error row without its reason, or with a label"
    if row.get("status") != "ok":
        return f"status {str(row.get('status'))[:20]!r}"
    if not (isinstance(row.get("tiles"), int) and not isinstance(row["tiles"], bool) and row["tiles"] >= 1):
        return "tiles is not a whole number of at least 1"
    if not _number(row.get("score"), 0.0, 1.0) or row.get("label") not in classes:
        return "score or label out of range"
    if row.get("coverage") is not None and not _number(row.get("coverage"), 0.0, 1.0):
        return "coverage out of range"
    if row.get("provenance") not in PROVENANCE_KINDS:
        return "an unknown provenance"
    if binary:
        fake = row["score"] >= threshold or row.get("provenance") in GENERATIVE
        if row["label"] != ("fake" if fake else "real"):
            return "a label that does not follow from its score, threshold and provenance"
    if not (isinstance(row.get("sha256"), str) and len(row["sha256"]) == 64):
        return "no sha256"
    return None


class Resume:
    """reuse(path) for an engine, and what the resumed scan found (counts and reasons)."""

    def __init__(self, previous: dict[str, dict], detector: Detector, attributor: Detector | None,
                 options: ScanOptions, key: bytes | None):
        self.previous, self.options, self.key = previous, options, key
        self.card = detector.card
        self.threshold = options.threshold_for(detector.card)
        self.hashes = model_hashes(detector)
        self.settings = options.settings_text(self.threshold, attributor.sha256 if attributor else None)
        self.rejected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reuse(self, path: Path) -> dict | None:
        row = self.previous.get(path_text(path))
        if row is None:
            return None
        problem = self.problem(row, path)
        if problem is None:
            return row
        with self._lock:  # engines ask from their decode threads
            self.rejected[problem] += 1
        return None

    def problem(self, row: dict, path: Path) -> str | None:
        """Why this earlier row cannot stand for the file now, or None. "changed" reasons are the file's; the rest
        say the row is not one this scan would have written."""
        if not digest_holds(self.key, row, COLUMNS):
            return "its digest does not verify (edited, forged, or written without the key)"
        if row.get("model_sha256") not in self.hashes or row.get("scan_settings") != self.settings:
            return "another model or other settings"
        problem = cell_problem(row, self.card.classes, self.card.task == "binary", self.threshold)
        if problem:
            return f"invalid cells: {problem}"
        if self._file_changed(row, path):
            return "the file changed"
        if not self._heatmap_present(row, path):
            return "its heatmap is missing"
        return None

    @staticmethod
    def _file_changed(row: dict, path: Path) -> bool:
        try:
            st = path.stat()
            if row.get("file_size") != st.st_size or row.get("file_mtime") != mtime_text(st.st_mtime):
                return True
            return not row.get("sha256") or sha256_file(path) != row["sha256"]  # a swap with its mtime restored
        except OSError:
            return True

    def _heatmap_present(self, row: dict, path: Path) -> bool:
        """A row that needs a heatmap (this scan writes heatmaps for it) has one, in this scan's folder."""
        options = self.options
        wants = options.wants_cams() and row.get("status") == "ok" and (
            options.cam_for.value == "all" or row.get("label") == "fake")
        if not wants:
            return True
        cam = row.get("cam_path")
        if not isinstance(cam, str) or Path(cam).name != heatmap_name(path, str(row.get("sha256"))):
            return False
        return os.path.realpath(Path(cam).parent) == os.path.realpath(options.cam_dir) and os.path.isfile(cam)

    def unseen(self, seen: set[str]) -> list[dict]:
        """Rows of files this scan did not find (unmounted, moved, deleted), in the earlier report's order."""
        return [row for path, row in self.previous.items() if path not in seen]
