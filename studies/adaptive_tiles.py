"""Adaptive tiling measured against scoring every tile, on the same model and images, side by side.

    python studies/adaptive_tiles.py --first-tiles 2 --margin 3

The shipped model's card, with `first_tiles` and `margin` set, scans faces/val, wild/val and wild/train (1,204
images) as stored and re-encoded to JPEG q75: the share of images given the same label as with every tile (target
>= 99.5%), per-source ROC-AUC against the other class (target: within 0.005), tiles per image, and images/s of
both. Writes --out (JSON); the table in docs/RESULTS.md ("Adaptive tiling") is written from it by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forensics.engines.local import LocalEngine  # noqa: E402
from forensics.options import ScanOptions  # noqa: E402
from forensics.perturb import jpeg_roundtrip  # noqa: E402
from forensics.runtime import Detector, resolve_model  # noqa: E402
from int8_parity import per_source_auc  # noqa: E402
from forensics.training.data import discover  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def adaptive_copy(model: Path, first: int, margin: float, out: Path) -> Path:
    import onnx

    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "gscan_card":
            card = json.loads(prop.value)
            card["tiling"].update(first_tiles=first, margin=margin)
            prop.value = json.dumps(card)
    onnx.save(proto, str(out))
    return out


def scan(detector: Detector, paths: list[Path]) -> tuple[dict[str, dict], float]:
    rows: list[dict] = []
    t0 = time.perf_counter()
    LocalEngine(detector, None, ScanOptions()).scan(paths, rows.extend)
    return {r["path"]: r for r in rows}, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gscan-binary-effnetlite0")
    ap.add_argument("--first-tiles", type=int, default=2)
    ap.add_argument("--margin", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "adaptive_tiles.json")
    args = ap.parse_args()
    model = resolve_model(args.model)
    samples = [s for f in ("faces/val", "wild/val", "wild/train") for s in discover(DATA / f, "binary")[0]]
    with tempfile.TemporaryDirectory() as tmp:
        q75 = Path(tmp) / "q75"
        for i, s in enumerate(samples):
            (q75 / str(i)).mkdir(parents=True)
            jpeg_roundtrip(Image.open(s.path).convert("RGB"), 75).save(q75 / str(i) / "x.png")
        full = Detector(model, device="cpu")
        fast = Detector(adaptive_copy(model, args.first_tiles, args.margin, Path(tmp) / "adaptive.onnx"), device="cpu")
        report = {"model": model.name, "first_tiles": args.first_tiles, "margin": args.margin, "encodings": {}}
        for tag, paths in (("stored", [s.path for s in samples]),
                           ("jpeg75", [q75 / str(i) / "x.png" for i in range(len(samples))])):
            a, ta = scan(full, paths)
            b, tb = scan(fast, paths)
            keys = [str(p) for p in paths]
            sa = np.array([a[k]["score"] for k in keys])
            sb = np.array([b[k]["score"] for k in keys])
            thr = full.card.threshold
            aa, ab = per_source_auc(samples, sa), per_source_auc(samples, sb)
            report["encodings"][tag] = {
                "same_label": float(np.mean((sa >= thr) == (sb >= thr))),
                "tiles_per_image": [float(np.mean([a[k]["tiles"] for k in keys])),
                                    float(np.mean([b[k]["tiles"] for k in keys]))],
                "images_per_second": [len(keys) / ta, len(keys) / tb],
                "worst_auc_diff": max(abs(ab[k] - aa[k]) for k in aa),
                "per_source": {k: [aa[k], ab[k]] for k in aa}}
            print(tag, json.dumps({k: v for k, v in report["encodings"][tag].items() if k != "per_source"}),
                  flush=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
