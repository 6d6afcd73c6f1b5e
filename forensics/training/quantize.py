"""An int8 variant of an exported model for the CPU provider: ONNX Runtime's static quantization, written as
NAME.int8.onnx beside NAME.onnx. A scan on the CPU picks it when it is there (runtime.cpu_variant), and scores the
images whose int8 score lies near the threshold again with NAME.onnx (forensics/scoring.py).

The recipe, measured on 1,204 images of faces/val and wild/ against the shipped fp32 model (docs/RESULTS.md,
"int8 parity"; docs/CHANGES.md, change 30): QDQ, per-channel int8 weights, asymmetric uint8 activations (ONNX Runtime's
fast U8S8 path on x86: symmetric int8 activations ran at 0.8x of fp32 and flipped more labels), MinMax
calibration, the stem convolution kept in fp32 (its input is the pixels themselves: their 256 levels survive
exactly), the size-dependent pads folded first. int8 alone still flips 3% of the labels at JPEG q75, which is why
the card carries a rescore_margin: the largest int8 error in log-odds seen on the calibration images near the
threshold, rounded up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..card import CARD_METADATA_KEY, ModelCard
from ..errors import ModelError
from ..images import decode_file, find_images
from ..perturb import parse_perturbation
from ..scoring import log_odds, threshold_log_odds
from ..runtime import Detector, int8_path, sha256_file
from .static_pads import fold_dynamic_pads

CALIBRATION_BATCH = 16
NEAR = 6.0  # log-odds from the threshold's within which the int8 error is measured for the margin
MIN_NEAR = 20


def calibration_images(detector: Detector, folders: list[Path], images: int, seed: int = 0,
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image, the tiles of up to `images` files drawn at random from the folders, cut as a scan cuts them:
    as stored, and re-encoded to JPEG q75."""
    files = sorted(p for folder in folders for p in find_images(Path(folder)))
    if not files:
        raise ModelError(f"no images to calibrate on in {', '.join(map(str, folders))}")
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in sorted(rng.choice(len(files), min(images, len(files)), replace=False))]
    q75, cut = parse_perturbation("jpeg:75"), detector.preprocessing.tiles
    stored, compressed = [], []
    for decoded in map(decode_file, chosen):  # tiles cut as each image decodes: no 160 full images in memory
        if decoded.ok:
            stored.append(cut(decoded.pixels)[0])
            compressed.append(cut(q75(decoded.pixels))[0])
    if not stored:
        raise ModelError("none of the images chosen for calibration could be decoded")
    return stored, compressed


def _whole_batches(tiles: np.ndarray) -> np.ndarray:
    return tiles[: len(tiles) // CALIBRATION_BATCH * CALIBRATION_BATCH] if len(tiles) >= CALIBRATION_BATCH else tiles


def quantize_exported(onnx_path: Path, calibration: list[Path], images: int = 160,
                      rescore_margin: float | None = None) -> ModelCard:
    """Write NAME.int8.onnx and NAME.int8.json beside NAME.onnx; the card records how it was made, its measured
    int8 error and the rescore_margin (None: from that error; 0: int8 alone)."""
    onnx_path = Path(onnx_path)
    detector = Detector(onnx_path, device="cpu")
    if detector.card.precision != "fp32":
        raise ModelError(f"{onnx_path.name} is {detector.card.precision}: quantize the fp32 export")
    stored, q75 = calibration_images(detector, calibration, images)
    tiles = _whole_batches(np.concatenate(stored))  # ranges from the images as stored (q75 ones widened them)
    out = int8_path(onnx_path)
    with tempfile.TemporaryDirectory() as tmp:
        proto = _quantized(detector, tiles, Path(tmp))
        onnx.save(proto, str(Path(tmp) / "int8.onnx"))
        error = int8_error(detector, Path(tmp) / "int8.onnx", stored + q75)
    card = detector.card
    card.precision = "int8"
    card.rescore_margin = margin_for(error) if rescore_margin is None else float(rescore_margin)
    card.onnx_sha256 = ""
    card.metrics["int8"] = {"method": "ONNX Runtime static quantization: QDQ, per-channel int8 weights, asymmetric "
                                      "uint8 activations, MinMax calibration, stem convolution in fp32",
                            "calibration": f"{len(tiles)} tiles of {len(stored)} images from "
                                           f"{', '.join(map(str, calibration))}",
                            "log_odds_error": error,
                            "rescore_margin": f"largest log-odds error of the calibration images (as stored and at "
                                              f"JPEG q75) within {NEAR:g} of the threshold, rounded up to 0.25"
                                              if rescore_margin is None else "given",
                            "fp32_sha256": detector.sha256}
    onnx.helper.set_model_props(proto, {CARD_METADATA_KEY: card.to_json()})
    tmp_out = out.with_suffix(".tmp")
    onnx.save(proto, str(tmp_out))
    tmp_out.replace(out)
    card.onnx_sha256 = sha256_file(out)
    card.save(out.with_suffix(".json"))
    return card


def _quantized(detector: Detector, tiles: np.ndarray, tmp: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(tiles[i:i + CALIBRATION_BATCH] for i in range(0, len(tiles), CALIBRATION_BATCH))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    folded, _ = fold_dynamic_pads(onnx.load(str(detector.path)), detector.card.tiling.crop)
    onnx.save(folded, str(tmp / "folded.onnx"))
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(tmp / "folded.onnx"), str(prepared), skip_symbolic_shape=True)
    stem = next(n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv")
    quantize_static(str(prepared), str(tmp / "quantized.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=[stem])
    return onnx.load(str(tmp / "quantized.onnx"))


def int8_error(detector: Detector, int8_file: Path, per_image: list[np.ndarray]) -> dict[str, float]:
    """|int8 - fp32| of each image's mean log-odds (calibration_images' tiles, as stored and at q75): overall,
    and over the images whose fp32 log-odds lie within NEAR of the threshold's, the only ones int8 can flip (the
    error grows with the logits' size: about 7% of them as stored, 11% at q75, on the shipped model)."""
    variant = Detector(int8_file, device="cpu")
    positive = detector.card.positive_index
    exact = np.array([log_odds(detector.run(t)[0], positive) for t in per_image])
    errors = np.abs(np.array([log_odds(variant.run(t)[0], positive) for t in per_image]) - exact)
    near = np.abs(exact - threshold_log_odds(detector.card.threshold)) < NEAR
    return {"images": len(errors), "max": float(errors.max()), "mean": float(errors.mean()),
            "near_threshold": int(near.sum()), "max_near_threshold": float(errors[near].max()) if near.any() else 0.0}


def margin_for(error: dict[str, float]) -> float:
    """The largest error near the threshold, rounded up to 0.25 (an image further out than that from the threshold
    in int8 keeps its label in fp32)."""
    if error["near_threshold"] < MIN_NEAR:
        raise ModelError(f"only {error['near_threshold']} calibration images score within {NEAR} log-odds of the "
                         f"threshold: too few to measure the int8 error there; run gscan quantize with more images "
                         "(--images) or a --rescore-margin of your own")
    return float(np.ceil(error["max_near_threshold"] * 4) / 4)
