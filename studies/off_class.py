"""How an attribution model behaves off its classes: top-1 probabilities on images of no known generator.

    python studies/off_class.py RUN_DIR IMAGES_DIR [--update-card]

Every image is forced onto one of the model's generators; this prints (and with --update-card stores in the run's
card, before export) which generator real images are assigned to and how confident the model is about it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forensics.card import ModelCard  # noqa: E402
from forensics.images import find_images  # noqa: E402
from forensics.training.data import Sample  # noqa: E402
from forensics.training.evaluate import load_predictor, score_samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--update-card", action="store_true")
    args = parser.parse_args()
    predict, card, _ = load_predictor(str(args.run_dir))
    samples = [Sample(p, 0, p.parent.name) for p in find_images(args.images)]
    probs, _ = score_samples(samples, predict, card)
    top = probs.max(axis=1)
    picks = Counter(card.classes[i] for i in probs.argmax(axis=1))
    report = {"images": str(args.images), "n": len(samples),
              "top1_probability_quantiles": {q: float(np.quantile(top, q / 100)) for q in (5, 25, 50, 75, 95)},
              "share_top1_above_0.9": float((top > 0.9).mean()),
              "assigned_to": {k: v / len(samples) for k, v in picks.most_common()}}
    print(json.dumps(report, indent=2))
    if args.update_card:
        path = args.run_dir / "card.json"
        saved = ModelCard.load(path)
        saved.metrics["off_class_real_images"] = report
        saved.notes.append("Knows only the generators in `classes`: an image from any other generator (or a real "
                           "image) is forced onto one of them; see metrics.off_class_real_images.")
        saved.save(path)


if __name__ == "__main__":
    main()
