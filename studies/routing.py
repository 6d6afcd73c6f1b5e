"""A second model for images whose native traces are gone, chosen by size: does routing pay?

    python studies/routing.py --main gscan-binary-effnetlite0 --second RUN --band 288-768 --band 140-768

Scores both models once on studies/logo.py's rows (with --generated rows of genuine outputs) as stored, at q75 and
laundered, caches the per-image log-odds in --cache, then reports each routed system: images whose short side
(after the condition) lies in a band are judged by the second model, its log-odds moved by the difference of the
two cards' threshold log-odds so that one threshold applies, the rest by the main model. Same cost as one model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "studies"))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import logo  # noqa: E402
from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.scoring import threshold_log_odds  # noqa: E402
from forensics.training.evaluate import load_predictor, score_samples  # noqa: E402


def scored(model: str, samples: list, cache_dir: Path) -> dict:
    """{labels, names, thr, lo|COND, short|COND}, scored once per model and sample set and kept in cache_dir."""
    key = hashlib.sha256(json.dumps([model, [str(s.path) for s in samples]]).encode()).hexdigest()[:16]
    cache = cache_dir / f"{key}.npz"  # another model or row set never reads these scores
    if cache.is_file():
        return dict(np.load(cache))
    predict, card, _ = load_predictor(model)
    out = {"labels": np.array([s.label for s in samples]), "names": np.array([s.source for s in samples]),
           "thr": np.array(card.threshold)}
    for cond, spec in logo.CONDITIONS.items():
        probs, sizes = score_samples(samples, predict, card, parse_perturbation(spec))
        p = np.clip(probs[:, card.positive_index], 1e-12, 1 - 1e-12)
        out[f"lo|{cond}"], out[f"short|{cond}"] = np.log(p / (1 - p)), sizes.min(axis=1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def system(main: dict, second: dict, cond: str, band: tuple[int, int] | None) -> np.ndarray:
    """Per-image log-odds of the routed system on the main model's threshold scale."""
    if band is None:
        return main[f"lo|{cond}"]
    shift = threshold_log_odds(float(main["thr"])) - threshold_log_odds(float(second["thr"]))
    inside = (main[f"short|{cond}"] >= band[0]) & (main[f"short|{cond}"] < band[1])
    return np.where(inside, second[f"lo|{cond}"] + shift, main[f"lo|{cond}"])


def rows(main: dict, second: dict, band: tuple[int, int] | None) -> dict[str, list[str]]:
    """Row name -> a cell per condition: ROC-AUC and caught (fakes, against every real) or false positives."""
    labels, names, threshold = main["labels"], main["names"], threshold_log_odds(float(main["thr"]))
    out: dict[str, list[str]] = {}
    for cond in logo.CONDITIONS:
        lo = system(main, second, cond, band)
        for name in dict.fromkeys(names):
            mine = names == name
            if labels[mine][0] == 0:
                cell = f"{(lo[mine] >= threshold).mean():.0%} FP"
            else:
                pool = mine | (labels == 0)
                cell = f"{roc_auc_score(labels[pool], lo[pool]):.2f} / {(lo[mine] >= threshold).mean():.0%}"
            out.setdefault(name, []).append(cell)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--main", default="gscan-binary-effnetlite0")
    parser.add_argument("--second", required=True, help="a run folder or exported model")
    parser.add_argument("--band", action="append", default=[], metavar="LOW-HIGH", help="short side, px")
    parser.add_argument("--generated", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/gscan-routing"))
    parser.add_argument("--per-source", type=int, default=100)
    args = parser.parse_args()
    logo.add_generated_rows(args.generated)
    samples = logo.eval_set(argparse.Namespace(data=args.data, per_source=args.per_source, seed=0))
    main_scores = scored(args.main, samples, args.cache)
    second = scored(args.second, samples, args.cache)
    bands = [None] + [tuple(int(v) for v in b.split("-")) for b in args.band]
    tables = [rows(main_scores, second, b) for b in bands]
    print("| row | " + " | ".join("main alone" if b is None else f"{b[0]}-{b[1]} px routed" for b in bands) + " |")
    print("|---" * (len(bands) + 1) + "|")
    for name in tables[0]:
        print(f"| {name} | " + " | ".join(", ".join(t[name]) for t in tables) + " |")


if __name__ == "__main__":
    main()
