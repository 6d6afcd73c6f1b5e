"""How a scan turns each image's tiles into logits under its model card's policies, the same in every engine and
in evaluation:

- adaptive tiling (card.tiling.first_tiles, margin): the first tiles of every image go first; the rest only for
  images whose mean log-odds lie within `margin` of the threshold's;
- for an int8 variant (card.rescore_margin): the images whose int8 log-odds lie within that margin of the
  threshold's are scored again, on the same tiles, by the fp32 model it was quantized from (detector.exact), so
  int8 error cannot push a verdict across the threshold (docs/RESULTS.md, "int8 parity").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .runtime import Detector



@dataclass
class ImageScores:
    logits: np.ndarray  # one row per tile scored: the image's first len(logits) tiles
    cams: np.ndarray | None = None
    rescored: bool = False  # by the fp32 model, near the threshold


def log_odds(tile_logits: np.ndarray, positive: int) -> float:
    """The image's mean logit difference, positive class minus the other: the log-odds its score comes from."""
    with np.errstate(all="ignore"):  # finite logits near float32's limit: float64, and never a raw warning
        mean = tile_logits.astype(np.float64).mean(axis=0)
        return float(mean[positive] - mean[1 - positive])


def threshold_log_odds(threshold: float) -> float:
    threshold = min(max(threshold, 1e-12), 1.0 - 1e-12)  # 0 and 1 are legal thresholds; their log-odds are not finite
    return float(np.log(threshold / (1.0 - threshold)))


def relative_score(score: float, threshold: float) -> float:
    """The score as people read it: its log-odds measured from the threshold's, mapped back to 0-1, so that the
    threshold is 0.5 and equal steps in evidence look equal (with a threshold at 0.979, a raw 0.9991 is 0.96 and
    a raw 0.9800 is 0.51). Shown beside the raw score; the report keeps the raw one for machines."""
    clipped = min(max(score, 1e-12), 1.0 - 1e-12)
    difference = float(np.log(clipped / (1.0 - clipped))) - threshold_log_odds(threshold)
    return float(1.0 / (1.0 + np.exp(-np.clip(difference, -700, 700))))


def near_threshold(tile_logits: np.ndarray, positive: int, threshold: float, margin: float) -> bool:
    return abs(log_odds(tile_logits, positive) - threshold_log_odds(threshold)) < margin


def score_images(detector: Detector, tiles: list[np.ndarray], threshold: float,
                 with_cams: bool = False) -> list[ImageScores]:
    """Each image's tile logits (and maps, if asked) under the card's adaptive tiling and rescore margin."""
    card = detector.card
    binary = card.task == "binary"
    first = card.tiling.first_tiles if binary and not detector.all_tiles else 0
    scores = _run(detector, [t[:first] if first else t for t in tiles], with_cams)
    if first:
        more = [i for i, (t, s) in enumerate(zip(tiles, scores)) if len(t) > first
                and near_threshold(s.logits, card.positive_index, threshold, card.tiling.margin)]
        for i, extra in zip(more, _run(detector, [tiles[i][first:] for i in more], with_cams)):
            s = scores[i]
            s.logits = np.concatenate([s.logits, extra.logits])
            s.cams = None if s.cams is None else np.concatenate([s.cams, extra.cams])
    if binary and detector.exact is not None:
        again = [i for i, s in enumerate(scores)
                 if near_threshold(s.logits, card.positive_index, threshold, card.rescore_margin)]
        exact = _run(detector.exact, [tiles[i][:len(scores[i].logits)] for i in again], with_cams)
        for i, s in zip(again, exact):
            s.rescored = True
            scores[i] = s
    return scores


MAX_CALL_BYTES = 64 * 1024 * 1024  # one image with every tile (--tiles all) runs in calls of at most this input


def _run(detector: Detector, parts: list[np.ndarray], with_cams: bool) -> list[ImageScores]:
    """One call for all the parts (several when they hold more than MAX_CALL_BYTES); each part's rows back."""
    if not parts:
        return []
    batch = np.concatenate(parts) if len(parts) > 1 else parts[0]
    step = max(1, MAX_CALL_BYTES // max(1, batch[0].nbytes)) if len(batch) else 1
    if len(batch) <= step:
        logits, cams = detector.run(parts, with_cams=with_cams)
    else:
        runs = [detector.run(batch[i:i + step], with_cams=with_cams) for i in range(0, len(batch), step)]
        logits = np.concatenate([r[0] for r in runs])
        cams = None if runs[0][1] is None else np.concatenate([r[1] for r in runs])
    bounds = np.cumsum([0, *map(len, parts)])
    return [ImageScores(logits[a:b], None if cams is None else cams[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
