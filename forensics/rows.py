"""The row: the unit of truth of a scan. Its schema (COLUMNS), how a row is built from a decoded image and its
tiles' logits, and the summary counted from rows. Every engine builds rows here and every sink writes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__
from .images import DecodedImage
from .provenance import CAPTURED, GENERATIVE
from .text import path_text

if TYPE_CHECKING:
    from .runtime import Detector

COLUMNS = [
    "path", "status", "error", "sha256", "file_size", "file_mtime", "width", "height", "format",
    "label", "score", "threshold", "tiles", "coverage", "condition", "provenance", "provenance_detail", "generator",
    "generator_score",
    "generator_top3", "notes",
    "cam_class", "cam_path", "cam_max",
    "model", "model_sha256", "attribution_model", "attribution_model_sha256", "scan_settings", "gscan_version",
    "scanned_at", "row_digest",
]
# how cells read back from CSV (all text) are typed again, so that a row read back equals the row written
INT_COLUMNS = ("file_size", "width", "height", "tiles")
FLOAT_COLUMNS = ("score", "threshold", "coverage", "generator_score", "cam_max")
# keys a row may carry for the triage page only (embedded thumbnails), never written to a report
PAGE_KEYS = ("thumb", "large")
RowSink = Callable[[list[dict]], None]
COULD_NOT_TELL_BELOW = 0.5  # a "real" in a condition where the card caught fewer unseen fakes than this is weak


def _condition_figures(decoded: DecodedImage, card) -> dict | None:
    """The card's measured figures for the row's condition (fractions 0-1), or None where it has none."""
    conditions = card.metrics.get("conditions") if isinstance(card.metrics, dict) else None
    figures = conditions.get(decoded.condition.kind) if isinstance(conditions, dict) and decoded.condition else None
    if not isinstance(figures, dict):
        return None
    values = [figures.get(k) for k in ("unseen_caught", "worst_real_fpr")]
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values)
    return figures if ok else None


def condition_cell(decoded: DecodedImage, card) -> str | None:
    """The row's `condition`: how the file reached the scanner, with the card's measured figures for that
    condition on generators and real sources it never saw (card.metrics["conditions"]), where it has them."""
    if decoded.condition is None:
        return None
    figures = _condition_figures(decoded, card)
    if figures is None:
        return decoded.condition.text
    return (f"{decoded.condition.text}; card: {figures['unseen_caught']:.0%} of unseen generators' images caught, "
            f"up to {figures['worst_real_fpr']:.0%} of a real source called fake")


def could_not_tell(decoded: DecodedImage, card) -> str | None:
    """The note of a "real" made in a condition where the card's detector caught few unseen fakes."""
    figures = _condition_figures(decoded, card)
    caught = figures["unseen_caught"] if figures else None
    if caught is None or caught >= COULD_NOT_TELL_BELOW:
        return None
    return (f"could not tell: {decoded.condition.kind}, this model caught {caught:.0%} of the images of generators "
            "it never saw (its card's conditions), so 'real' is weak evidence here")


CAPTURED_BUT_FAKE_NOTE = ("the model calls it fake although its metadata says captured: metadata never clears an "
                          "image (camera EXIF can be copied onto a fake); weigh the model's figures for this source")
PROVENANCE_LABEL_NOTE = "label fake from provenance: the file's metadata or an invisible watermark declares generation"
RESCORED_NOTE = "scored again in fp32: its int8 score lay near the threshold"
NON_FINITE = "the model returned non-finite logits (NaN or infinity) for this image: no verdict"


def unknown_keys(row: dict) -> set[str]:
    """Keys of row that are in neither the schema nor PAGE_KEYS: a bug, which writers refuse."""
    return set(row) - set(COLUMNS) - set(PAGE_KEYS)


def mtime_text(mtime: float) -> str:
    """A file's modification time as the report records it (UTC, microseconds): compared as text on resume."""
    return datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(timespec="microseconds")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def image_probabilities(tile_logits: np.ndarray) -> np.ndarray:
    """One image's class probabilities: its tiles' logits averaged (in float64, so that finite tile logits near
    float32's limit cannot overflow into infinity when summed), then softmax; NaN where even that is not finite."""
    with np.errstate(all="ignore"):
        return softmax(tile_logits.astype(np.float64).mean(axis=0))


# error rows of files that are not images at all; every other error row is an image that could not be scored,
# which a moderation job (--fail-on-fake) must not take for a clean one
NOT_AN_IMAGE = ("not a recognised image", "empty file", "not a regular file")


def unscored_image(row: dict) -> bool:
    """An error row of a file that is, or may be, an image: decoding failed, it was too large, unsupported, ..."""
    reason = str(row.get("error") or "")
    return row.get("status") == "error" and (not reason.startswith(NOT_AN_IMAGE) or "signature but" in reason)


def error_kind(reason: str) -> str:
    """The short kind of an error reason, for counts (`corrupt PNG data`, `unsupported format`, `over --max-pixels`)."""
    for flag in ("--max-pixels", "--max-file-size"):
        if f"more than {flag}" in reason:
            return f"over {flag}"
    return reason.split(":", 1)[0].split(" (", 1)[0][:60]


@dataclass
class ScanSummary:
    files: int = 0
    real: int = 0
    fake: int = 0
    errors: int = 0
    unscored: int = 0  # of the errors, files that are (or may be) images: unscored_image()
    unscored_kinds: dict[str, int] = field(default_factory=dict)
    tiles: int = 0
    reused: int = 0  # rows taken from the report being resumed
    declared: int = 0  # rows whose metadata declares generation (labelled fake whatever the score)
    from_provenance: int = 0  # of those, rows the model alone would have called real
    provenance_read: bool = True  # False with --provenance off
    signed: bool = True  # rows carry a row_digest (a report key was at hand)
    heatmaps: int = 0  # heatmap PNGs written
    heatmap_failures: int = 0  # rows whose heatmap could not be written (a full disk): the CLI exits 2
    heatmap_failure: str = ""  # the first reason
    signer: str = ""  # sha256 of the Ed25519 public key whose private half signed the report's seal
    rescanned: int = 0  # rows of the resumed report not reused: they failed a check (rescan_reasons says which)
    rescan_reasons: dict[str, int] = field(default_factory=dict)
    kept_unseen: int = 0  # rows of the resumed report whose files were not found now, kept as they were
    pruned: int = 0  # such rows dropped with --prune
    seconds: float = 0.0
    device: str = "cpu"
    threshold: float = 0.5
    model: str = ""
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict) -> None:
        """Count one finished row."""
        self.files += 1
        self.tiles += row["tiles"] if isinstance(row.get("tiles"), int) else 0
        if row["status"] == "error":
            self.errors += 1
            if unscored_image(row):
                self.unscored += 1
                kind = error_kind(str(row.get("error") or ""))
                self.unscored_kinds[kind] = self.unscored_kinds.get(kind, 0) + 1
        else:
            self.labels[row["label"]] = self.labels.get(row["label"], 0) + 1
        self.heatmaps += bool(row.get("cam_path"))
        if "heatmap failed: " in (row.get("notes") or ""):
            self.heatmap_failures += 1
            self.heatmap_failure = self.heatmap_failure or row["notes"].split("heatmap failed: ", 1)[1][:120]
        if row.get("provenance") in GENERATIVE:
            self.declared += 1
            self.from_provenance += PROVENANCE_LABEL_NOTE in (row.get("notes") or "")
        self.real, self.fake = self.labels.get("real", 0), self.labels.get("fake", 0)

    @property
    def images_per_second(self) -> float:
        """Images scored per second: rows reused by --resume cost nothing and are not counted."""
        scanned = self.files - self.reused
        return scanned / self.seconds if self.seconds > 0 else 0.0


def _provenance_cells(provenance) -> dict:
    if provenance is None:
        return {"provenance": None, "provenance_detail": None}
    return {"provenance": provenance.kind or None, "provenance_detail": provenance.detail or None}


class RowBuilder:
    """Turns prepared images and their logits into report rows with chain-of-custody fields."""

    def __init__(self, detector: Detector, threshold: float, settings: str = ""):
        self.detector, self.threshold = detector, threshold
        self.common = {"model": detector.card.name, "model_sha256": detector.sha256, "gscan_version": __version__,
                       "threshold": threshold, "scan_settings": settings}

    def base(self, decoded: DecodedImage) -> dict:
        """Every column of the schema, in its order; what is not known yet is None."""
        return {**dict.fromkeys(COLUMNS), "path": path_text(decoded.path), "sha256": decoded.sha256 or None,
                "file_size": decoded.file_size or None,
                "file_mtime": mtime_text(decoded.mtime) if decoded.mtime else None, "width": decoded.width or None,
                "height": decoded.height or None, "format": decoded.format or None,
                "notes": "; ".join(decoded.notes) or None, "label": None,
                "condition": condition_cell(decoded, self.detector.card),
                "score": None, "tiles": None, **_provenance_cells(decoded.provenance),
                "cam_class": None, "cam_path": None, "cam_max": None,
                **self.common, "scanned_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def error(self, decoded: DecodedImage, reason: str | None = None) -> dict:
        return {**self.base(decoded), "status": "error", "error": reason or decoded.error}

    def scored(self, decoded: DecodedImage, tile_logits: np.ndarray,
               rescored: bool = False) -> tuple[dict, int | None]:
        """The row and the index of the class it settles on (the class a heatmap explains); an error row and None
        when the model's logits for the image are not finite (a broken model's NaN is never a "real").
        rescored: the fp32 partner of an int8 model scored the image again near the threshold; the row names both
        models' sha256 (`int8+fp32`), since both shaped its score."""
        probs = image_probabilities(tile_logits)
        if not (np.isfinite(tile_logits).all() and np.isfinite(probs).all()):  # the pooled score is checked too
            return self.error(decoded, NON_FINITE), None
        card = self.detector.card
        row = {**self.base(decoded), "status": "ok", "error": None, "tiles": int(len(tile_logits))}
        if rescored and self.detector.exact is not None:
            row["model_sha256"] = f"{self.detector.sha256}+{self.detector.exact.sha256}"
            row["notes"] = "; ".join(filter(None, [row["notes"], RESCORED_NOTE]))
        if card.task == "binary":
            score = float(probs[card.positive_index])
            row.update(score=score, label="fake" if score >= self.threshold else "real")
            if row["label"] == "real" and row["provenance"] in GENERATIVE:
                # metadata may add suspicion, never clear an image: `score` stays the model's own figure
                row.update(label="fake", notes="; ".join(filter(None, [row["notes"], PROVENANCE_LABEL_NOTE])))
            elif row["label"] == "fake" and row["provenance"] == CAPTURED:
                row["notes"] = "; ".join(filter(None, [row["notes"], CAPTURED_BUT_FAKE_NOTE]))
            if row["label"] == "real":
                row["notes"] = "; ".join(filter(None, [row["notes"], could_not_tell(decoded, card)])) or None
        else:
            top = int(probs.argmax())
            row.update(score=float(probs[top]), label=card.classes[top])
        return row, card.classes.index(row["label"])
