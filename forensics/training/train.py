"""Fine-tune a timm backbone on native-resolution crops; early stopping on validation; safetensors + card."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import __version__
from ..card import ModelCard, TilingPolicy
from ..errors import DataError
from ..perturb import parse_perturbation
from . import data as D
from .evaluate import binary_metrics, choose_threshold, evaluate_attribution, evaluate_binary, score_samples
from .models import channels_last, checkpoint_predictor, create_model, default_crop, default_norm, save_checkpoint
from .config import TrainConfig
from .synth import twin_map
from .plots import pyplot

Progress = Callable[[dict], None]


@dataclass
class TrainResult:
    card: ModelCard
    history: list[dict]
    best_epoch: int
    seconds: float
    warnings: list[str] = field(default_factory=list)  # things the user should know before trusting the run


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _val_score(task: str, metrics: dict) -> float:
    return metrics.get("roc_auc", metrics["accuracy"]) if task == "binary" else metrics["accuracy"]


def _validate(model, samples, card, config) -> dict:
    model.eval()
    probs, sizes = score_samples(samples, checkpoint_predictor(model), card, parse_perturbation(config.val_perturb),
                                 workers=config.workers)
    labels = np.array([s.label for s in samples])
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean())
    if card.task == "binary":
        m = binary_metrics(probs[:, card.positive_index], labels, card.threshold)
    else:
        m = evaluate_attribution(samples, probs, card)
    return {"loss": loss, **{k: v for k, v in m.items() if isinstance(v, float)}}


def _run_epoch(model, loader, optimizer, scheduler, on_progress, epoch) -> dict:
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    total, correct, loss_sum = 0, 0, 0.0
    for step, (x, y) in enumerate(loader):
        logits = model(channels_last(x))
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += len(y)
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += loss.item() * len(y)
        on_progress({"event": "step", "epoch": epoch, "step": step + 1, "steps": len(loader),
                     "loss": loss_sum / total})
    return {"loss": loss_sum / max(1, total), "accuracy": correct / max(1, total)}


def _discover_all(folders: list[Path], task: str) -> tuple[list[D.Sample], list[str]]:
    samples, classes = D.discover(folders[0], task)
    for folder in folders[1:]:
        more, more_classes = D.discover(folder, task)
        if more_classes != classes:
            raise DataError(f"{folder} has classes {more_classes}, {folders[0]} has {classes}")
        samples += more
    return samples, classes


def _with_twins(samples: list[D.Sample], folders: tuple[Path, ...]) -> tuple[list[D.Sample], list]:
    """samples plus the twins of their reals, and the (real, twin) pairs."""
    if not folders:
        return samples, []
    twins: dict[Path, Path] = {}
    for folder in folders:
        twins.update(twin_map(folder))
    aligned = D.twin_samples(samples, twins)
    return samples + [t for _, t in aligned], aligned


class Splits(NamedTuple):
    train: list[D.Sample]  # twins included
    pairs: list[D.Pair] | None  # paired training; None: one sample at a time
    val: list[D.Sample]
    held: list[D.Sample]  # held-out sources of the training folders
    classes: list[str]


def _load_splits(config: TrainConfig) -> Splits:
    """Held-out sources (twin sources too) leave train and val; twins join as fakes and, in training, as pairs."""
    samples, classes = _discover_all([config.data_dir, *config.more_data], config.task)
    samples, aligned = _with_twins(samples, config.twins)
    samples, held = D.exclude_sources(samples, config.hold_out)
    if config.threshold_source and config.threshold_source not in config.hold_out:
        raise DataError(f"--threshold-source {config.threshold_source} must also be held out of training")
    if config.val_dir:
        val, val_classes = _discover_all([config.val_dir, *config.more_val], config.task)
        if val_classes != classes:
            raise DataError(f"validation classes {val_classes} differ from training classes {classes}")
        # a source held out of training need not be in the validation folders
        val, _ = D.exclude_sources(_with_twins(val, config.val_twins)[0], config.hold_out, strict=False)
        train_samples = samples
    else:
        train_samples, val = _split_with_twins(samples, aligned, config)
    kept = set(train_samples)
    pairs = None
    if config.twins:
        pairs = D.make_pairs(train_samples, [(r, t) for r, t in aligned if r in kept and t in kept], config.seed,
                              config.pair_by_size)
    return Splits(train_samples, pairs, D.stratified_subsample(val, config.val_limit, config.seed), held, classes)


def _split_with_twins(samples: list[D.Sample], aligned: list, config: TrainConfig):
    """Split by image, each twin on its real's side, so no content is seen in training and scored in validation."""
    twin_of = {r: t for r, t in aligned}
    kept = set(samples)
    base = [s for s in samples if not s.source.startswith(D.TWIN + "/")]
    train_samples, val = D.split_by_image(base, config.val_fraction, config.seed)
    return ([*train_samples, *(twin_of[r] for r in train_samples if twin_of.get(r) in kept)],
            [*val, *(twin_of[r] for r in val if twin_of.get(r) in kept)])


def _loader(splits: Splits, card: ModelCard, mean, std, config: TrainConfig):
    """(dataset, sampler, loader): pairs of tiles when training on twins, single tiles otherwise."""
    if splits.pairs:
        dataset = D.PairedCropDataset(splits.pairs, card.tiling, mean, std, config.augment, config.seed,
                                      config.soften_real_prob)
        per_epoch = config.samples_per_epoch // 2 if config.samples_per_epoch else None
        sampler = D.pair_sampler(splits.pairs, config.seed, per_epoch)
        batch, collate = max(1, config.batch_size // 2), D.collate_pairs
    else:
        dataset = D.CropDataset(splits.train, card.tiling, mean, std, config.augment, config.seed,
                                config.crops_per_image)
        sampler = D.balanced_sampler(splits.train, config.crops_per_image, config.balance, config.seed,
                                     config.samples_per_epoch)
        batch, collate = config.batch_size, None
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=config.workers,
                        drop_last=len(sampler) > batch, persistent_workers=False, collate_fn=collate)
    return dataset, sampler, loader


def train(config: TrainConfig, on_progress: Progress = lambda e: None) -> TrainResult:
    """Train, keep the best epoch by validation, calibrate the threshold, and write RUN_DIR."""
    _check_run_folder(Path(config.out), config.force)
    seed_everything(config.seed)
    started = time.perf_counter()
    splits = _load_splits(config)
    train_samples, val_samples, held_samples, classes = splits.train, splits.val, splits.held, splits.classes
    crop = config.crop or default_crop(config.arch)
    mean, std = default_norm(config.arch)
    card = ModelCard(name=config.name or Path(config.out).name, task=config.task, arch=config.arch,
                     classes=classes, tiling=TilingPolicy(crop=crop, max_tiles=config.max_tiles),
                     mean=tuple(mean), std=tuple(std), gscan_version=__version__, front_end=config.front_end,
                     stem_stride=config.stem_stride)
    card.training = _training_summary(config, train_samples, val_samples, classes)
    model = create_model(config.arch, len(classes), config.pretrained, config.weights, config.front_end,
                         config.stem_stride)
    model = model.to(memory_format=torch.channels_last)
    dataset, sampler, loader = _loader(splits, card, mean, std, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, pct_start=0.1,
                                                    total_steps=max(1, config.epochs * len(loader)))
    out = Path(config.out)
    history, best, best_epoch, stale = [], -np.inf, 0, 0
    for epoch in range(1, config.epochs + 1):
        dataset.epoch = epoch
        sampler.generator.manual_seed(config.seed * 1000 + epoch)
        t0 = time.perf_counter()
        train_m = _run_epoch(model, loader, optimizer, scheduler, on_progress, epoch)
        val_m = _validate(model, val_samples, card, config)
        history.append({"epoch": epoch, "seconds": time.perf_counter() - t0,
                        **{f"train_{k}": v for k, v in train_m.items()}, **{f"val_{k}": v for k, v in val_m.items()}})
        score = _val_score(config.task, val_m)
        improved = score > best + 1e-6 or (score >= best - 1e-6 and val_m["loss"] < _best_loss(history, best_epoch))
        if improved:
            best, best_epoch, stale = score, epoch, 0
            save_checkpoint(model, card, out)
        else:
            stale += 1
        on_progress({"event": "epoch", **history[-1], "best_epoch": best_epoch})
        if stale >= config.patience:
            break
    threshold_samples = D.exclude_sources(held_samples, [config.threshold_source])[1] if config.threshold_source else []
    model, card = _finalise(out, val_samples, threshold_samples, config, history, best_epoch)
    _write_history(out, history)
    return TrainResult(card, history, best_epoch, time.perf_counter() - started, threshold_warnings(card, config))


def _check_run_folder(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DataError(f"run folder {out} exists and is not empty: choose another --out, or --force to overwrite")


def threshold_warnings(card: ModelCard, config: TrainConfig) -> list[str]:
    """A threshold pinned at the top of the score range, or validation reals above target: the run is not
    calibrated, whatever its ROC-AUC."""
    if card.task != "binary":
        return []
    warnings = []
    fpr = card.metrics.get("val", {}).get("fpr", float("nan"))
    if card.threshold >= 1.0 - 1e-4:
        warnings.append(f"the threshold saturated at {card.threshold:.4f}: the validation reals' scores reach the "
                        "top of the range, so no threshold holds the target; train longer or on more data")
    if fpr == fpr and fpr > 2 * config.target_fpr:
        warnings.append(f"validation false-positive rate at the threshold is {fpr:.1%}, against a target of "
                        f"{config.target_fpr:.1%}")
    return warnings


def _best_loss(history: list[dict], best_epoch: int) -> float:
    return next((h["val_loss"] for h in history if h["epoch"] == best_epoch), np.inf)


def _stored_and_q75(samples, predict, card: ModelCard, workers: int) -> dict:
    return {tag: score_samples(samples, predict, card, parse_perturbation(spec), workers=workers)
            for tag, spec in (("val", None), ("val_jpeg75", "jpeg:75"))}


def _real_scores_by_source(samples, results: dict, card: ModelCard) -> dict[str, np.ndarray]:
    """Each real source's fake-probabilities, as stored and at JPEG q75 together."""
    sources = np.array([s.source for s in samples])
    is_real = np.array([s.label == 0 for s in samples])
    scores = {tag: probs[:, card.positive_index] for tag, (probs, _) in results.items()}
    return {src: np.concatenate([v[is_real & (sources == src)] for v in scores.values()])
            for src in sorted(set(sources[is_real].tolist()))}


def _set_threshold(card: ModelCard, val_samples, val_results: dict, threshold_samples, predict,
                   config: TrainConfig) -> None:
    """At target_fpr on reals as stored and at JPEG q75. With a held-out threshold source: the highest of the
    per-source thresholds over that source (never trained on) and each validation real source, so that no real
    source we hold exceeds the rate; else over the validation reals pooled."""
    fpr = config.target_fpr
    if not threshold_samples:
        labels = np.array([s.label for s in val_samples])
        both = np.concatenate([val_results[t][0][:, card.positive_index] for t in val_results])
        card.threshold = choose_threshold(both, np.concatenate([labels == 0] * len(val_results)), fpr)
        card.threshold_method = (f"lowest threshold with at most {fpr:.0%} false positives on the validation reals "
                                 f"({int((labels == 0).sum())} images), as stored and re-encoded to JPEG q75 "
                                 f"together; validation metrics below are therefore optimistic about the "
                                 f"false-positive rate")
        return
    held = _real_scores_by_source(threshold_samples, _stored_and_q75(threshold_samples, predict, card,
                                                                     config.workers), card)
    per_source = {f"{src} (held out, training folder)": v for src, v in held.items()}
    per_source.update({f"{src} (validation)": v
                       for src, v in _real_scores_by_source(val_samples, val_results, card).items()})
    thresholds = {src: choose_threshold(v, np.ones(len(v), bool), fpr) for src, v in per_source.items()}
    card.threshold = max(thresholds.values())
    card.training["threshold_per_source"] = thresholds
    card.threshold_method = (
        f"highest of the per-source thresholds that keep each real source at or below {fpr:.0%} false positives, "
        f"as stored and re-encoded to JPEG q75 together: {config.threshold_source} from the training folder "
        f"({len(threshold_samples)} images, a source held out of training and epoch selection) and each "
        f"validation real source; the binding one was {max(thresholds, key=thresholds.get)}. Validation FPRs "
        f"of the other sources are therefore in-sample; {config.threshold_source}'s validation images were "
        f"not used")


def _finalise(out: Path, val_samples, threshold_samples, config: TrainConfig, history: list[dict],
              best_epoch: int):
    """Reload the best epoch, measure it on val as stored and re-encoded at JPEG q75, set the threshold."""
    from .models import load_checkpoint

    model, card = load_checkpoint(out)
    predict = checkpoint_predictor(model.to(memory_format=torch.channels_last))
    results = _stored_and_q75(val_samples, predict, card, config.workers)
    if card.task == "binary":
        _set_threshold(card, val_samples, results, threshold_samples, predict, config)
        for tag, (probs, sizes) in results.items():
            card.metrics[tag] = evaluate_binary(val_samples, probs, sizes, card)
    else:
        card.threshold_method = "attribution: the top class is the answer, no threshold"
        for tag, (probs, _) in results.items():
            card.metrics[tag] = evaluate_attribution(val_samples, probs, card)
    card.training["best_epoch"] = best_epoch
    card.training["epochs_run"] = len(history)
    card.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save_checkpoint(model, card, out)
    return model, card


def _training_summary(config: TrainConfig, train_samples, val_samples, classes) -> dict:
    def plain(v):
        return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, (tuple, list)) else v
    cfg = {k: plain(v) for k, v in asdict(config).items()}
    return {"config": cfg, "train": D.summarise(train_samples, classes), "val": D.summarise(val_samples, classes)}


def _write_history(out: Path, history: list[dict]) -> None:
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train and val, like the study's training-log charts."""
    plt = pyplot()

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for split in ("train", "val"):
            ax.plot(epochs, [h.get(f"{split}_{key}", np.nan) for h in history], marker="o", label=split)
        ax.set(xlabel="epoch", ylabel=key, title=key)
        ax.set_xticks(epochs if len(epochs) <= 12 else epochs[:: -(-len(epochs) // 12)])  # whole epochs only
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
