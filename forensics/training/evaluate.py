"""Per-image scoring of labelled folders, metrics (overall, per source, per resolution) and plots."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from ..card import ModelCard
from ..errors import DataError
from ..images import decode_file
from ..rows import softmax
from ..perturb import Perturbation
from ..tiling import extract_tiles
from .data import Sample
from .plots import pyplot

# per image, N x 3 x H x W float32 tiles -> the logits of the tiles scored (all of them, or fewer under a card's
# adaptive tiling)
Predict = Callable[[list[np.ndarray]], list[np.ndarray]]


def _tiles_for(sample: Sample, card: ModelCard, perturb: Perturbation | None) -> tuple[np.ndarray, tuple[int, int]]:
    decoded = decode_file(sample.path)
    if not decoded.ok:
        raise DataError(f"cannot evaluate {sample.path}: {decoded.error}")
    pixels = decoded.pixels if perturb is None else perturb(decoded.pixels)
    tiles, _ = extract_tiles(pixels, card.tiling, card.mean, card.std)
    return tiles, pixels.shape[:2]


def score_samples(samples: list[Sample], predict: Predict, card: ModelCard, perturb: Perturbation | None = None,
                  batch_tiles: int = 64, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-image class probabilities (tile logits averaged, as a scan does) and each image's (h, w)."""
    probs = np.zeros((len(samples), len(card.classes)), dtype=np.float64)
    sizes = np.zeros((len(samples), 2), dtype=np.int64)
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        for (index, _), logits in zip(pending, predict([t for _, t in pending])):
            probs[index] = softmax(logits.mean(axis=0, keepdims=True))[0]
        pending.clear()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda s: _tiles_for(s, card, perturb), samples)
        for index, (tiles, size) in enumerate(results):
            sizes[index] = size
            pending.append((index, tiles))
            if sum(len(t) for _, t in pending) >= batch_tiles:
                flush()
    if pending:
        flush()
    return probs, sizes


def choose_threshold(scores: np.ndarray, is_real: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold at which at most target_fpr of the reals score >= it."""
    real = np.sort(scores[is_real])[::-1]
    if len(real) == 0:
        return 0.5
    allowed = int(np.floor(target_fpr * len(real)))
    if allowed >= len(real):
        return 0.0
    return float(min(1.0, np.nextafter(real[allowed], np.inf)))


def _tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= fpr_target].max()) if np.any(fpr <= fpr_target) else 0.0


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """scores: probability of fake; labels: 1 for fake."""
    pred = (scores >= threshold).astype(int)
    out = {"n": int(len(labels)), "threshold": float(threshold),
           "accuracy": float((pred == labels).mean()) if len(labels) else float("nan")}
    tp, fn = int(((pred == 1) & (labels == 1)).sum()), int(((pred == 0) & (labels == 1)).sum())
    tn, fp = int(((pred == 0) & (labels == 0)).sum()), int(((pred == 1) & (labels == 0)).sum())
    out["tpr"] = tp / (tp + fn) if tp + fn else float("nan")
    out["fpr"] = fp / (fp + tn) if fp + tn else float("nan")
    out["confusion_matrix"] = [[tn, fp], [fn, tp]]
    if len(set(labels.tolist())) == 2:
        out["balanced_accuracy"] = (out["tpr"] + (1 - out["fpr"])) / 2
        out["roc_auc"] = float(roc_auc_score(labels, scores))
        out["average_precision"] = float(average_precision_score(labels, scores))
        out["tpr_at_1pct_fpr"] = _tpr_at_fpr(labels, scores, 0.01)
        out["tpr_at_5pct_fpr"] = _tpr_at_fpr(labels, scores, 0.05)
    return out


def calibration(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of the fake probability over equal-width bins, and the bins themselves."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        confidence, observed = float(scores[mask].mean()), float(labels[mask].mean())
        ece += mask.mean() * abs(confidence - observed)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(mask.sum()),
                      "mean_score": confidence, "fraction_fake": observed})
    return {"ece": float(ece), "bins": table}


def attribution_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(labels, pred, labels=list(range(len(classes))))
    recall = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i, c in enumerate(classes)}
    return {"n": int(len(labels)), "accuracy": float((pred == labels).mean()),
            "balanced_accuracy": float(np.nanmean(list(recall.values()))),
            "per_class_recall": recall, "confusion_matrix": cm.tolist()}


RESOLUTION_BANDS = ((0, 256, "<=256px"), (257, 700, "257-700px"), (701, 10**9, ">700px"))


def _band(size: np.ndarray) -> str:
    side = int(size.max())
    return next(name for lo, hi, name in RESOLUTION_BANDS if lo <= side <= hi)


def breakdown(groups: Iterable[str], scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Per group: n, mean score, and the rate called fake (FPR for real groups, TPR for fake ones);
    plus, for each group, ROC-AUC of that group against every image of the other class."""
    groups = np.asarray(list(groups))
    out = {}
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        label = int(labels[mask][0]) if np.all(labels[mask] == labels[mask][0]) else None
        called_fake = float((scores[mask] >= threshold).mean())
        row = {"n": int(mask.sum()), "mean_score": float(scores[mask].mean()), "called_fake": called_fake}
        if label is not None:
            row["rate"] = "fpr" if label == 0 else "tpr"
            other = labels != label
            if other.any():
                sel = mask | other
                row["roc_auc_vs_other_class"] = float(roc_auc_score(labels[sel], scores[sel]))
        out[g] = row
    return out


def evaluate_binary(samples: list[Sample], probs: np.ndarray, sizes: np.ndarray, card: ModelCard) -> dict:
    scores = probs[:, card.positive_index]
    labels = np.array([s.label for s in samples])
    metrics = binary_metrics(scores, labels, card.threshold)
    metrics["calibration"] = calibration(scores, labels)
    metrics["ece"] = metrics["calibration"]["ece"]
    metrics["per_source"] = breakdown((s.source for s in samples), scores, labels, card.threshold)
    bands = [f"{'real' if s.label == 0 else 'fake'} {_band(size)}" for s, size in zip(samples, sizes)]
    metrics["per_resolution"] = breakdown(bands, scores, labels, card.threshold)
    return metrics


def evaluate_attribution(samples: list[Sample], probs: np.ndarray, card: ModelCard) -> dict:
    labels = np.array([s.label for s in samples])
    return attribution_metrics(probs, labels, card.classes)


def save_metrics(metrics: dict, out_dir: Path, name: str = "metrics.json") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def plot_roc(scores: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    plt = pyplot()

    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, scores):.4f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(table: dict, path: Path, title: str) -> None:
    """Reliability diagram: observed fraction of fakes against mean predicted probability, per bin."""
    plt = pyplot()

    bins = table["bins"]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.5, 5.5), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    ax.plot([b["mean_score"] for b in bins], [b["fraction_fake"] for b in bins], "o-",
            label=f"ECE {table['ece']:.3f}")
    ax.set(ylabel="fraction fake", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    hist.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["n"] for b in bins],
             width=[b["high"] - b["low"] for b in bins], edgecolor="black")
    hist.set(xlabel="predicted probability of fake", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    plt = pyplot()

    cm_arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(cm_arr, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm_arr):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm_arr.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_predictor(model: str) -> tuple[Predict, ModelCard, str]:
    """A checkpoint folder (PyTorch) or an exported model (name or .onnx file, ONNX Runtime, scored as a scan
    scores it: the card's adaptive tiling, and for an int8 variant the fp32 model near the threshold)."""
    if Path(model).is_dir():
        from .models import checkpoint_predictor, load_checkpoint

        net, card = load_checkpoint(Path(model))
        return checkpoint_predictor(net), card, str(model)
    from ..runtime import open_detector, resolve_model
    from ..scoring import score_images

    detector = open_detector(resolve_model(model), device="cpu")
    threshold = detector.card.threshold
    return ((lambda parts: [s.logits for s in score_images(detector, parts, threshold)]), detector.card,
            str(detector.path))


def evaluate_model(data_dir: Path, model: str, perturb: str | None = None, out_dir: Path | None = None,
                   workers: int = 2) -> dict:
    """Score a labelled folder with a model; metrics overall, per source and per resolution; JSON and PNGs."""
    from ..perturb import parse_perturbation
    from .data import discover

    predict, card, model_path = load_predictor(model)
    samples, classes = discover(Path(data_dir), card.task)
    if classes != card.classes:
        raise DataError(f"{data_dir} has classes {classes}, the model knows {card.classes}")
    probs, sizes = score_samples(samples, predict, card, parse_perturbation(perturb), workers=workers)
    labels = np.array([s.label for s in samples])
    if card.task == "binary":
        metrics = evaluate_binary(samples, probs, sizes, card)
    else:
        metrics = evaluate_attribution(samples, probs, card)
    metrics.update(model=model_path, model_name=card.name, data=str(data_dir), perturb=perturb or "none")
    if out_dir:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"{card.name} ({perturb or 'as stored'})"
        files = ["metrics.json", "confusion.png"]
        plot_confusion(metrics["confusion_matrix"], card.classes, out_dir / "confusion.png", title)
        if card.task == "binary" and "roc_auc" in metrics:
            plot_roc(probs[:, card.positive_index], labels, out_dir / "roc.png", title)
            files.append("roc.png")
        if card.task == "binary":
            plot_reliability(metrics["calibration"], out_dir / "reliability.png", title)
            files.append("reliability.png")
        metrics["files"] = files
        save_metrics(metrics, out_dir)
    return metrics
