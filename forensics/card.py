"""ModelCard: everything a scan needs to preprocess and judge, stored inside the exported model."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .text import visible

CARD_METADATA_KEY = "gscan_card"
MAX_CROP = 1024  # a larger crop costs gigabytes per batch for no gain: the study's images are 1024 px
CARD_SCHEMA_VERSION = 1  # cards without the field are version 1; a newer one is refused, not half-read
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a model name: never a path
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class TilingPolicy:
    """How an image becomes crops at native resolution: a grid of non-overlapping crops, never a resize."""

    crop: int = 224
    max_tiles: int = 9
    pad_value: float = 0.0  # in normalised units: the mean colour
    # adaptive tiling: score the first `first_tiles` (spread over the image) and the rest only when the image's
    # mean logit margin lies within `margin` of the threshold's; 0 scores every tile (binary models only)
    first_tiles: int = 0
    margin: float = 0.0


@dataclass
class ModelCard:
    """A detector's preprocessing, classes, threshold and measured quality."""

    name: str
    task: str  # "binary" or "attribution"
    arch: str
    classes: list[str]
    tiling: TilingPolicy = field(default_factory=TilingPolicy)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    threshold: float = 0.5
    threshold_method: str = "default 0.5: not calibrated"
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    gscan_version: str = ""
    notes: list[str] = field(default_factory=list)
    onnx_sha256: str = ""  # of the .onnx file; lives only in the JSON beside it
    companion: str = ""  # an attribution model to run on images called fake
    heatmap: str = ""  # name of the ONNX output holding per-class Grad-CAM maps, "" if the head has none
    precision: str = "fp32"  # of the exported weights; fp16 models keep float32 input and outputs
    front_end: str = "rgb"  # fixed transform inside the network before its first convolution (e.g. npr)
    stem_stride: int = 0  # stride of the first convolution; 0: the architecture's own
    # int8 variants: images whose mean log-odds lie within this of the threshold's are scored again by the fp32
    # model they were quantized from (NAME.onnx beside NAME.int8.onnx), so int8 error cannot flip a verdict
    rescore_margin: float = 0.0
    # attribution cards: when a fake is "unknown" (studies/open_set.py): rule, features output, threshold, centroids
    open_set: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA_VERSION

    @property
    def positive_index(self) -> int:
        """Index of the class whose probability is the score (`fake` for binary models)."""
        if self.task == "binary":
            return self.classes.index("fake")
        return 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        """A card from its JSON form, validated: a card with a bad field is refused (ModelError), since every
        row of a scan would follow it."""
        if not isinstance(d, dict):
            raise ModelError("model card is not a JSON object")
        problems = validate_card(d)
        if problems:
            raise ModelError("invalid model card: " + "; ".join(problems))
        d = dict(d)
        d["tiling"] = TilingPolicy(**d.get("tiling", {}))
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelError(f"model card is not valid JSON: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        try:
            return cls.from_json(Path(path).read_text())
        except OSError as exc:
            raise ModelError(f"cannot read model card {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short_text(value: Any, limit: int = 200) -> bool:
    """A short name with nothing a terminal would run: no control or bidi characters."""
    return isinstance(value, str) and len(value) <= limit and visible(value) == value


def _open_set_problems(d: dict[str, Any]) -> list[str]:
    rule = d.get("open_set") or {}
    if not rule:
        return []
    classes = d.get("classes") or []
    cents = rule.get("centroids") if isinstance(rule, dict) else None
    ok = (isinstance(rule, dict) and rule.get("rule") == "cosine-to-centroid" and _short_text(rule.get("features"))
          and _number(rule.get("threshold")) and -1 <= rule["threshold"] <= 1 and isinstance(cents, list)
          and len(cents) == len(classes) and cents and all(isinstance(c, list) and len(c) == len(cents[0])
                                                         and all(_number(x) for x in c) for c in cents))
    return [] if ok else ["open_set must hold rule cosine-to-centroid, a features output, a threshold from -1 to 1 "
                          "and one centroid per class"]


def validate_card(d: dict[str, Any]) -> list[str]:
    """Every way d is not a card this gscan can scan with, in words; empty for a sound card."""
    known = {f.name for f in dataclasses.fields(ModelCard)}
    problems = [f"unknown field {k!r}" for k in sorted(set(d) - known)]
    problems += [f"missing {k!r}" for k in ("name", "task", "arch", "classes") if k not in d]
    version = d.get("schema_version", 1)
    if not _int_in(version, 1, CARD_SCHEMA_VERSION):
        problems.append(f"schema_version {version!r}: this gscan reads versions up to {CARD_SCHEMA_VERSION}")
    if "name" in d and not (_short_text(d["name"]) and d["name"].strip()):
        problems.append("name must be a non-empty text of at most 200 characters")
    if "task" in d and d["task"] not in ("binary", "attribution"):
        problems.append(f"task must be binary or attribution, not {d['task']!r:.40}")
    if "arch" in d and not _short_text(d["arch"]):
        problems.append("arch must be a text of at most 200 characters")
    classes = d.get("classes")
    if "classes" in d and not (isinstance(classes, list) and 2 <= len(classes) <= 1000
                               and all(_short_text(c) and c for c in classes) and len(set(classes)) == len(classes)):
        problems.append("classes must be 2 to 1000 distinct, non-empty names")
    elif d.get("task") == "binary" and classes is not None and set(classes) != {"real", "fake"}:
        problems.append("a binary card's classes are real and fake")
    tiling = d.get("tiling", {})
    if not (isinstance(tiling, dict) and set(tiling) <= {"crop", "max_tiles", "pad_value", "first_tiles", "margin"}
            and _int_in(tiling.get("crop", 224), 8, MAX_CROP) and _int_in(tiling.get("max_tiles", 9), 1, 1024)
            and _number(tiling.get("pad_value", 0.0)) and _int_in(tiling.get("first_tiles", 0), 0, 1024)
            and _number(tiling.get("margin", 0.0)) and tiling.get("margin", 0.0) >= 0):
        problems.append(f"tiling must hold crop 8-{MAX_CROP}, max_tiles 1-1024, a finite pad_value, first_tiles 0-1024 "
                        "and a margin of 0 or more")
    for key in ("mean", "std"):
        v = d.get(key, (0.5, 0.5, 0.5))
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(x) for x in v)
                and (key == "mean" or all(x > 0 for x in v))):
            problems.append(f"{key} must be three finite numbers" + (", each above 0" if key == "std" else ""))
    threshold = d.get("threshold", 0.5)
    if not (_number(threshold) and 0.0 <= threshold <= 1.0):
        problems.append(f"threshold must be a number from 0 to 1, not {threshold!r:.40}")
    if d.get("companion") and not (isinstance(d["companion"], str) and _NAME.fullmatch(d["companion"])):
        problems.append("companion must be a model name (letters, digits, . _ -), never a path")
    if d.get("onnx_sha256") and not (isinstance(d["onnx_sha256"], str) and _SHA256.fullmatch(d["onnx_sha256"])):
        problems.append("onnx_sha256 must be 64 lowercase hex digits")
    checks = {"precision": ("fp32", "fp16", "int8"), "front_end": ("rgb", "npr")}
    problems += [f"{k} must be one of {', '.join(v)}" for k, v in checks.items() if d.get(k, v[0]) not in v]
    if not _int_in(d.get("stem_stride", 0), 0, 8):
        problems.append("stem_stride must be 0-8")
    margin = d.get("rescore_margin", 0.0)
    if not (_number(margin) and 0 <= margin <= 100):
        problems.append("rescore_margin must be a number from 0 to 100 (log-odds)")
    elif margin and d.get("precision") != "int8":
        problems.append("only an int8 variant has a rescore_margin (the fp32 model it falls back to)")
    problems += _open_set_problems(d)
    for key, kind in (("metrics", dict), ("training", dict), ("notes", list), ("threshold_method", str),
                      ("created", str), ("gscan_version", str), ("heatmap", str)):
        if key in d and not isinstance(d[key], kind):
            problems.append(f"{key} must be a {kind.__name__}")
    return problems


def worst_source(card: ModelCard) -> tuple[str, str, float] | None:
    """The card's lowest per-source ROC-AUC (a source against the other class), as stored or at JPEG q75:
    (condition, source, value), or None when the card measured none."""
    found = []
    for condition in ("val", "val_jpeg75"):
        for source, row in (card.metrics.get(condition, {}).get("per_source") or {}).items():
            value = row.get("roc_auc_vs_other_class") if isinstance(row, dict) else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                found.append((value, condition, source))
    if not found:
        return None
    value, condition, source = min(found)
    return condition, source, float(value)


def quality_warnings(card: ModelCard) -> list[str]:
    """What the card's own measurements say against trusting the model: below-chance ROC-AUC, a saturated
    threshold (every image on one side), a source it ranks backwards."""
    warnings = []
    for condition in ("val", "val_jpeg75"):
        auc = card.metrics.get(condition, {}).get("roc_auc")
        if isinstance(auc, (int, float)) and auc < 0.5:
            warnings.append(f"{card.name}'s card measures ROC-AUC {auc:.2f} ({condition}): below chance")
    if card.task == "binary" and not 1e-4 < card.threshold < 1 - 1e-4:
        warnings.append(f"{card.name}'s threshold {card.threshold:.4f} is saturated: nearly every image falls on "
                        "one side of it")
    worst = worst_source(card)
    if worst and worst[2] < 0.5:
        warnings.append(f"{card.name} ranks {worst[1]} backwards ({worst[0]} ROC-AUC {worst[2]:.2f})")
    return warnings
