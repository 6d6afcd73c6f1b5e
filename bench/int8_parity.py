"""Verdict parity of a model's int8 variant against its fp32 export, as issue 21 defines it.

    python bench/int8_parity.py --model exported_models/gscan-binary-effnetlite0.onnx

Every image of the labelled folders (default ../shared/data/faces/val, wild/val and wild/train), as stored and
re-encoded to JPEG q75, scored by NAME.onnx and NAME.int8.onnx alike: the share given the same label at the
card's threshold (target >= 99.5%), and per source the ROC-AUC against the other class (target: within 0.005).
Writes docs/int8_parity.json and the "int8" section of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.runtime import int8_path  # noqa: E402
from forensics.training.data import discover  # noqa: E402
from forensics.training.evaluate import load_predictor, score_samples  # noqa: E402
from results_doc import write_section  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def per_source_auc(samples, scores: np.ndarray) -> dict[str, float]:
    labels = np.array([s.label for s in samples])
    sources = np.array([f"{'fake' if s.label else 'real'}/{s.source.split('/')[-1]}" for s in samples])
    out = {}
    for src in sorted(set(sources)):
        mine = sources == src
        other = labels != labels[mine][0]
        if other.any():
            y = np.concatenate([labels[mine], labels[other]])
            out[src] = float(roc_auc_score(y, np.concatenate([scores[mine], scores[other]])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "exported_models" / "gscan-binary-effnetlite0.onnx")
    ap.add_argument("--data", type=Path, nargs="+",
                    default=[DATA / "faces" / "val", DATA / "wild" / "val", DATA / "wild" / "train"])
    ap.add_argument("--docs", type=Path, default=REPO / "docs")
    args = ap.parse_args()
    samples = [s for folder in args.data for s in discover(folder, "binary")[0]]
    fp32, card, _ = load_predictor(str(args.model))
    int8, _, _ = load_predictor(str(int8_path(args.model)))
    report = {"model": args.model.name, "images": len(samples), "threshold": card.threshold, "encodings": {}}
    for tag, spec in (("stored", None), ("jpeg75", "jpeg:75")):
        scores = {}
        for name, predict in (("fp32", fp32), ("int8", int8)):
            t0 = time.perf_counter()
            probs, _ = score_samples(samples, predict, card, parse_perturbation(spec))
            scores[name] = probs[:, card.positive_index]
            report.setdefault("seconds", {})[f"{name}_{tag}"] = round(time.perf_counter() - t0, 1)
        same = float(np.mean((scores["fp32"] >= card.threshold) == (scores["int8"] >= card.threshold)))
        a, b = per_source_auc(samples, scores["fp32"]), per_source_auc(samples, scores["int8"])
        report["encodings"][tag] = {
            "same_label": same, "mean_abs_score_diff": float(np.abs(scores["fp32"] - scores["int8"]).mean()),
            "per_source": {k: {"fp32": a[k], "int8": b[k], "diff": b[k] - a[k]} for k in a}}
    worst = max(abs(v["diff"]) for e in report["encodings"].values() for v in e["per_source"].values())
    report["worst_auc_diff"] = worst
    report["passes"] = worst <= 0.005 and all(e["same_label"] >= 0.995 for e in report["encodings"].values())
    (args.docs / "int8_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"## int8 parity: `{args.model.name}`", "",
             f"{len(samples)} images ({', '.join(p.relative_to(DATA).as_posix() if p.is_relative_to(DATA) else str(p) for p in args.data)}), "
             f"threshold {card.threshold:.4f}. Same label at the threshold, and ROC-AUC per source against the "
             "other class (fp32 / int8).", ""]
    for tag, e in report["encodings"].items():
        lines.append(f"- {tag}: same label {e['same_label']:.2%}, mean |score difference| "
                     f"{e['mean_abs_score_diff']:.4f}; " + ", ".join(
                         f"{k} {v['fp32']:.3f}/{v['int8']:.3f}" for k, v in e["per_source"].items()))
    lines += ["", f"Worst ROC-AUC change {worst:.4f}; {'passes' if report['passes'] else 'fails'} the parity "
              "target (>= 99.5% same label, every ROC-AUC within 0.005, as stored and at q75)."]
    write_section(args.docs / "RESULTS.md", "int8", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
