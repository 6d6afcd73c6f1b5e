"""Does scoring more of an image's tiles buy anything on generators a model never saw?

    python studies/tile_count.py MODEL.onnx [MODEL2.onnx ...] --held-out msg-stylegan ... [--docs]

Every tile of the non-overlapping grid (up to 64) of studies/logo.py's images is scored once, as stored and at JPEG
q75; the image score is the mean tile logit over the subset a card with max_tiles K would take (K = 9, 16, 25,
64). One threshold per K: the lowest that keeps every real row at or below 1% false positives, as stored and at
q75 together (the same rule for every K, so only the tile count differs). Per model, the rows of its held-out
generator (--held-out, one per model; "none" for every row): ROC-AUC and the share called fake, stored / q75.
Writes the "tile-count" section of docs/RESULTS.md with --docs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import logo  # noqa: E402
from results_doc import write_section  # noqa: E402
from forensics.card import TilingPolicy  # noqa: E402
from forensics.images import decode_file  # noqa: E402
from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.runtime import Detector  # noqa: E402
from forensics.scoring import log_odds  # noqa: E402
from forensics.tiling import extract_tiles, tile_origins  # noqa: E402

COUNTS = (9, 16, 25, 64)
CONDITIONS = {"stored": None, "q75": "jpeg:75"}


def tile_margins(detector: Detector, samples, spec: str | None) -> list[tuple[np.ndarray, list, tuple]]:
    """Per image: every grid tile's log-odds, the tiles' origins and the image's size."""
    perturb, policy = parse_perturbation(spec), replace(detector.card.tiling, max_tiles=64, first_tiles=0)
    out = []
    for sample in samples:
        pixels = decode_file(sample.path).pixels
        pixels = perturb(pixels) if perturb else pixels
        tiles, origins = extract_tiles(pixels, policy, detector.card.mean, detector.card.std)
        logits = np.concatenate([detector.run(tiles[i:i + 64])[0] for i in range(0, len(tiles), 64)])
        margins = np.array([log_odds(row[None], detector.card.positive_index) for row in logits])
        out.append((margins, origins, pixels.shape[:2]))
    return out


def image_scores(per_image, count: int, crop: int) -> np.ndarray:
    """Each image's mean tile log-odds over the tiles a card with max_tiles=count takes."""
    scores = []
    for margins, origins, (h, w) in per_image:
        index = {o: i for i, o in enumerate(origins)}
        wanted = tile_origins(h, w, TilingPolicy(crop=crop, max_tiles=count))
        scores.append(margins[[index[o] for o in wanted]].mean())
    return np.array(scores)


def lowest_threshold(real_scores: np.ndarray, fpr: float) -> float:
    """The lowest log-odds at which at most `fpr` of these reals score at or above it."""
    ranked = np.sort(real_scores)[::-1]
    return float(np.nextafter(ranked[int(np.floor(fpr * len(ranked)))], np.inf))


def rows_for(detector: Detector, samples, held_out: str) -> list[str]:
    from sklearn.metrics import roc_auc_score

    labels = np.array([s.label for s in samples])
    names = np.array([s.source for s in samples])
    per_cond = {c: tile_margins(detector, samples, spec) for c, spec in CONDITIONS.items()}
    rows = [name for name, (group, _) in logo.FAKE_ROWS.items() if held_out in ("none", group)]
    lines = []
    for count in COUNTS:
        scores = {c: image_scores(v, count, detector.card.tiling.crop) for c, v in per_cond.items()}
        threshold = max(lowest_threshold(np.concatenate([scores[c][names == r] for c in scores]), 0.01)
                        for r in logo.REAL_ROWS)
        for name in rows:
            mask = (labels == 0) | (names == name)
            cells = [(roc_auc_score(labels[mask], scores[c][mask]), (scores[c][names == name] >= threshold).mean())
                     for c in scores]
            lines.append(f"| {detector.path.name} | {held_out} | {name} | {count} | "
                         f"{cells[0][0]:.3f} / {cells[1][0]:.3f} | {cells[0][1]:.2f} / {cells[1][1]:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--held-out", nargs="+", required=True, help="per model: its held-out group, or none")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-source", type=int, default=100)
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args()
    if len(args.held_out) != len(args.models):
        parser.error("give one --held-out per model")
    samples = logo.eval_set(argparse.Namespace(data=args.data, per_source=args.per_source, seed=0))
    lines = ["## Tiles per image and held-out generators: `studies/tile_count.py`", "",
             "Every grid tile scored once (fp32), the image score the mean over the tiles a card with max_tiles "
             "K takes; per K one threshold, the lowest keeping every real row of studies/logo.py at or below 1% "
             "false positives as stored and at q75 together. ROC-AUC and called fake, stored / q75.", "",
             "| model | held out | row | tiles (at most) | ROC-AUC | called fake |", "|---|---|---|---|---|---|"]
    for model, held in zip(args.models, args.held_out):
        body = rows_for(Detector(model, device="cpu"), samples, held)
        lines += body
        print("\n".join(body), flush=True)
    if args.docs:
        write_section(REPO / "docs" / "RESULTS.md", "tile-count", lines)


if __name__ == "__main__":
    main()
