"""Leave one generator out: does a detector catch generators it never trained on?

    python studies/logo.py --recipe twins                    # aligned twins only: every generator is unseen
    python studies/logo.py --recipe twins+fakes              # twins and real fakes, each generator held out in turn
    python studies/logo.py --recipe twins+fakes --groups pix2pix stylegan2
    python studies/logo.py --model gscan-binary-effnetlite0  # score a shipped model on the same rows
    python studies/logo.py --model RUN --generated mobilestylegan=DIR  # a row of genuine outputs no run trained on

Every row is one generator source of ../shared/data (faces/, gans/, wild/), all its images (train and val folders,
at most --per-source), scored against the pooled validation reals of faces/ and wild/ plus real/ciplab-600, which
no recipe here trains on. ROC-AUC and the rate at the model's own threshold, as stored and with every image
re-encoded to JPEG q75. Twins come from `gscan synth` (made on first use under --twins-root: the bank is trained
on faces/train's reals and reused for the other folders). Writes docs/logo.json and the "logo" section of
docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from results_doc import write_section  # noqa: E402
from forensics.perturb import LAUNDERED, parse_perturbation  # noqa: E402
from forensics.training.data import Augment, Sample  # noqa: E402
from forensics.training.evaluate import binary_metrics, load_predictor, score_samples  # noqa: E402
from forensics.training.synth import GENERATED, MANIFEST, SynthConfig, synthesize  # noqa: E402
from forensics.training.train import TrainConfig, train  # noqa: E402

# row name -> (generator group, folders under data/ holding it); a group is what a run holds out
FAKE_ROWS = {
    "faces/stylegan2-tpdne (128 px, JPEG)": ("stylegan2", ["faces/train/fake/stylegan2-tpdne",
                                                           "faces/val/fake/stylegan2-tpdne"]),
    "faces/stylegan-family-unknown (256 crop)": ("stylegan-unknown", ["faces/train/fake/stylegan-family-unknown",
                                                                       "faces/val/fake/stylegan-family-unknown"]),
    "gans/stylegan2-tpdne (512 crop)": ("stylegan2", ["gans/train/stylegan2-tpdne", "gans/val/stylegan2-tpdne"]),
    "gans/stylegan-family-unknown (512 crop)": ("stylegan-unknown", ["gans/train/stylegan-family-unknown",
                                                                     "gans/val/stylegan-family-unknown"]),
    "gans/pggan-celebahq (1024)": ("pggan", ["gans/train/pggan-celebahq", "gans/val/pggan-celebahq"]),
    "gans/msg-stylegan-celebahq (1024)": ("msg-stylegan", ["gans/train/msg-stylegan-celebahq",
                                                           "gans/val/msg-stylegan-celebahq"]),
    "gans/stylegan-celebahq (1024)": ("stylegan-celebahq", ["gans/train/stylegan-celebahq",
                                                             "gans/val/stylegan-celebahq"]),
    "wild/pix2pix-facades": ("pix2pix", ["wild/train/fake/pix2pix-facades", "wild/val/fake/pix2pix-facades"]),
    "wild/sd15-merge (diffusion)": ("sd15", ["wild/train/fake/sd15-merge", "wild/val/fake/sd15-merge"]),
    "wild/latent-diffusion (diffusion)": ("latent-diffusion", ["wild/train/fake/latent-diffusion",
                                                               "wild/val/fake/latent-diffusion"]),
    "wild/glid3-xl (diffusion)": ("glid3", ["wild/train/fake/glid3-xl", "wild/val/fake/glid3-xl"]),
}
# generator group -> the training-folder sources that hold it (what --hold-out names)
TRAINED_AS = {"stylegan2": ["fake/stylegan2-tpdne"], "stylegan-unknown": ["fake/stylegan-family-unknown"],
              "pix2pix": ["fake/pix2pix-facades"], "sd15": ["fake/sd15-merge"],
              "latent-diffusion": ["fake/latent-diffusion"], "glid3": ["fake/glid3-xl"],
              # trained on only by the twins+fakes+gans recipe (gans/train as fake sources)
              "pggan": ["fake/pggan-celebahq"], "msg-stylegan": ["fake/msg-stylegan-celebahq"],
              "stylegan-celebahq": ["fake/stylegan-celebahq"],
              "diffusion": ["fake/sd15-merge", "fake/latent-diffusion", "fake/glid3-xl"]}
GANS_ONLY = ("pggan", "msg-stylegan", "stylegan-celebahq")
REAL_ROWS = {
    "faces/ffhq-thumbnail": ["faces/val/real/ffhq-thumbnail"],
    "faces/ffhq-like-1024": ["faces/val/real/ffhq-like-1024"],
    "faces/imagenet-photo (non-face)": ["faces/val/real/imagenet-photo"],
    "faces/ciplab-600 (never trained on; sets the threshold)": ["faces/train/real/ciplab-600",
                                                                "faces/val/real/ciplab-600"],
    "wild/dreambooth-photo": ["wild/val/real/dreambooth-photo"],
    "wild/pix2pix-facades (photos)": ["wild/val/real/pix2pix-facades"],
}
NEVER_TRAINED = ("real/ciplab-600", "twin/ciplab-600")
# laundered: downscaled to 0.3 then JPEG q75, as a 1024-px face reaches a moderation queue at about 300 px
CONDITIONS = {"as stored": None, "jpeg q75": "jpeg:75", "laundered": LAUNDERED}
# reals only: a detector that learned "softer or colour-shifted than its real means fake" calls these fake
REAL_CHECKS = {"blurred (sigma 1)": "blur:1", "colour cast 10%": "colour:0.1"}
TWIN_FOLDERS = {"faces-train": "faces/train/real", "wild-train": "wild/train/real",
                "faces-val": "faces/val/real", "wild-val": "wild/val/real"}


def ensure_twins(args: argparse.Namespace) -> dict[str, Path]:
    """The twin folders, made with one bank (trained on faces/train's reals) where missing."""
    out = {name: args.twins_root / f"twins-{name}" for name in TWIN_FOLDERS}
    for name, rel in TWIN_FOLDERS.items():
        if not (out[name] / MANIFEST).is_file():
            bank = None if name == "faces-train" else out["faces-train"]
            print(f"== gscan synth {rel} -> {out[name]}", flush=True)
            synthesize(SynthConfig(real_dir=args.data / rel, out=out[name], bank_from=bank, steps=args.synth_steps))
    return out


def images(folders: list[str], data: Path, per_source: int, seed: int, label: int, name: str) -> list[Sample]:
    from forensics.images import find_images

    paths = sorted(p for f in folders for p in find_images(data / f))
    paths = random.Random(seed).sample(paths, min(per_source, len(paths)))
    return [Sample(p, label, name) for p in sorted(paths)]


def eval_set(args: argparse.Namespace) -> list[Sample]:
    assert not set(REAL_ROWS) & set(FAKE_ROWS), "a row name must say which class it is"  # rows are told apart by name
    reals = [s for name, folders in REAL_ROWS.items()
             for s in images(folders, args.data, args.per_source, args.seed, 0, name)]
    fakes = [s for name, (_, folders) in FAKE_ROWS.items()
             for s in images(folders, args.data, args.per_source, args.seed, 1, name)]
    return reals + fakes


def score(model: str, samples: list[Sample], seen: set[str], label: str) -> dict:
    """Every row's figures for one model."""
    predict, card, _ = load_predictor(model)
    labels = np.array([s.label for s in samples])
    names = np.array([s.source for s in samples])
    result = {"model": label, "threshold": card.threshold, "fakes": {}, "reals": {}}
    for cond, spec in CONDITIONS.items():
        probs, _ = score_samples(samples, predict, card, parse_perturbation(spec))
        scores = probs[:, card.positive_index]
        real = labels == 0
        for name, (group, _) in FAKE_ROWS.items():
            mask = real | (names == name)
            m = binary_metrics(scores[mask], labels[mask], card.threshold)
            row = result["fakes"].setdefault(name, {"generator": group, "seen": group in seen,
                                                    "n": int((names == name).sum())})
            row[cond] = {"roc_auc": m["roc_auc"], "tpr": m["tpr"]}
        for name in REAL_ROWS:
            mask = names == name
            row = result["reals"].setdefault(name, {"n": int(mask.sum())})
            row[cond] = {"fpr": float((scores[mask] >= card.threshold).mean())}
    reals = [s for s in samples if s.label == 0]
    real_names = np.array([s.source for s in reals])
    for cond, spec in REAL_CHECKS.items():
        scores = score_samples(reals, predict, card, parse_perturbation(spec))[0][:, card.positive_index]
        for name in REAL_ROWS:
            result["reals"][name][cond] = {"fpr": float((scores[real_names == name] >= card.threshold).mean())}
    return result


def augment(args: argparse.Namespace) -> Augment:
    """Blur and JPEG with the same odds for every class (and the same draws within a pair)."""
    return Augment(jpeg_prob=args.jpeg_prob, jpeg_quality=(60, 100), double_jpeg_prob=args.double_jpeg_prob,
                   blur_prob=0.3, lossless_jpeg_quality=args.lossless_jpeg_quality)


def gans_as_binary(args: argparse.Namespace) -> Path:
    """gans/train laid out as a binary folder (fake/<generator>/, links to the files; an empty real/)."""
    root = args.twins_root / "gans-train-binary"
    (root / "real").mkdir(parents=True, exist_ok=True)
    for folder in sorted((args.data / "gans" / "train").iterdir()):
        target = root / "fake" / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.iterdir()):
            if not (target / f.name).exists():
                (target / f.name).symlink_to(f.resolve())
    return root


def train_run(args: argparse.Namespace, twins: dict[str, Path], held: list[str], run_dir: Path) -> float:
    data = args.data
    more = (data / "wild" / "train",) + ((gans_as_binary(args),) if args.recipe == "twins+fakes+gans" else ())
    config = TrainConfig(data_dir=data / "faces" / "train", more_data=more,
                         val_dir=data / "faces" / "val", more_val=(data / "wild" / "val",),
                         twins=(twins["faces-train"], twins["wild-train"]),
                         val_twins=(twins["faces-val"], twins["wild-val"]), out=run_dir, force=True, weights="imagenet-offline",
                         crop=args.crop, stem_stride=args.stem_stride, epochs=args.epochs, patience=args.epochs,
                         samples_per_epoch=args.samples_per_epoch, val_limit=args.val_limit,
                         hold_out=tuple(held) + NEVER_TRAINED, threshold_source=NEVER_TRAINED[0],
                         target_fpr=args.target_fpr, augment=augment(args), val_perturb="jpeg:75",
                         soften_real_prob=args.soften_real_prob, seed=args.seed)
    started = time.perf_counter()
    train(config)
    return time.perf_counter() - started


DIFFUSION = {"sd15", "latent-diffusion", "glid3"}


def trained_groups(recipe: str) -> list[str]:
    """The generator groups a recipe trains on when nothing is held out."""
    if recipe == "twins":
        return []
    return [g for g in TRAINED_AS if g != "diffusion" and (recipe.endswith("+gans") or g not in GANS_ONLY)]


def run_recipe(args: argparse.Namespace, samples: list[Sample]) -> list[dict]:
    twins = ensure_twins(args)
    results = []
    held_groups = [["all"]] if args.recipe == "twins" else [[g] for g in (args.groups or trained_groups(args.recipe))]
    for groups in held_groups:
        held = (["fake"] if groups == ["all"] else [] if groups == ["none"] else
                [s for g in groups for s in TRAINED_AS[g]])
        label = f"{args.recipe} {args.tag}".strip()
        run_dir = args.out / label.replace(" ", "_") / "-".join(groups)
        print(f"== {label}: hold out {', '.join(held) or 'nothing'}", flush=True)
        seconds = train_run(args, twins, held, run_dir)
        unseen = set(groups) | (DIFFUSION if "diffusion" in groups else set())
        result = score(str(run_dir), samples, set(trained_groups(args.recipe)) - unseen, label)
        result.update(held_out=groups, train_seconds=round(seconds), run=str(run_dir))
        results.append(result)
        write_results(results, args)
    return results


def write_results(results: list[dict], args: argparse.Namespace) -> None:
    budget = {k: getattr(args, k) for k in ("crop", "stem_stride", "epochs", "samples_per_epoch", "val_limit",
                                            "per_source", "soften_real_prob", "synth_steps", "target_fpr",
                                            "jpeg_prob", "double_jpeg_prob")}
    if args.lossless_jpeg_quality:  # only runs that set it name it, so the older rows' budgets still read alike
        budget["lossless_jpeg_quality"] = list(args.lossless_jpeg_quality)
    for r in results:
        r.setdefault("budget", budget)
    save_runs(results, args.docs)


def save_runs(results: list[dict], docs: Path) -> None:
    """results (each with its budget) into docs/logo.json, replacing runs of the same name, and the table."""
    path = docs / "logo.json"
    previous = json.loads(path.read_text())["runs"] if path.exists() else []
    new_keys = {(r["model"], tuple(r.get("held_out", []))) for r in results}
    runs = [r for r in previous if (r["model"], tuple(r.get("held_out", []))) not in new_keys] + results
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    write_section(docs / "RESULTS.md", "logo", table_lines(runs))


def _cells(row: dict, key: str, fmt: str) -> str:
    """One figure under each condition, `-` where a run predates the condition."""
    return " / ".join(format(row[c][key], fmt) if c in row else "-" for c in CONDITIONS)


def table_lines(runs: list[dict]) -> list[str]:
    lines = ["## Leave one generator out", "",
             "Written by `studies/logo.py`. Each fake row: all images of one generator source (train and val "
             "folders), ROC-AUC against the pooled real rows below, and the share called fake at the model's "
             "own threshold, as stored / every image re-encoded to JPEG q75 / laundered (resized to 0.3, then JPEG "
             "q75; `-` for runs measured before that condition existed). A row counts as held out when the "
             "model never trained on that generator (`seen` marks the others). Reals: the share called fake at "
             "the threshold, as stored / q75 / laundered, and blurred (sigma 1) / with a 10% colour cast: a "
             "detector that learned \"softer or colour-shifted means fake\" calls these fake.", ""]
    for run in runs:
        held = ", ".join(run.get("held_out", [])) or "(an existing model)"
        budget = [f"Training budget: `{json.dumps(run['budget'])}`.", ""] if run.get("budget") and "run" in run else []
        lines += [f"### {run['model']}, held out: {held} (threshold {run['threshold']:.4f})", "", *budget,
                  "| generator source | n | ROC-AUC stored / q75 / laundered | called fake stored / q75 / laundered |",
                  "|---|---|---|---|"]
        for name, row in run["fakes"].items():
            mark = " (seen)" if row["seen"] else ""
            lines.append(f"| {name}{mark} | {row['n']} | {_cells(row, 'roc_auc', '.3f')} | {_cells(row, 'tpr', '.2f')} |")
        lines += ["", "| real source | n | FPR stored / q75 / laundered | FPR blurred (sigma 1) / colour cast 10% |",
                  "|---|---|---|---|"]
        for name, row in run["reals"].items():
            checks = " / ".join(f"{row[c]['fpr']:.3f}" if c in row else "-" for c in REAL_CHECKS)
            lines.append(f"| {name} | {row['n']} | {_cells(row, 'fpr', '.3f')} | {checks} |")
        gans = [min(r["as stored"]["roc_auc"], r["jpeg q75"]["roc_auc"]) for n, r in run["fakes"].items()
                if not r["seen"] and "diffusion" not in n]
        if gans:
            lines.append(f"\nHeld-out GAN rows: worst ROC-AUC (lower of stored / q75) **{min(gans):.3f}**, "
                         f"{sum(a >= 0.95 for a in gans)} of {len(gans)} at >= 0.95.\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gscan-logo"))
    parser.add_argument("--twins-root", type=Path, default=Path("/tmp/gscan-logo"))
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--recipe", choices=("twins", "twins+fakes", "twins+fakes+gans"), default="twins")
    parser.add_argument("--groups", nargs="+", choices=sorted(TRAINED_AS) + ["none"],
                        help="held out in turn (twins+fakes...); none: train on every generator (a model to ship)")
    parser.add_argument("--tag", default="", help="a variant's name, added to the recipe's in the table")
    parser.add_argument("--model", help="score this model (shipped name, .onnx or run folder) instead of training")
    parser.add_argument("--name", help="the model's name in the table (with --model)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--stem-stride", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples-per-epoch", type=int, default=3072)
    parser.add_argument("--val-limit", type=int, default=240)
    parser.add_argument("--per-source", type=int, default=100)
    parser.add_argument("--soften-real-prob", type=float, default=0.3)
    parser.add_argument("--synth-steps", type=int, default=600)
    parser.add_argument("--jpeg-prob", type=float, default=1.0)
    parser.add_argument("--double-jpeg-prob", type=float, default=0.5)
    parser.add_argument("--lossless-jpeg-quality", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="files not stored as JPEG (the PNG GANs, PNG reals and their twins) get one JPEG pass "
                             "at this quality first, so 'never compressed' cannot mean fake")
    parser.add_argument("--target-fpr", type=float, default=0.01, help="per real source, as stored and at q75")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generated", action="append", default=[], metavar="NAME=DIR",
                        help="a fake row of genuine generator outputs kept out of training; repeatable")
    args = parser.parse_args()
    add_generated_rows(args.generated)
    samples = eval_set(args)
    if args.model:
        result = score(args.model, samples, _seen_by(args.model), args.name or Path(args.model).stem)
        write_results([result], args)
    else:
        run_recipe(args, samples)
    print(args.docs / "RESULTS.md")


def _seen_by(model: str) -> set[str]:
    """Generator groups whose sources the model's card says it trained on: a shared source, a fake/<generator>
    folder of genuine outputs, or a --twins folder that `gscan synth --generator` made."""
    _, card, _ = load_predictor(model)
    trained = set(card.training.get("train", {}).get("per_source", {}))
    seen = {g for g, sources in TRAINED_AS.items() if trained & set(sources)}
    seen |= {s.split("/", 1)[1] for s in trained if s.startswith("fake/")}
    for folder in card.training.get("config", {}).get("twins", []):
        manifest = Path(folder) / GENERATED
        if manifest.is_file():
            seen.add(json.loads(manifest.read_text())["generator"])
    return seen


def add_generated_rows(specs: list[str]) -> None:
    """NAME=DIR: a fake row of a generator's outputs (gscan synth --generator), none of which a run trained on;
    NAME is its group (the generator's name, as the training folder or twins manifest names it)."""
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not folder or not Path(folder).is_dir():
            raise SystemExit(f"--generated {spec!r}: give NAME=DIR with DIR a folder of that generator's outputs")
        row = FAKE_ROWS.setdefault(f"generated/{name} (never trained on)", (name, []))
        row[1].append(str(Path(folder).resolve()))  # several folders of one generator make one row


if __name__ == "__main__":
    main()
