"""Cache a detector's pooled last-stage features, once per image and condition, for every source of the public
record (../shared/sources, gathered with ../shared/tools/gather_sources.py) and of ../shared/data.

usage: python studies/feature_cache.py --gathered DIR --out CACHE [--model NAME] [--per-set 150]

For each source and condition (as stored, JPEG q75, laundered: resize 0.3 then JPEG q75) it writes
CACHE/SOURCE.CONDITION.npz: sha256, split, the tile-averaged pooled features (N x C) and the model's own
tile-averaged log-odds. Because a detector's head is linear on pooled features (mean over tiles of the logits is
the head of the mean features), studies/public_record.py fits a new head for every leave-one-source-out row in
seconds and scores it exactly as the scan would on the card's full tiling. Sources are sampled (per-set, by
sha256 order, so the same images every run); files are read byte for byte and never resized unless the condition
says so."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from forensics.images import decode_file, find_images  # noqa: E402
from forensics.perturb import LAUNDERED, parse_perturbation  # noqa: E402
from forensics.runtime import open_detector, resolve_model  # noqa: E402
from forensics.scoring import log_odds  # noqa: E402

CONDITIONS = {"stored": None, "q75": "jpeg:75", "laundered": LAUNDERED}
SHARED = Path(__file__).resolve().parents[2] / "shared"


def gathered_sources(root: Path) -> list[dict]:
    """One entry per gathered set: name, label, family, licence, files (split 2:1 train:test by sha256)."""
    sets: dict[str, dict] = {}
    for index in sorted(root.glob("*/sources.csv")):
        for row in csv.DictReader(index.open()):
            entry = sets.setdefault(row["set"], {"name": row["set"], "label": row["label"], "origin": "public",
                                                 "generator": row["generator"], "license": row["license"],
                                                 "repo": row["repo"], "files": []})
            entry["files"].append((index.parent / row["set"] / _gathered_name(row), row["sha256"]))
    return list(sets.values())


def _gathered_name(row: dict) -> str:
    owner, name = row["repo"].split("/")
    return f"{owner}__{name}__{row['path'].replace('/', '__')}"


def shared_sources(data: Path) -> list[dict]:
    """The sources of ../shared/data's faces, gans and wild (its own train/val split)."""
    out = []
    for folder in sorted(p for p in data.glob("*/*/*/*") if p.is_dir()) + sorted(data.glob("gans/*/*")):
        parts = folder.relative_to(data).parts
        if parts[0] == "gans":
            group, split, source, label = "gans", parts[1], parts[2], "fake"
        else:
            group, split, label, source = parts
        out.append({"name": f"{group}-{label}-{source}", "label": label, "origin": "shared", "generator": source,
                    "license": "see ../shared/data/manifest.csv", "split": "train" if split == "train" else "test",
                    "folder": folder})
    merged: dict[str, dict] = {}
    for entry in out:  # one source, both splits
        m = merged.setdefault(entry["name"], {k: v for k, v in entry.items() if k not in ("split", "folder")}
                              | {"files": []})
        m["files"] += [(p, entry["split"]) for p in sorted(find_images(entry["folder"]))]
    return list(merged.values())


def sample(entry: dict, per_set: int) -> list[tuple[Path, str]]:
    """Up to per_set files; gathered sets split 2:1 by sha256, shared ones by their own split."""
    files = entry["files"]
    if entry["origin"] == "public":
        files = sorted(files, key=lambda f: f[1])[:per_set]
        return [(p, "test" if int(sha[:2], 16) % 3 == 0 else "train") for p, sha in files]
    train = [f for f in files if f[1] == "train"][: per_set * 2 // 3]
    test = [f for f in files if f[1] == "test"][: per_set - len(train)]
    return train + test


def cache_source(entry: dict, detector, out: Path, per_set: int) -> None:
    targets = {c: out / f"{entry['name']}.{c}.npz" for c in CONDITIONS}
    if all(t.exists() for t in targets.values()):
        return
    rows = {c: {"sha256": [], "split": [], "features": [], "log_odds": [], "short_side": []} for c in CONDITIONS}
    prep = detector.preprocessing
    for path, split in sample(entry, per_set):
        decoded = decode_file(path)
        if not decoded.ok:
            continue
        for condition, spec in CONDITIONS.items():
            pixels = parse_perturbation(spec)(decoded.pixels) if spec else decoded.pixels
            tiles, _ = prep.tiles(pixels)
            logits, features = detector.run_outputs(tiles, ["logits", "features"])
            cell = rows[condition]
            cell["sha256"].append(decoded.sha256)
            cell["split"].append(split)
            cell["features"].append(features.mean(axis=(2, 3)).mean(axis=0))
            cell["log_odds"].append(log_odds(logits, 1))
            cell["short_side"].append(min(pixels.shape[:2]))
    for condition, cell in rows.items():
        np.savez(targets[condition], label=entry["label"], **{k: np.asarray(v) for k, v in cell.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gathered", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="gscan-binary-effnetlite0")
    ap.add_argument("--per-set", type=int, default=150)
    ap.add_argument("--only", default="", help="comma-separated source names")
    a = ap.parse_args()
    detector = open_detector(resolve_model(a.model), "cpu")
    a.out.mkdir(parents=True, exist_ok=True)
    sources = gathered_sources(a.gathered) + shared_sources(SHARED / "data")
    (a.out / "sources.csv").write_text("name,label,origin,generator,license\n" + "".join(
        f"{s['name']},{s['label']},{s['origin']},{s['generator']},\"{s['license']}\"\n" for s in sources))
    only = set(filter(None, a.only.split(",")))
    for entry in sources:
        if only and entry["name"] not in only:
            continue
        cache_source(entry, detector, a.out, a.per_set)
        print(entry["name"], flush=True)


if __name__ == "__main__":
    main()
