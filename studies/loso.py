"""Leave-one-source-out: train with one real and one fake source of faces/ held out, score the held-out pair.

    python studies/loso.py                                  # every real x fake pair, the shipped recipe
    python studies/loso.py --recipe baseline --pairs real/ffhq-thumbnail:fake/stylegan2-tpdne
    python studies/loso.py --epochs 8 --samples-per-epoch 4096   # a longer budget (GPU)

The held-out pair is scored on all its images (train and val folders: the run never saw either), as stored and
with both classes re-encoded to JPEG q75, capped at --per-source images per source. Each run's threshold is
chosen on its own validation reals (sources it trained on) at 1% FPR, so the FPR/TPR columns show how a
threshold carries to an unseen source. Writes docs/loso.json and the "loso" section of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from results_doc import write_section  # noqa: E402
from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.training.data import Augment, Sample, discover, exclude_sources  # noqa: E402
from forensics.training.evaluate import binary_metrics, load_predictor, score_samples  # noqa: E402
from forensics.training.train import TrainConfig, train  # noqa: E402

RECIPES = {
    # the first shipped model's recipe: JPEG on 90% of crops (q60-100), source x class balanced, epoch by val AUC
    "baseline": {"augment": Augment(jpeg_prob=0.9, jpeg_quality=(60, 100), double_jpeg_prob=0.0, blur_prob=0.3),
                 "balance": "source", "val_perturb": None},
    # the shipped recipe: every crop re-compressed (q60-100), half of them twice, so that how much compression
    # an image carries says less of its class (the 128-px fakes arrive as q75 JPEGs, their reals as PNG);
    # source x class balanced; epoch chosen on val re-encoded at q75
    "robust": {"augment": Augment(jpeg_prob=1.0, jpeg_quality=(60, 100), double_jpeg_prob=0.5, blur_prob=0.3),
               "balance": "source", "val_perturb": "jpeg:75"},
}
# the shipped recipe plus downscaling before the crop (p 0.5, both classes): tests whether the resolution
# confound (all 128-px images of one class once a source is held out) is what breaks held-out pairs
RECIPES["robust+rescale"] = {**RECIPES["robust"], "augment": replace(RECIPES["robust"]["augment"], rescale_prob=0.5)}
# the shipped recipe seen through NPR's residual x - up(down(x)) (forensics/training/front_end.py): does an
# input that keeps only upsampling traces stop the model learning each source's pipeline?
RECIPES["robust+npr"] = {**RECIPES["robust"], "front_end": "npr"}
# the shipped recipe with the first convolution at stride 1 (the shipped model's stem): does reading every
# pixel's noise, rather than every other pixel's, carry to sources the model never saw?
RECIPES["robust+stride1"] = {**RECIPES["robust"], "stem_stride": 1}
CONDITIONS = {"as stored": None, "jpeg q75": "jpeg:75"}


def held_out_images(data: Path, pair: tuple[str, str], per_source: int, seed: int) -> list[Sample]:
    """Every image of the two held-out sources in faces/train and faces/val, capped per source."""
    rng = random.Random(seed)
    out = []
    for source in pair:
        images = [s for split in ("train", "val")
                  for s in exclude_sources(discover(data / "faces" / split, "binary")[0], [source])[1]]
        out += rng.sample(images, min(per_source, len(images)))
    return out


def run_pair(pair: tuple[str, str], args: argparse.Namespace) -> dict:
    recipe = RECIPES[args.recipe]
    run_dir = args.out / args.recipe / "__".join(p.replace("/", "-") for p in pair)
    config = TrainConfig(data_dir=args.data / "faces" / "train", val_dir=args.data / "faces" / "val", out=run_dir, force=True,
                         weights="imagenet-offline", front_end=recipe.get("front_end", "rgb"),
                         stem_stride=recipe.get("stem_stride", 0), crop=args.crop,
                         epochs=args.epochs, patience=args.epochs,
                         samples_per_epoch=args.samples_per_epoch, val_limit=args.val_limit, hold_out=pair,
                         balance=recipe["balance"], augment=recipe["augment"], val_perturb=recipe["val_perturb"],
                         seed=args.seed)
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    predict, card, _ = load_predictor(str(run_dir))
    samples = held_out_images(args.data, pair, args.per_source, args.seed)
    labels = np.array([s.label for s in samples])
    row = {"real": pair[0], "fake": pair[1], "recipe": args.recipe, "train_seconds": round(seconds),
           "best_epoch": result.best_epoch, "threshold": card.threshold,
           "n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum())}
    for name, spec in CONDITIONS.items():
        probs, _ = score_samples(samples, predict, card, parse_perturbation(spec))
        m = binary_metrics(probs[:, card.positive_index], labels, card.threshold)
        row[name] = {k: m[k] for k in ("roc_auc", "average_precision", "fpr", "tpr", "tpr_at_5pct_fpr")}
    return row


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    results = args.docs / "loso.json"
    previous = json.loads(results.read_text()) if results.exists() else {"rows": []}
    keep = [r for r in previous["rows"]
            if (r["recipe"], r["real"], r["fake"]) not in {(n["recipe"], n["real"], n["fake"]) for n in rows}]
    merged = sorted(keep + rows, key=lambda r: (r["recipe"], r["fake"], r["real"]))
    budget = {k: getattr(args, k) for k in ("crop", "epochs", "samples_per_epoch", "val_limit", "per_source")}
    results.write_text(json.dumps({"budget": budget, "recipes": {k: {**v, "augment": asdict(v["augment"])}
                                                                 for k, v in RECIPES.items()},
                                   "rows": merged}, indent=2) + "\n")
    lines = ["## Leave one source out (faces/)", "",
             f"Written by `studies/loso.py`. Each row trains EfficientNet-Lite0 (ImageNet, offline weights) on "
             f"faces/train with one real and one fake source held out of training and epoch selection, then scores "
             f"the held-out pair on all its images (train and val folders, at most {args.per_source} per source). "
             f"Budget: {json.dumps(budget)}. Recipes: see `RECIPES` in the script. FPR and TPR are at each run's "
             f"own threshold (1% FPR on the validation reals of the sources it trained on): how a threshold "
             f"carries to a source it never saw.", "",
             "| recipe | held-out real | held-out fake | ROC-AUC as stored | ROC-AUC q75 | FPR / TPR as stored "
             "| FPR / TPR q75 | train s |", "|---|---|---|---|---|---|---|---|"]
    for r in merged:
        s, q = r["as stored"], r["jpeg q75"]
        lines.append(f"| {r['recipe']} | {r['real']} ({r['n_real']}) | {r['fake']} ({r['n_fake']}) | "
                     f"{s['roc_auc']:.3f} | {q['roc_auc']:.3f} | {s['fpr']:.2f} / {s['tpr']:.2f} | "
                     f"{q['fpr']:.2f} / {q['tpr']:.2f} | {r['train_seconds']} |")
    for recipe in sorted({r["recipe"] for r in merged}):
        aucs = [min(r["as stored"]["roc_auc"], r["jpeg q75"]["roc_auc"]) for r in merged if r["recipe"] == recipe]
        lines.append(f"\n{recipe}: worst pair ROC-AUC (lower of as stored / q75) **{min(aucs):.3f}**, "
                     f"{sum(a >= 0.95 for a in aucs)} of {len(aucs)} pairs at >= 0.95.")
    write_section(args.docs / "RESULTS.md", "loso", lines)


def all_pairs(data: Path) -> list[tuple[str, str]]:
    samples, _ = discover(data / "faces" / "train", "binary")
    reals = sorted({s.source for s in samples if s.label == 0})
    fakes = sorted({s.source for s in samples if s.label == 1})
    return [(r, f) for f in fakes for r in reals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gscan-loso"))
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="robust")
    parser.add_argument("--pairs", nargs="+", help="REAL:FAKE sources, e.g. real/ciplab-600:fake/stylegan2-tpdne")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples-per-epoch", type=int, default=2048)
    parser.add_argument("--val-limit", type=int, default=80)
    parser.add_argument("--per-source", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else all_pairs(args.data)
    rows = []
    for pair in pairs:
        print(f"== hold out {pair[0]} + {pair[1]} ({args.recipe})", flush=True)
        rows.append(run_pair(pair, args))
        print(json.dumps({k: rows[-1][k] for k in ("as stored", "jpeg q75")}), flush=True)
        write_results(rows, args)  # after every pair, so a stopped run keeps its rows
    print(args.docs / "RESULTS.md")


if __name__ == "__main__":
    main()
