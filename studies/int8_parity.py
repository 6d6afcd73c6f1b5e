"""Verdict parity of what a CPU scan runs (NAME.int8.onnx under its card's policies: the fp32 model near the
threshold, adaptive tiling if set) against NAME.onnx on every tile, as issue 21 defines it.

    python studies/int8_parity.py --model exported_models/gscan-binary-effnetlite0.onnx

Every image of the labelled folders (default ../shared/data/faces/val, wild/val and wild/train), as stored and
re-encoded to JPEG q75: the share given the same label at the card's threshold (target >= 99.5%), and per source
the ROC-AUC against the other class (target: within 0.005). Also int8 alone on every tile, to show what the
rescore margin buys. Writes docs/int8_parity.json and the "int8" section of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.runtime import Detector, int8_path, open_detector  # noqa: E402
from forensics.scoring import score_images  # noqa: E402
from forensics.training.data import discover  # noqa: E402
from forensics.training.evaluate import score_samples  # noqa: E402
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
    ap.add_argument("--logo", action="store_true",
                    help="also score studies/logo.py's rows (every generator source against the pooled reals)")
    ap.add_argument("--logo-reference", type=Path, default=None,
                    help="the every-tile model for those rows (default --model; give one without adaptive tiling)")
    args = ap.parse_args()
    samples = [s for folder in args.data for s in discover(folder, "binary")[0]]
    reference, variant = Detector(args.model, device="cpu"), open_detector(int8_path(args.model), device="cpu")
    card = reference.card
    counts = {"images": 0, "tiles": 0, "tiles_all": 0, "rescored": 0}

    def scan(parts):
        scores = score_images(variant, parts, card.threshold)
        counts["images"] += len(parts)
        counts["tiles_all"] += sum(map(len, parts))
        counts["tiles"] += sum(len(s.logits) for s in scores)
        counts["rescored"] += sum(s.rescored for s in scores)
        return [s.logits for s in scores]

    variants = {"fp32": every_tile(reference), "int8 alone": every_tile(variant), "scan": scan}
    report = {"model": args.model.name, "variant": variant.path.name, "rescore_margin": variant.card.rescore_margin,
              "tiling": dataclasses.asdict(variant.card.tiling), "images": len(samples),
              "threshold": card.threshold, "encodings": {}}
    for tag, spec in (("stored", None), ("jpeg75", "jpeg:75")):
        scores = {}
        for name, predict in variants.items():
            counts.update(dict.fromkeys(counts, 0))
            t0 = time.perf_counter()
            probs, _ = score_samples(samples, predict, card, parse_perturbation(spec))
            scores[name] = probs[:, card.positive_index]
            report.setdefault("seconds", {})[f"{name}_{tag}"] = round(time.perf_counter() - t0, 1)
        ref = per_source_auc(samples, scores["fp32"])
        out = report["encodings"][tag] = {"tiles_per_image": counts["tiles"] / counts["images"],
                                          "tiles_per_image_all": counts["tiles_all"] / counts["images"],
                                          "rescored": counts["rescored"] / counts["images"]}
        for name in ("int8 alone", "scan"):
            got = per_source_auc(samples, scores[name])
            out[name] = {"same_label": float(np.mean((scores["fp32"] >= card.threshold)
                                                     == (scores[name] >= card.threshold))),
                         "mean_abs_score_diff": float(np.abs(scores["fp32"] - scores[name]).mean()),
                         "worst_auc_diff": max(abs(got[k] - ref[k]) for k in ref),
                         "per_source": {k: {"fp32": ref[k], name: got[k]} for k in ref}}
    if args.logo:
        report["logo"] = logo_rows(args.logo_reference or args.model, int8_path(args.model))
    scan_rows = [e["scan"] for e in report["encodings"].values()]
    report["passes"] = all(r["same_label"] >= 0.995 and r["worst_auc_diff"] <= 0.005 for r in scan_rows)
    (args.docs / "int8_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    write_section(args.docs / "RESULTS.md", "int8", section_lines(report, args.data))
    print("\n".join(section_lines(report, args.data)))


def logo_rows(reference: Path, variant: Path) -> dict:
    """studies/logo.py's rows for the reference and for what the scan runs (both through evaluate.load_predictor,
    which scores exported models under their cards' policies)."""
    from logo import eval_set, score

    samples = eval_set(argparse.Namespace(data=DATA, per_source=100, seed=0))
    return {name: score(str(path), samples, set(), name) for name, path in (("fp32", reference), ("scan", variant))}


def logo_lines(logo: dict) -> list[str]:
    ref, scan = logo["fp32"], logo["scan"]
    lines = ["", "studies/logo.py's rows, the reference (every tile, fp32) against the scan: ROC-AUC and the share "
             "called fake (reals: false positives) at the threshold, as stored / JPEG q75.", "",
             "| row | n | ROC-AUC fp32 | ROC-AUC scan | called fake fp32 | called fake scan |", "|---|---|---|---|---|---|"]
    conds = ("as stored", "jpeg q75")
    for name, row in ref["fakes"].items():
        other = scan["fakes"][name]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(
            " / ".join(f"{r[c][k]:.3f}" for c in conds) for k, r in
            (("roc_auc", row), ("roc_auc", other))) + " | " + " | ".join(
            " / ".join(f"{r[c]['tpr']:.1%}" for c in conds) for r in (row, other)) + " |")
    for name, row in ref["reals"].items():
        other = scan["reals"][name]
        lines.append(f"| {name} | {row['n']} | | | " + " | ".join(
            " / ".join(f"{r[c]['fpr']:.1%}" for c in conds) for r in (row, other)) + " |")
    worst = max(abs(scan["fakes"][n][c]["roc_auc"] - r[c]["roc_auc"]) for n, r in ref["fakes"].items() for c in conds)
    lines += ["", f"Worst ROC-AUC change over these rows: {worst:.4f}."]
    return lines


def every_tile(detector: Detector):
    return lambda parts: np.split(detector.run(parts)[0], np.cumsum([len(p) for p in parts])[:-1])


def section_lines(report: dict, data: list[Path]) -> list[str]:
    enc = report["encodings"]
    folders = ", ".join(p.relative_to(DATA).as_posix() if p.is_relative_to(DATA) else str(p) for p in data)
    lines = [f"## int8 parity: `{report['variant']}` against `{report['model']}`", "",
             f"{report['images']} images ({folders}), threshold {report['threshold']:.4f}, as stored / re-encoded "
             f"to JPEG q75. The reference is `{report['model']}` on every tile; `scan` is what a CPU scan runs: "
             f"the int8 variant, the fp32 model again for images within {report['rescore_margin']:g} log-odds of "
             f"the threshold, tiling {report['tiling']}.", "",
             "| variant | same label | worst per-source ROC-AUC change | mean abs score change | tiles per image "
             "| re-scored in fp32 |", "|---|---|---|---|---|---|"]
    for name in ("int8 alone", "scan"):
        rows = [enc[t][name] for t in ("stored", "jpeg75")]
        tiles = (" / ".join(f"{enc[t]['tiles_per_image']:.2f}" for t in enc) + " (of "
                 + " / ".join(f"{enc[t]['tiles_per_image_all']:.2f}" for t in enc) + ")") if name == "scan" else "all"
        rescored = " / ".join(f"{enc[t]['rescored']:.1%}" for t in enc) if name == "scan" else "none"
        lines.append(f"| {name} | " + " / ".join(f"{r['same_label']:.2%}" for r in rows) + " | "
                     + " / ".join(f"{r['worst_auc_diff']:.4f}" for r in rows) + " | "
                     + " / ".join(f"{r['mean_abs_score_diff']:.4f}" for r in rows) + f" | {tiles} | {rescored} |")
    lines += ["", f"The scan {'passes' if report['passes'] else 'fails'} the parity target (>= 99.5% same label, "
              "every per-source ROC-AUC within 0.005, as stored and at q75)."]
    return lines + (logo_lines(report["logo"]) if "logo" in report else [])


if __name__ == "__main__":
    main()
