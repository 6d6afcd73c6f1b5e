"""The detector trained on the public record, measured by leaving each source out in turn.

usage: python studies/public_record.py --cache CACHE [--json docs/public_record.json] [--export-head FILE]

CACHE is what studies/feature_cache.py wrote: per source and condition (as stored, JPEG q75, laundered), each
sampled image's tile-averaged pooled features from the shipped detector's backbone and the shipped detector's own
log-odds. A detector's head is linear on those features, so a new head is a logistic regression fitted here in
seconds, and its score is exactly what the same backbone with that head would give on the same tiles.

Rows (each as stored, at q75 and laundered):
- a whole generator family held out (the CycleGAN/pix2pix family, the diffusion family, the StyleGAN family of
  the study): the head is fitted without any of it; ROC-AUC against every real image of the test split and the
  share caught at a threshold chosen without it;
- a whole real source group held out (studio, stock, camera, Flickr, demo photos, ...): its false-positive rate at
  a threshold chosen without it;
and the shipped detector's figures on the same images beside each. The threshold rule is the shipped card's: the
highest per-source threshold keeping each real source in training at or below 1% false positives (as stored and
at q75 together), on that source's test-split images.

Sets whose licence forbids redistribution (the Chicago Face Database copies) are never trained on: they are rows
of their own, always held out."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

CONDITIONS = ("stored", "q75", "laundered")
EVAL_ONLY = {"cfd", "cfd-gray", "cfd-nikon-exif"}  # Chicago Face Database: research use, no redistribution
FAMILIES = {
    "cyclegan": ["monet-cyclegan-a", "monet-cyclegan-b", "horse2zebra", "monet2photo", "wild-fake-pix2pix-facades"],
    "diffusion": ["ldm-txt2img", "sd1-512", "sd1-384", "sd1-finetune", "edm-96", "wild-fake-latent-diffusion",
                  "wild-fake-glid3-xl", "wild-fake-sd15-merge"],
    "stylegan": ["faces-fake-stylegan-family-unknown", "faces-fake-stylegan2-tpdne", "gans-fake-msg-stylegan-celebahq",
                 "gans-fake-pggan-celebahq", "gans-fake-stylegan-celebahq", "gans-fake-stylegan-family-unknown",
                 "gans-fake-stylegan2-tpdne"],
}
REAL_GROUPS = {
    "studio": ["london-neutral", "london-smiling", "canada", "studio-masked"],
    "stock": ["stock-portraits"],
    "camera": ["camera-exif", "camera-photoprism", "camera-exifr", "camera-sigal", "camera-lychee", "camera-sharp"],
    "demo-photos": ["faces-demo", "people-demo", "crowds-demo"],
    "low-light": ["low-light"],
    "flickr": ["urban-flickr"],
    "monet-photos": ["monet-photos"],
    "horse2zebra-reals": ["horse2zebra-reals"],
    "ffhq-faces": ["faces-real-ffhq-thumbnail", "faces-real-ffhq-like-1024"],
    "ciplab-600": ["faces-real-ciplab-600"],
    "imagenet-photo": ["faces-real-imagenet-photo"],
    "wild-reals": ["wild-real-dreambooth-photo", "wild-real-pix2pix-facades"],
}
TARGET_FPR = 0.01


def load(cache: Path) -> dict:
    """{source: {condition: arrays}} with label and licence."""
    meta = {r["name"]: r for r in csv.DictReader((cache / "sources.csv").open())}
    data = {}
    for name, row in meta.items():
        cells = {}
        for condition in CONDITIONS:
            path = cache / f"{name}.{condition}.npz"
            if not path.exists():
                break
            z = np.load(path)
            cells[condition] = {k: z[k] for k in ("features", "log_odds", "split")}
        if len(cells) == len(CONDITIONS) and len(cells["stored"]["features"]):
            data[name] = {"label": row["label"], "license": row["license"], **cells}
    return data


def fit_head(data: dict, sources: list[str], c: float = 0.5, seed: int = 0):
    """A logistic-regression head on the train-split images of `sources`, every condition, each class weighted
    equally and each source equally within its class."""
    from sklearn.linear_model import LogisticRegression

    x, y, w = [], [], []
    per_class = {lab: [s for s in sources if data[s]["label"] == lab] for lab in ("real", "fake")}
    for label, names in per_class.items():
        for name in names:
            for condition in CONDITIONS:
                cell = data[name][condition]
                keep = cell["split"] == "train"
                if not keep.any():
                    continue
                x.append(cell["features"][keep])
                y.append(np.full(keep.sum(), label == "fake"))
                w.append(np.full(keep.sum(), 1.0 / (keep.sum() * len(names) * len(CONDITIONS))))
    x, y, w = np.concatenate(x), np.concatenate(y), np.concatenate(w)
    mean, std = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    model.fit((x - mean) / std, y, sample_weight=w * len(y))
    weight = model.coef_[0] / std
    bias = float(model.intercept_[0] - (model.coef_[0] * mean / std).sum())
    return weight, bias


def scores(data: dict, name: str, condition: str, head, split: str | None = "test") -> np.ndarray:
    cell = data[name][condition]
    keep = np.ones(len(cell["split"]), bool) if split is None else cell["split"] == split
    if head is None:
        return cell["log_odds"][keep]
    weight, bias = head
    return cell["features"][keep] @ weight + bias


def choose_threshold(data: dict, reals: list[str], head) -> float:
    """The highest per-source threshold keeping each real source at or below 1% false positives, as stored and at
    q75 together, on its test-split images (the shipped card's rule)."""
    per_source = []
    for name in reals:
        values = np.concatenate([scores(data, name, c, head) for c in ("stored", "q75")])
        if len(values):
            per_source.append(np.quantile(values, 1 - TARGET_FPR, method="higher") + 1e-6)
    return float(max(per_source))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def family_rows(data: dict, reals_all: list[str], fakes_all: list[str], shipped_threshold: float) -> dict:
    rows = {}
    train_reals = [r for r in reals_all if r not in EVAL_ONLY]
    for family, members in FAMILIES.items():
        members = [m for m in members if m in data]
        head = fit_head(data, train_reals + [f for f in fakes_all if f not in members])
        threshold = choose_threshold(data, train_reals, head)
        row = {}
        for condition in CONDITIONS:
            neg_new = np.concatenate([scores(data, r, condition, head) for r in reals_all])
            neg_old = np.concatenate([scores(data, r, condition, None) for r in reals_all])
            for m in members:
                # a held-out source is scored on every sampled image (none of it was trained on)
                pos_new, pos_old = scores(data, m, condition, head, None), scores(data, m, condition, None, None)
                row.setdefault(m, {})[condition] = {
                    "auc": auc(pos_new, neg_new), "caught": float((pos_new >= threshold).mean()),
                    "shipped_auc": auc(pos_old, neg_old),
                    "shipped_caught": float((pos_old >= shipped_threshold).mean()), "n": int(len(pos_new))}
        rows[family] = row
    return rows


def real_rows(data: dict, reals_all: list[str], fakes_all: list[str], shipped_threshold: float) -> dict:
    rows = {}
    train_reals = [r for r in reals_all if r not in EVAL_ONLY]
    groups = {**REAL_GROUPS, "cfd (never trained on)": sorted(EVAL_ONLY)}
    for group, members in groups.items():
        members = [m for m in members if m in data]
        held = [r for r in train_reals if r not in members]
        head = fit_head(data, held + fakes_all)
        threshold = choose_threshold(data, held, head)
        for m in members:
            rows[m] = {"group": group}
            for condition in CONDITIONS:
                new, old = scores(data, m, condition, head, None), scores(data, m, condition, None, None)
                rows[m][condition] = {"fpr": float((new >= threshold).mean()),
                                      "shipped_fpr": float((old >= shipped_threshold).mean()), "n": int(len(new))}
    return rows


def mixture(data: dict, reals_all: list[str], fakes_all: list[str], shipped_threshold: float) -> dict:
    """The head fitted on every trainable source: what would ship. Per source and condition, its test-split
    figures at its threshold beside the shipped model's."""
    train_reals = [r for r in reals_all if r not in EVAL_ONLY]
    head = fit_head(data, train_reals + fakes_all)
    threshold = choose_threshold(data, train_reals, head)
    per_source = {}
    for name in reals_all + fakes_all:
        split = None if name in EVAL_ONLY else "test"
        cell = {}
        for condition in CONDITIONS:
            new, old = scores(data, name, condition, head, split), scores(data, name, condition, None, split)
            cell[condition] = {"flagged": float((new >= threshold).mean()) if len(new) else None,
                               "shipped_flagged": float((old >= shipped_threshold).mean()) if len(old) else None,
                               "n": int(len(new))}
        per_source[name] = {"label": data[name]["label"], **cell}
    return {"threshold_log_odds": threshold, "head": head, "per_source": per_source}


def shipped_table(data: dict, reals_all: list[str], shipped_threshold: float) -> dict:
    """The shipped detector on every sampled image of every source (the public sources were never trained on):
    share called fake at its threshold, and for fakes the ROC-AUC against every real image, per condition."""
    table = {}
    for name, cell in data.items():
        table[name] = {"label": cell["label"]}
        for condition in CONDITIONS:
            values = scores(data, name, condition, None, None)
            entry = {"flagged": float((values >= shipped_threshold).mean()), "n": int(len(values))}
            if cell["label"] == "fake":
                neg = np.concatenate([scores(data, r, condition, None, None) for r in reals_all])
                entry["auc"] = auc(values, neg)
            table[name][condition] = entry
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--shipped-threshold", type=float, default=0.9792040586471559)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--export-head", type=Path, help="write the mixture head (weight, bias, threshold) as .npz")
    a = ap.parse_args()
    data = load(a.cache)
    reals = sorted(n for n, d in data.items() if d["label"] == "real")
    fakes = sorted(n for n, d in data.items() if d["label"] == "fake")
    shipped = float(np.log(a.shipped_threshold / (1 - a.shipped_threshold)))
    result = {"families": family_rows(data, reals, fakes, shipped), "reals": real_rows(data, reals, fakes, shipped),
              "shipped": shipped_table(data, reals, shipped)}
    mix = mixture(data, reals, fakes, shipped)
    if a.export_head:
        np.savez(a.export_head, weight=mix["head"][0], bias=mix["head"][1],
                 threshold_log_odds=mix["threshold_log_odds"])
    result["mixture"] = {k: v for k, v in mix.items() if k != "head"}
    result["trained_on"] = {n: data[n]["license"] for n in reals + fakes if n not in EVAL_ONLY}
    summarise(result)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def summarise(result: dict) -> None:
    for family, row in result["families"].items():
        for c in CONDITIONS:
            new = np.mean([r[c]["auc"] for r in row.values()])
            old = np.mean([r[c]["shipped_auc"] for r in row.values()])
            cn = np.mean([r[c]["caught"] for r in row.values()])
            co = np.mean([r[c]["shipped_caught"] for r in row.values()])
            print(f"family {family:10s} {c:9s} auc new {new:.3f} shipped {old:.3f}   caught new {cn:.2f} "
                  f"shipped {co:.2f}")
    worst = {c: max((r[c]["fpr"], n) for n, r in result["reals"].items()) for c in CONDITIONS}
    print("held-out real sources, worst FPR:", {c: f"{v[0]:.3f} {v[1]}" for c, v in worst.items()})
    mix = result["mixture"]["per_source"]
    for c in CONDITIONS:
        fp = max((v[c]["flagged"] or 0, n) for n, v in mix.items() if v["label"] == "real")
        print(f"mixture {c}: worst real FPR {fp[0]:.3f} ({fp[1]})")


if __name__ == "__main__":
    main()
