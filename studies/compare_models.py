"""Two detectors side by side on the same cached images (studies/feature_cache.py run once per model): per source
and condition, the share called fake at each model's own threshold and, for fakes, the ROC-AUC against every real
image both caches hold. Only images both caches hold are compared; images a model trained on can be left out by
split (`--split test`: the feature cache's test split of each source).

usage: python studies/compare_models.py CACHE_A THRESHOLD_A CACHE_B THRESHOLD_B [--split test] [--json FILE]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CONDITIONS = ("stored", "q75", "laundered")


def load(cache: Path, split: str | None) -> dict:
    out = {}
    for path in sorted(cache.glob("*.npz")):
        name, condition = path.stem.rsplit(".", 1)
        z = np.load(path)
        keep = np.ones(len(z["sha256"]), bool) if split is None else z["split"] == split
        out.setdefault(name, {"label": str(z["label"])})[condition] = dict(zip(z["sha256"][keep], z["log_odds"][keep]))
    return out


def auc(pos, neg) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache_a", type=Path)
    ap.add_argument("threshold_a", type=float)
    ap.add_argument("cache_b", type=Path)
    ap.add_argument("threshold_b", type=float)
    ap.add_argument("--split", default=None)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    models = {"a": (load(a.cache_a, a.split), np.log(a.threshold_a / (1 - a.threshold_a))),
              "b": (load(a.cache_b, a.split), np.log(a.threshold_b / (1 - a.threshold_b)))}
    names = sorted(set(models["a"][0]) & set(models["b"][0]))
    result = {}
    for condition in CONDITIONS:
        common = {n: sorted(set(models["a"][0][n][condition]) & set(models["b"][0][n][condition])) for n in names}
        reals = [n for n in names if models["a"][0][n]["label"] == "real"]
        for n in names:
            row = result.setdefault(n, {"label": models["a"][0][n]["label"], "n": len(common[n])})
            for key, (data, threshold) in models.items():
                values = np.array([data[n][condition][s] for s in common[n]])
                cell = {"flagged": float((values >= threshold).mean()) if len(values) else None}
                if row["label"] == "fake" and len(values):
                    neg = np.concatenate([[data[r][condition][s] for s in common[r]] for r in reals])
                    cell["auc"] = auc(values, neg)
                row[f"{key}_{condition}"] = cell
    for n, row in result.items():
        print(f"{n:40s} {row['label']:5s} n={row['n']:3d} " + "  ".join(
            f"{c}: " + "/".join(f"{row[f'{k}_{c}']['flagged']:.2f}" + (f" {row[f'{k}_{c}']['auc']:.2f}"
                                if 'auc' in row[f'{k}_{c}'] else "") for k in "ab") for c in CONDITIONS))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
