"""Detectors trained on genuine generator outputs made here (`gscan synth --generator`), scored by the
leave-one-generator-out table of studies/logo.py with rows of those generators' held-out outputs beside.

    gscan synth --generator mobilestylegan --count 600          # cached in the user cache folder
    gscan synth --generator cyclegan-vintage REALS              # REALS as laid out below (--reals-copy)
    python studies/genuine.py --tag genuine-only --reals REALS     # MobileStyleGAN + CycleGAN twins, no shared fake
    python studies/genuine.py --tag genuine+shared --with-shared  # the shared fake sources beside them

The CycleGAN twins pair with their reals (`--twins` takes the generator's folder). REALS holds copies of the
training and validation reals of faces/ and wild/ that have a twin, one folder per split and source
(`train-ffhq-thumbnail`, `val-dreambooth-photo`, ...); `--reals-copy` makes it. The first `--msg-train`
MobileStyleGAN faces train, the rest validate (epoch choice) and form the table's MobileStyleGAN row; the
validation reals' twins form its CycleGAN row. real/ciplab-600 is never trained on and sets the threshold.
`--reals-copy --twin-hires` adds REALS/train-ffhq-like-1024 (150 faces of 1024 px, about 38 min of CycleGAN here);
`--twin-hires` then trains each of them beside its own CycleGAN output.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "studies"))

import logo  # noqa: E402
from forensics.training.data import Augment  # noqa: E402
from forensics.training.generators import default_out  # noqa: E402
from forensics.training.train import TrainConfig, train  # noqa: E402

TWINNED = {"faces": ("ffhq-thumbnail", "imagenet-photo"), "wild": ("dreambooth-photo", "pix2pix-facades")}
UNTWINNED = ("ffhq-like-1024", "ciplab-600")  # 1024 px takes ~15 s a twin here; ciplab is never trained on
HIRES = "ffhq-like-1024"  # with --twin-hires its training faces get twins too (REALS/train-ffhq-like-1024)
SHARED_FAKES = ("faces/{split}/fake", "wild/{split}/fake")


def copy_reals(data: Path, reals: Path, hires: bool = False) -> None:
    """The reals that get a twin, one folder per split and source (the CycleGAN's REAL_DIR)."""
    folders = [(split, top, source) for split in ("train", "val") for top, sources in TWINNED.items()
               for source in sources] + ([("train", "faces", HIRES)] if hires else [])
    for split, top, source in folders:
        target = reals / f"{split}-{source}"
        if not target.is_dir():
            shutil.copytree(data / top / split / "real" / source, target)


def link(target: Path, source: Path) -> None:
    """target -> source, a folder as a folder of links to its files (scans never follow a folder link)."""
    if source.is_dir():
        for f in sorted(source.iterdir()):
            link(target / f.name, f)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source.resolve())


def layout(args: argparse.Namespace, split: str, msg: list[Path]) -> Path:
    """split/real/<source> (twinned reals from REALS, so their paths match the twins' manifest) and
    split/fake/<source> (MobileStyleGAN faces; the shared fakes with --with-shared)."""
    root = args.out / args.tag / split
    shutil.rmtree(root, ignore_errors=True)
    for sources in TWINNED.values():
        for source in sources:
            link(root / "real" / source, args.reals / f"{split}-{source}")
    for source in UNTWINNED:
        twinned = args.twin_hires and split == "train" and source == HIRES
        link(root / "real" / source, args.reals / f"{split}-{source}" if twinned else
             args.data / "faces" / split / "real" / source)
    for face in msg:
        link(root / "fake" / "mobilestylegan" / face.name, face)
    if args.with_shared:
        for pattern in SHARED_FAKES:
            for folder in sorted((args.data / pattern.format(split=split)).iterdir()):
                link(root / "fake" / folder.name, folder)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gscan-genuine"))
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--reals", type=Path, default=Path("/tmp/gscan-genuine/reals"))
    parser.add_argument("--reals-copy", action="store_true", help="make REALS and stop")
    parser.add_argument("--msg", type=Path, default=default_out("mobilestylegan", 0, 0.7) / "mobilestylegan")
    parser.add_argument("--cyclegan", type=Path, default=default_out("cyclegan-vintage", 0, 0.7))
    parser.add_argument("--msg-train", type=int, default=500)
    parser.add_argument("--tag", help="the run's name (required unless --reals-copy)")
    parser.add_argument("--with-shared", action="store_true", help="train on the shared fake sources too")
    parser.add_argument("--train-ciplab", action="store_true",
                        help="train on ciplab-600's training folder too (more high-resolution real faces); the "
                             "threshold then comes from the validation reals, and its table row is in-sample")
    parser.add_argument("--held-real", choices=UNTWINNED, default="ciplab-600",
                        help="the high-resolution real source never trained on, which sets the threshold; "
                             "ffhq-like-1024 trains on ciplab-600 instead (the table's row names keep ciplab's role)")
    parser.add_argument("--pair-by-size", action="store_true",
                        help="each MobileStyleGAN face trains beside a real of about its size (TrainConfig.pair_by_size)")
    parser.add_argument("--twin-hires", action="store_true",
                        help=f"{HIRES}'s training faces train beside their own CycleGAN outputs (about 15 s a twin)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples-per-epoch", type=int, default=3072)
    parser.add_argument("--launder-prob", type=float, default=0.5)
    parser.add_argument("--launder-scale", type=float, nargs=2, default=(0.25, 0.75))  # 0.125 measured: worse
    parser.add_argument("--per-source", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.reals_copy:
        copy_reals(args.data, args.reals, args.twin_hires)
        return
    if not args.tag:
        parser.error("--tag is required")
    faces = sorted(args.msg.glob("*.png"))
    train_dir = layout(args, "train", faces[:args.msg_train])
    val_dir = layout(args, "val", faces[args.msg_train:])
    augment = Augment(jpeg_prob=0.8, jpeg_quality=(60, 95), lossless_jpeg_quality=(70, 95), blur_prob=0.3,
                      launder_prob=args.launder_prob, launder_scale=tuple(args.launder_scale))
    run = args.out / args.tag / "run"
    config = TrainConfig(data_dir=train_dir, val_dir=val_dir, twins=(args.cyclegan,), val_twins=(args.cyclegan,),
                         out=run, force=True, weights="imagenet-offline", crop=args.crop, epochs=args.epochs,
                         patience=args.epochs, samples_per_epoch=args.samples_per_epoch, augment=augment,
                         hold_out=() if args.train_ciplab else (f"real/{args.held_real}",),
                         threshold_source=None if args.train_ciplab else f"real/{args.held_real}", target_fpr=0.01,
                         val_perturb="jpeg:75", pair_by_size=args.pair_by_size, seed=args.seed)
    started = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - started
    logo.add_generated_rows([f"mobilestylegan={val_dir / 'fake' / 'mobilestylegan'}"] +
                            [f"cyclegan-vintage={args.cyclegan / f'val-{s}'}" for v in TWINNED.values() for s in v])
    ns = argparse.Namespace(data=args.data, per_source=args.per_source, seed=args.seed, docs=args.docs)
    result = logo.score(str(run), logo.eval_set(ns), logo._seen_by(str(run)), f"{args.tag} ({args.epochs} ep)")
    result.update(held_out=["every shared fake"] if not args.with_shared else ["the gans/ generators"],
                  train_seconds=round(seconds), run=str(run))
    result["budget"] = {k: getattr(args, k) for k in ("crop", "epochs", "samples_per_epoch", "launder_prob",
                                                      "launder_scale", "msg_train", "per_source", "with_shared",
                                                      "train_ciplab", "pair_by_size", "twin_hires", "held_real")}
    logo.save_runs([result], args.docs)
    print(args.docs / "RESULTS.md")


if __name__ == "__main__":
    main()
