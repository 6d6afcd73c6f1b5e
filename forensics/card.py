"""ModelCard: everything a scan needs to preprocess and judge, stored inside the exported model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError

CARD_METADATA_KEY = "gscan_card"


@dataclass
class TilingPolicy:
    """How an image becomes crops at native resolution: a grid of non-overlapping crops, never a resize."""

    crop: int = 224
    max_tiles: int = 9
    pad_value: float = 0.0  # in normalised units: the mean colour

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"name", "task", "arch", "classes"} - d.keys()
        if missing:
            raise ModelError(f"model card lacks {sorted(missing)}")
        d["tiling"] = TilingPolicy(**d.get("tiling", {}))
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**{k: v for k, v in d.items() if k in known})

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
