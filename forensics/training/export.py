"""Export a training run to ONNX (logits + last feature map), card in the metadata, parity-checked."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from ..card import CARD_METADATA_KEY, ModelCard
from ..errors import ModelError
from ..images import decode_file, find_images
from ..runtime import sha256_file
from ..tiling import extract_tiles
from .models import load_checkpoint
from .static_pads import fold_dynamic_pads

PARITY_TOLERANCE = 1e-4
FP16_RELATIVE_TOLERANCE = 1e-2
OUTPUT_NAMES = ["logits", "features", "cams"]


def has_linear_head(model: torch.nn.Module) -> bool:
    """Global average pooling then one linear layer: Grad-CAM at the last stage is then exact from weights."""
    pool = getattr(model, "global_pool", None)
    return isinstance(model.get_classifier(), torch.nn.Linear) and getattr(pool, "pool_type", "") == "avg"


class LogitsAndFeatures(torch.nn.Module):
    """A timm classifier that also returns its last-stage feature map and per-class Grad-CAM maps.

    With average pooling and a linear head, d logit_c / d A_k = W[c, k] / (h w) at every position, so Grad-CAM's
    map for class c is ReLU(sum_k W[c, k] A_k) / (h w): the `cams` output (before the ReLU), from the same pass.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.with_cams = has_linear_head(model)

    def forward(self, x: torch.Tensor):
        features = self.model.forward_features(x)
        logits = self.model.forward_head(features)
        if not self.with_cams:
            return logits, features
        weight = self.model.get_classifier().weight
        h, w = features.shape[-2:]
        cams = torch.einsum("ck,nkhw->nchw", weight, features) / (h * w)
        return logits, features, cams


def _onnx_bytes(wrapped: LogitsAndFeatures, crop: int) -> bytes:
    dummy = torch.zeros(2, 3, crop, crop)
    names = OUTPUT_NAMES if wrapped.with_cams else OUTPUT_NAMES[:2]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (dummy,), buf, input_names=["input"], output_names=names,
                          dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def _parity_inputs(card: ModelCard, images: list[Path], seed: int = 0) -> np.ndarray:
    """Random tiles plus tiles of real images (from `images`, or the run's validation folder)."""
    rng = np.random.default_rng(seed)
    crop = card.tiling.crop
    batches = [rng.standard_normal((4, 3, crop, crop)).astype(np.float32)]
    for path in images[:4]:
        decoded = decode_file(path)
        if decoded.ok:
            batches.append(extract_tiles(decoded.pixels, card.tiling, card.mean, card.std)[0][:2])
    return np.concatenate(batches)


def _parity_images(card: ModelCard, extra: list[Path]) -> list[Path]:
    if extra:
        return extra
    val_dir = card.training.get("config", {}).get("val_dir")
    if val_dir and Path(val_dir).is_dir():
        found = find_images(Path(val_dir))
        return [p for _, p in zip(range(200), found)][::50]
    return []


def check_parity(model: torch.nn.Module, onnx_path: Path, inputs: np.ndarray, fp16: bool = False) -> float:
    """Max abs difference between ONNX Runtime's and PyTorch's logits; raises above tolerance
    (1e-4 for fp32; for fp16, 1% of the largest |logit|, since half precision keeps about 3 digits)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs)).numpy()
    got = session.run(["logits"], {"input": inputs})[0]
    diff = float(np.abs(got - expected).max())
    limit = FP16_RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max())) if fp16 else PARITY_TOLERANCE
    if not diff <= limit:
        raise ModelError(f"ONNX Runtime{' (fp16)' if fp16 else ''} differs from PyTorch by {diff:.2e} "
                         f"(> {limit:.2g}) on logits: export refused")
    return diff


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and activations in half precision, input and outputs kept float32 (for the CUDA provider).
    Uses the converter that ships inside onnxruntime, so no extra dependency."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=True)


def attach_metrics(card: ModelCard, files: dict[str, Path]) -> None:
    """Copy measured evidence (e.g. `gscan eval` metrics.json, studies/loso.py's table) into card.metrics."""
    for key, path in files.items():
        try:
            card.metrics[key] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot attach {path} as {key}: {exc}") from exc


def export_run(run_dir: Path, out_path: Path, parity_images: list[Path] | None = None,
               companion: str = "", attach: dict[str, Path] | None = None, fp16: bool = False,
               adaptive: tuple[int, float] | None = None) -> ModelCard:
    """Write OUT.onnx (card in its metadata) and OUT.json (card plus the file's sha256). adaptive: the tiling
    policy's (first_tiles, margin), see TilingPolicy."""
    model, card = load_checkpoint(run_dir)
    card.companion = companion or card.companion
    if adaptive is not None:
        card.tiling.first_tiles, card.tiling.margin = adaptive
    attach_metrics(card, attach or {})
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ModelError(f"export target must end in .onnx, not {out_path.name}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    card.name = out_path.stem
    wrapped = LogitsAndFeatures(model).eval()
    card.heatmap = "cams" if wrapped.with_cams else ""
    proto, folded = fold_dynamic_pads(onnx.load_from_string(_onnx_bytes(wrapped, card.tiling.crop)), card.tiling.crop)
    inputs = _parity_inputs(card, _parity_images(card, list(parity_images or [])))
    card.onnx_sha256 = ""
    onnx.helper.set_model_props(proto, {CARD_METADATA_KEY: card.to_json()})
    tmp = out_path.with_suffix(".onnx.tmp")
    onnx.save(proto, str(tmp))
    try:
        card.metrics.setdefault("export", {})["parity_max_abs_logits"] = check_parity(model, tmp, inputs)
        card.metrics["export"]["static_pads"] = folded
        if fp16:
            proto = to_fp16(proto)
            onnx.save(proto, str(tmp))
            card.metrics["export"]["parity_max_abs_logits_fp16"] = check_parity(model, tmp, inputs, fp16=True)
            card.precision = "fp16"
    except ModelError:
        tmp.unlink(missing_ok=True)
        raise
    # The parity figure belongs in the embedded card too, so write the metadata once more.
    onnx.helper.set_model_props(proto, {CARD_METADATA_KEY: card.to_json()})
    onnx.save(proto, str(tmp))
    tmp.replace(out_path)
    card.onnx_sha256 = sha256_file(out_path)
    card.save(out_path.with_suffix(".json"))
    return card


def attach_to_exported(onnx_path: Path, attach: dict[str, Path]) -> ModelCard:
    """Store measured evidence in an exported model's card (its metadata and NAME.json) without re-exporting:
    the graph and weights are kept as they are, the file's sha256 changes and NAME.json names the new one."""
    return _rewrite_exported(Path(onnx_path), lambda proto, card: (proto, attach_metrics(card, attach))[0])


def fold_exported(onnx_path: Path) -> ModelCard:
    """Fold an earlier export's size-dependent pads into constants (static_pads.py): the same function, checked on
    random tiles to 1e-4 against the file as it was; the card is kept, the sha256 renewed."""
    import onnxruntime as ort

    def fold(proto: onnx.ModelProto, card: ModelCard) -> onnx.ModelProto:
        folded, count = fold_dynamic_pads(proto, card.tiling.crop)
        tiles = np.random.default_rng(0).standard_normal((4, 3, card.tiling.crop, card.tiling.crop)).astype(np.float32)
        before, after = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                         .run(["logits"], {"input": tiles})[0] for m in (proto, folded))
        diff = float(np.abs(before - after).max())
        if not diff <= PARITY_TOLERANCE:
            raise ModelError(f"folding the pads changed the logits by {diff:.2e}: not written")
        card.metrics.setdefault("export", {})["static_pads"] = count
        return folded

    return _rewrite_exported(Path(onnx_path), fold)


def _rewrite_exported(onnx_path: Path, change) -> ModelCard:
    """Load an exported model and its card, apply change(proto, card) -> proto, write both back, sha256 renewed."""
    try:
        proto = onnx.load(str(onnx_path))
    except Exception as exc:  # onnx raises its own types for unreadable files
        raise ModelError(f"cannot read ONNX model {onnx_path}: {exc}") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if CARD_METADATA_KEY not in props:
        raise ModelError(f"{onnx_path} carries no gscan model card in its metadata; export it with gscan export")
    side = onnx_path.with_suffix(".json")
    if side.is_file() and ModelCard.load(side).onnx_sha256 not in ("", sha256_file(onnx_path)):
        raise ModelError(f"{onnx_path.name} is not the file its card {side.name} names: refusing to re-sign it")
    card = ModelCard.from_json(props[CARD_METADATA_KEY])
    proto = change(proto, card)
    card.onnx_sha256 = ""
    onnx.helper.set_model_props(proto, {**props, CARD_METADATA_KEY: card.to_json()})
    tmp = onnx_path.with_suffix(".onnx.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(onnx_path)
    card.onnx_sha256 = sha256_file(onnx_path)
    card.save(side)
    return card
