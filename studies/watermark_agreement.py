"""How many bits of each known invisible watermark agree on real photos and on generator outputs, as stored and
after the everyday changes a platform makes (JPEG q90 and q75, a resize), with the reader the scan uses.

usage: python studies/watermark_agreement.py SET_DIR [SET_DIR ...] [--per-set 150] [--json docs/watermarks.json]

Each SET_DIR is one source (a folder of images; e.g. the folders `../shared/tools/gather_sources.py` writes, or
a folder of ../shared/data). For each source: the share of images the scan's rule would mark, the share with every
bit of the best mark, and the 99th percentile of the best mark's agreement in bits (a real photo's margin)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from forensics.images import decode_file, find_images  # noqa: E402
from forensics.perturb import parse_perturbation  # noqa: E402
from forensics.provenance.signatures import WATERMARKS  # noqa: E402
from forensics.provenance.watermarks import MAX_READ_PIXELS, MIN_PIXELS, bits_from_votes, block_votes  # noqa: E402

CONDITIONS = {"stored": None, "jpeg:90": "jpeg:90", "jpeg:75": "jpeg:75", "resize:0.9": "resize:0.9",
              "resize:0.5": "resize:0.5"}


def agreement(pixels: np.ndarray) -> list[int]:
    """Agreeing bits of every mark of the table, on the band the scan reads."""
    votes = block_votes(pixels, MAX_READ_PIXELS)
    return [int((bits_from_votes(votes, len(m.bits)) == np.asarray(m.bits, bool)).sum()) for m in WATERMARKS]


def measure(folder: Path, per_set: int, conditions: dict) -> dict:
    files = sorted(p for p in find_images(folder))[:per_set]
    result = {name: {"n": 0, "marked": 0, "all_bits": 0, "agree": []} for name in conditions}
    for path in files:
        decoded = decode_file(path)
        if not decoded.ok:
            continue
        for name, spec in conditions.items():
            pixels = parse_perturbation(spec)(decoded.pixels) if spec else decoded.pixels
            if pixels.shape[0] * pixels.shape[1] < MIN_PIXELS:
                continue
            agree = agreement(pixels)
            share = [a / len(m.bits) for a, m in zip(agree, WATERMARKS)]
            best = int(np.argmax(share))
            cell = result[name]
            cell["n"] += 1
            cell["marked"] += any(a >= m.min_matching for a, m in zip(agree, WATERMARKS))
            cell["all_bits"] += agree[best] == len(WATERMARKS[best].bits)
            cell["agree"].append(agree)
    for cell in result.values():
        agree = np.array(cell.pop("agree")).reshape(-1, len(WATERMARKS))
        # per mark: the 99th percentile and the maximum of agreeing bits (a real photo's margin to the threshold)
        cell["p99_bits"] = {m.name: float(np.percentile(agree[:, i], 99)) if len(agree) else None
                            for i, m in enumerate(WATERMARKS)}
        cell["max_bits"] = {m.name: int(agree[:, i].max()) if len(agree) else None for i, m in enumerate(WATERMARKS)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--per-set", type=int, default=150)
    ap.add_argument("--stored-only", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    conditions = {"stored": None} if a.stored_only else CONDITIONS
    table = {}
    for folder in a.sets:
        if not folder.is_dir():
            continue
        name = folder.name if folder.name not in table else f"{folder.parent.parent.name}-{folder.name}"
        table[name] = measure(folder, a.per_set, conditions)
        row = table[name]
        print(folder.name, " ".join(f"{c}: {v['marked']}/{v['n']} p99={v['p99_bits']}" for c, v in row.items()),
              flush=True)
    if a.json:
        old = json.loads(a.json.read_text()) if a.json.exists() else {}
        old.update(table)
        a.json.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
