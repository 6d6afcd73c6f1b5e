"""Fixed input front-ends that isolate upsampling traces before the backbone sees the pixels.

A front-end is a forward pre-hook on the network's first convolution, so the weights keep timm's names and
shapes (ImageNet weights still load), Grad-CAM and `feature_info` still work, and ONNX export traces it into the
graph: a scan needs nothing beyond the exported file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ModelError

FRONT_ENDS = ("rgb", "npr")


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """NPR (Tan et al., CVPR 2024): x - up(down(x)), nearest neighbour, factor 2. Zero on flat content; what is
    left is how each pixel differs from its 2x2 neighbours, where a generator's upsampling leaves its trace."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(down, size=x.shape[-2:], mode="nearest")  # odd sizes (Xception's 299) too


_TRANSFORMS = {"npr": npr_residual}


def first_conv(model: torch.nn.Module) -> torch.nn.Module | None:
    """The network's first convolution, as timm's config names it; None when it names none."""
    name = model.pretrained_cfg.get("first_conv") if hasattr(model, "pretrained_cfg") else None
    return model.get_submodule(name) if name else None


def apply_front_end(model: torch.nn.Module, front_end: str) -> torch.nn.Module:
    """Make `model` see front_end(x) instead of x; "rgb" leaves it unchanged."""
    if front_end not in FRONT_ENDS:
        raise ModelError(f"unknown front-end {front_end!r}: use one of {', '.join(FRONT_ENDS)}")
    if front_end == "rgb":
        return model
    first = first_conv(model)
    if first is None:
        raise ModelError(f"{type(model).__name__} names no first convolution; front-end {front_end} needs one")
    transform = _TRANSFORMS[front_end]
    first.register_forward_pre_hook(lambda _module, args: (transform(args[0]), *args[1:]))
    return model
