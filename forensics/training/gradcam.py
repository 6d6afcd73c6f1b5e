"""Exact Grad-CAM (and friends) at any layer of a PyTorch checkpoint, through the grad-cam library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..card import ModelCard
from ..heatmap import overlay
from ..errors import GscanError
from ..images import decode_file
from ..tiling import normalise
from .models import load_checkpoint
from .plots import pyplot

MAX_SIDE = 1024  # larger images are centre-cropped at native resolution, never resized


def cam_methods() -> dict[str, type]:
    from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM)

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "hirescam": HiResCAM,
            "layercam": LayerCAM, "eigencam": EigenCAM, "scorecam": ScoreCAM}


def stage_layers(model: torch.nn.Module) -> list[str]:
    """Layers to show for `--all-layers`: every block of Xception (as in the study's figure), else timm's stages."""
    names = [n for n, _ in model.named_children() if n.startswith("block")]
    if len(names) < 4:
        names = [info["module"] for info in model.feature_info]
    last = default_layer(model)
    return names if last in names else names + [last]


def default_layer(model: torch.nn.Module) -> str:
    """The layer whose output is forward_features' (what the scan's heatmaps explain)."""
    if hasattr(model, "conv_head") and hasattr(model, "bn2"):  # EfficientNet family: head conv after the stages
        return "bn2"
    return model.feature_info[-1]["module"]


def _input_tensor(path: Path, card: ModelCard) -> tuple[torch.Tensor, np.ndarray]:
    decoded = decode_file(path)
    if not decoded.ok:
        raise GscanError(f"cannot read {path}: {decoded.error}")
    pixels = decoded.pixels
    h, w = pixels.shape[:2]
    y, x = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
    pixels = pixels[y:y + MAX_SIDE, x:x + MAX_SIDE]
    return torch.from_numpy(normalise(pixels, card.mean, card.std))[None], pixels


@dataclass
class CamResult:
    image: Path
    target: str
    layers: list[str]
    maps: list[np.ndarray]  # one (H, W) map in 0..1 per layer
    out: Path


class Explainer:
    """One model and one CAM object per layer, reused across images; one target per image."""

    def __init__(self, run_dir: Path, layer: str | None = None, all_layers: bool = False, method: str = "gradcam"):
        self.model, self.card = load_checkpoint(run_dir)
        methods = cam_methods()
        if method not in methods:
            raise GscanError(f"unknown CAM method {method!r}: use one of {', '.join(methods)}")
        self.layers = stage_layers(self.model) if all_layers else [layer or default_layer(self.model)]
        modules = []
        for name in self.layers:
            try:
                modules.append(self.model.get_submodule(name))
            except AttributeError:
                raise GscanError(f"{self.card.arch} has no layer {name!r}; stages: {stage_layers(self.model)}") from None
        self.cams = [methods[method](model=self.model, target_layers=[m]) for m in modules]

    def target_index(self, x: torch.Tensor, target: str | None) -> int:
        if target is None:
            with torch.no_grad():
                return int(self.model(x).argmax(1))
        if target not in self.card.classes:
            raise GscanError(f"unknown target {target!r}: classes are {self.card.classes}")
        return self.card.classes.index(target)

    def maps(self, x: torch.Tensor, index: int) -> list[np.ndarray]:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return [cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0] for cam in self.cams]

    def explain(self, image: Path, out: Path, target: str | None = None) -> CamResult:
        x, pixels = _input_tensor(image, self.card)
        index = self.target_index(x, target)
        maps = self.maps(x, index)
        out.parent.mkdir(parents=True, exist_ok=True)
        if len(maps) == 1:
            from PIL import Image

            Image.fromarray(overlay(pixels, maps[0])).save(out)
        else:
            _grid_png(pixels, maps, self.layers, self.card.classes[index], out)
        return CamResult(image, self.card.classes[index], self.layers, maps, out)


def _grid_png(pixels: np.ndarray, maps: list[np.ndarray], layers: list[str], target: str, out: Path) -> None:
    plt = pyplot()

    cols = min(5, len(maps) + 1)
    rows = -(-(len(maps) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(pixels)
    axes.flat[0].set_title("input", fontsize=9)
    for ax, heat, name in zip(list(axes.flat)[1:], maps, layers):
        ax.imshow(overlay(pixels, heat))
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"Grad-CAM for class '{target}', layer by layer")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def explain_images(run_dir: Path, images: list[Path], out: Path, layer: str | None = None, all_layers: bool = False,
                   target: str | None = None, method: str = "gradcam") -> list[CamResult]:
    """Write one PNG per image: OUT itself for one image, OUT/<sha256>.png for several."""
    from ..runtime import sha256_file

    explainer = Explainer(run_dir, layer, all_layers, method)
    if len(images) == 1 and out.suffix.lower() == ".png":
        return [explainer.explain(images[0], out, target)]
    return [explainer.explain(img, out / f"{sha256_file(img)}.png", target) for img in images]
