"""Scan throughput, side by side in one run: a research-code baseline, gscan end to end, and the two ceilings.

    python bench/scan_bench.py --images 2000 --docs   # the table for the note, into docs/RESULTS.md
    python bench/scan_bench.py --quick                # under a minute on 2 cores
    python bench/scan_bench.py --rss-scaling          # peak RSS of gscan on 1,000 vs 10,000 small files
    python bench/scan_bench.py --cam                  # wall time with heatmaps for every image vs none
    python bench/scan_bench.py --provenance           # wall time with the provenance reader off vs on
    python bench/scan_bench.py --watermarks           # wall time with the invisible-watermark reader off vs on
    python bench/scan_bench.py --load 20000           # 20,000 small files: one row each, time, peak RSS
    python bench/scan_bench.py --thread-scaling       # decode+tile on n threads vs n processes (the GIL's share)

Baseline (CNNDetection demo_dir.py style): the same architecture in PyTorch eager mode over a DataLoader with one
worker process per core, batch 32 images, the same native-resolution crops. gscan: `gscan dir` in a subprocess,
report written. Decode ceiling: the same files read, decoded and converted to RGB on every core (processes).
Model ceiling: ONNX Runtime alone on tiles cut from the same files beforehand, in the scan's batch size, converted
to images/s with the scan's tiles per image. gscan and the model ceiling are measured in turn (--rounds, best of
each), since a shared machine's speed drifts by 10-20% within minutes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forensics.images import DEFAULT_MAX_PIXELS, decode_file, find_images  # noqa: E402
from forensics.engines.local import auto_batch_size  # noqa: E402
from forensics.scoring import score_images  # noqa: E402
from forensics.runtime import Detector, _by_name_or_path, open_detector, resolve_model  # noqa: E402
from forensics.tiling import Preprocessing, extract_tiles  # noqa: E402


def make_images(root: Path, n: int, seed: int = 0, sizes=(256, 1024)) -> Path:
    """Realistic sizes and formats: JPEG q75-95 and PNG, 256 to 1024 px, varied smooth content plus noise.
    Made on every core; image i depends only on (seed, i)."""
    marker = root / f".made-v2-{n}-{seed}-{sizes[0]}-{sizes[1]}"
    if marker.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_make_one, [(root, i, seed, sizes) for i in range(n)], chunksize=16))
    marker.touch()
    return root


def _make_one(job: tuple[Path, int, int, tuple[int, int]]) -> None:
    from forensics.synthetic import natural_image

    root, i, seed, sizes = job
    rng = np.random.default_rng([seed, i])
    h, w = (int(v) // 8 * 8 for v in rng.integers(sizes[0], sizes[1] + 1, 2))
    img = Image.fromarray(_content(rng, h, w, natural_image))
    if i % 3 == 0:
        img.save(root / f"{i:06d}.png", compress_level=6)
    else:
        img.save(root / f"{i:06d}.jpg", quality=int(rng.integers(75, 96)))


def repeated(folder: Path, times: int) -> Path:
    """The folder's files hard-linked `times` over under new names: a long scan of distinct paths without the
    minutes it takes to make that many images (a GPU box scans 2,000 images in about the time Python starts)."""
    if times <= 1:
        return folder
    out = folder.with_name(f"{folder.name}-x{times}")
    marker = out / f".linked-{times}"
    if marker.exists():
        return out
    out.mkdir(exist_ok=True)
    files = sorted(find_images(folder))
    for k in range(times):
        for f in files:
            target = out / f"{k:03d}-{f.name}"
            if not target.exists():
                os.link(f, target)
    marker.touch()
    return out


def _content(rng: np.random.Generator, h: int, w: int, natural_image) -> np.ndarray:
    """Smooth content drawn at a quarter of the size, enlarged, plus full-resolution sensor-like noise (fast)."""
    small = Image.fromarray(natural_image(rng, max(8, h // 4), max(8, w // 4))).resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 4.0, (h, w, 3)).astype(np.float32)
    return np.clip(np.asarray(small, dtype=np.float32) + noise, 0, 255).astype(np.uint8)


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, VmHWM polled until exit) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                peak = max(peak, next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")))
        except (OSError, StopIteration):
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()}")
    return wall, peak / 1024


DEVICE = "cpu"
SKIP_BASELINE = False


GSCAN = [sys.executable, "-m", "cli"]
# the same gscan with the invisible-watermark reader stubbed out (metadata provenance still read): the "before"
GSCAN_WITHOUT_WATERMARKS = [sys.executable, "-c", "import sys, forensics.provenance as p; "
                            "p.find_marks = lambda *a, **k: []; from cli.entry import run; run()"]


def run_gscan(folder: Path, model: str, report: Path, extra: list[str] = (), launcher: list[str] = GSCAN,
              ) -> tuple[float, float]:
    cmd = [*launcher, "dir", str(folder), "--model", model, "--report", str(report), "--overwrite", "-q",
           "--device", DEVICE, *extra]
    return peak_rss_of(cmd)


def _decode_one(path: str) -> int:
    decoded = decode_file(Path(path))
    return 0 if decoded.pixels is None else decoded.pixels.shape[0]


def decode_ceiling(files: list[Path], workers: int) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_one, [str(f) for f in files], chunksize=8))
    return len(files) / (time.perf_counter() - start)


def _decode_and_tile(path: Path, card) -> int:
    d = decode_file(path)
    return 0 if d.pixels is None else len(extract_tiles(d.pixels, card.tiling, card.mean, card.std)[0])


def decode_tile_threads(files: list[Path], card, workers: int) -> float:
    """Diagnostic, not a ceiling: decode and tile on the scan's own thread pool in one process (GIL included)."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda f: _decode_and_tile(f, card), files))
    return len(files) / (time.perf_counter() - start)


def decode_tile_processes(files: list[Path], card, workers: int) -> float:
    """Diagnostic: decode and tile on the scan's worker processes (`--decode processes`), tiles back through
    shared memory into this process."""
    from forensics.decode_pool import ProcessDecoder, TileSpec

    with ProcessDecoder(workers, TileSpec(Preprocessing.from_card(card), DEFAULT_MAX_PIXELS)) as decoder:
        list(decoder.decode(files[: workers * 8]))  # workers started and warm
        start = time.perf_counter()
        n = sum(1 for _ in decoder.decode(files))
    return n / (time.perf_counter() - start)


def tile_sample(files: list[Path], card, limit: int = 512) -> tuple[float, list[np.ndarray]]:
    """From about 100 of the files, spread evenly: the mean tiles per image, and the tiles of the first images
    up to about `limit` tiles, per image (decoded ahead, for the model ceiling)."""
    counts, tiles = [], []
    for f in files[:: max(1, len(files) // 100)]:
        d = decode_file(f)
        cut = extract_tiles(d.pixels, card.tiling, card.mean, card.std)[0]
        counts.append(len(cut))
        if sum(map(len, tiles)) < limit:
            tiles.append(cut)
    return float(np.mean(counts)), tiles


def model_ceiling(detector: Detector, images: list[np.ndarray], batch: int, seconds: float = 8.0) -> float:
    """ONNX Runtime alone on pre-decoded tiles, whole images per call up to `batch` tiles as the scan sends them,
    under the card's policies as the scan applies them (forensics/scoring.py), in images/s."""
    groups, group = [], []
    for tiles in images:
        if group and sum(map(len, group)) + len(tiles) > batch:
            groups.append(group)
            group = []
        group.append(tiles)
    groups.append(group)
    threshold = detector.card.threshold
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for group in groups:
            score_images(detector, group, threshold)
            n += len(group)
    return n / (time.perf_counter() - start)


class _TiledFiles:
    def __init__(self, files, card):
        self.files, self.card = files, card

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch

        d = decode_file(self.files[i])
        return torch.from_numpy(extract_tiles(d.pixels, self.card.tiling, self.card.mean, self.card.std)[0])


def _collate(batch):
    import torch

    return torch.cat(batch), [len(t) for t in batch]


def baseline(files: list[Path], card, workers: int) -> float:
    """PyTorch eager + DataLoader, batch 32 images, as research code does it."""
    import torch
    from torch.utils.data import DataLoader

    from forensics.training.models import create_model

    # the same network as the exported one: random weights, but its card's front-end and stem stride
    model = create_model(card.arch, len(card.classes), front_end=card.front_end, stem_stride=card.stem_stride).eval()
    loader = DataLoader(_TiledFiles(files, card), batch_size=auto_batch_size("cpu"), num_workers=workers,
                        collate_fn=_collate)
    start = time.perf_counter()
    scores = []
    with torch.inference_mode():
        for tiles, counts in loader:
            logits = model(tiles)
            for chunk in torch.split(logits, counts):
                scores.append(torch.softmax(chunk.mean(0), 0)[1].item())
    assert len(scores) == len(files)
    return len(files) / (time.perf_counter() - start)


def log(message: str) -> None:
    """Progress on stderr, so a run stopped by a time limit still says how far it got and how fast."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def throughput_table(args) -> dict:
    """The machine is noisy: gscan and the model ceiling are measured in turn, `rounds` times, best of each."""
    folder = repeated(make_images(args.data / f"bench-{args.images}", args.images), args.repeat)
    files = sorted(find_images(folder))
    # the model the scan runs: a named model on the CPU runs as its int8 variant when it has one
    model_path = _by_name_or_path(args.model, DEVICE)
    detector = open_detector(model_path, device=DEVICE)
    model_arg = args.model or resolve_model(None).stem
    cores = os.cpu_count() or 1
    tpi, tiles = tile_sample(files, detector.card)
    batch = auto_batch_size(DEVICE)  # the scan's automatic batch size on each device
    log(f"{len(files)} files, {tpi:.2f} tiles/image, {model_path.name}; warm-up scan")
    wall, _ = run_gscan(folder, model_arg, args.data / "warm.csv")  # warm the page cache for everyone
    log(f"warm-up scan {len(files) / wall:.1f} images/s")
    results = {"images": len(files), "cores": cores, "model": model_path.name, "tiles_per_image": tpi}
    gscan_walls, rss, ceilings, before = [], [], [], []
    for _ in range(args.rounds):
        ceilings.append(model_ceiling(detector, tiles, batch))
        log(f"model ceiling {ceilings[-1]:.1f} images/s")
        wall, peak = run_gscan(folder, model_arg, args.data / "gscan.csv")
        gscan_walls.append(wall)
        rss.append(peak)
        log(f"gscan {len(files) / wall:.1f} images/s, peak RSS {peak:.0f} MB")
        if args.before:
            before.append(len(files) / run_gscan(folder, str(args.before), args.data / "before.csv")[0])
            log(f"gscan with {args.before.name} as given {before[-1]:.1f} images/s")
    if before:
        results["gscan_before_runs"], results["gscan_before"] = before, max(before)
        results["before_model"] = args.before.name
    results["gscan_runs"] = [len(files) / w for w in gscan_walls]
    results["model_ceiling_runs"] = ceilings
    results["gscan"] = max(results["gscan_runs"])
    results["gscan_peak_rss_mb"] = max(rss)
    results["baseline"] = float("nan") if SKIP_BASELINE else baseline(files, detector.card, cores)
    log(f"baseline {results['baseline']:.1f} images/s")
    results["decode_ceiling"] = decode_ceiling(files, cores)
    log(f"decode ceiling {results['decode_ceiling']:.1f} images/s")
    results["decode_tile_threads"] = decode_tile_threads(files, detector.card, max(1, cores - 1))
    if args.processes:
        results["decode_tile_processes"] = decode_tile_processes(files, detector.card, max(1, cores - 1))
        wall, _ = run_gscan(folder, model_arg, args.data / "gscan-processes.csv", ["--decode", "processes"])
        results["gscan_processes"] = len(files) / wall
        log(f"gscan --decode processes {results['gscan_processes']:.1f} images/s")
    results["model_ceiling"] = max(ceilings)
    results["device"] = DEVICE
    results["gscan_over_baseline"] = results["gscan"] / results["baseline"]
    results["gscan_over_min_ceiling"] = results["gscan"] / min(results["decode_ceiling"], results["model_ceiling"])
    return results


def rss_scaling(args) -> dict:
    out = {}
    model = str(resolve_model(args.model))
    for n in (1000, 10000):
        folder = make_images(args.data / f"small-{n}", n, seed=1, sizes=(48, 96))
        wall, rss = run_gscan(folder, model, args.data / f"small-{n}.csv")
        out[n] = {"seconds": wall, "peak_rss_mb": rss, "images_per_second": n / wall}
    out["growth_mb"] = out[10000]["peak_rss_mb"] - out[1000]["peak_rss_mb"]
    return out


def load_test(args) -> dict:
    """Many small files (a few KB each): one row per file, time and peak RSS."""
    import csv

    folder = make_images(args.data / f"load-{args.load}", args.load, seed=2, sizes=(32, 64))
    report = args.data / f"load-{args.load}.csv"
    wall, rss = run_gscan(folder, str(resolve_model(args.model)), report)
    with open(report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"files": args.load, "rows": len(rows), "unique_paths": len({r["path"] for r in rows}),
            "seconds": wall, "images_per_second": args.load / wall, "peak_rss_mb": rss}


def alternate(args, variants: dict[str, list[str]], rounds: int, fresh: str | None = None,
              launchers: dict[str, list[str]] | None = None) -> dict[str, list[float]]:
    """Wall seconds of gscan on the bench images with each variant's extra options, the variants run in turn
    (a shared machine drifts by 10-20% within minutes); `fresh` names a folder emptied before every run."""
    import shutil

    folder = make_images(args.data / f"bench-{args.images}", args.images)
    model = str(resolve_model(args.model))
    run_gscan(folder, model, args.data / "warm.csv")
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, extra in variants.items():
            if fresh:
                shutil.rmtree(fresh, ignore_errors=True)
            launcher = (launchers or {}).get(name, GSCAN)
            seconds[name].append(run_gscan(folder, model, args.data / f"{name}.csv", extra, launcher)[0])
    return seconds


def cam_overhead(args, rounds: int = 2) -> dict:
    """Plain scans and scans with a heatmap for every image, alternated; the best of each is compared."""
    cams = str(args.data / "cams")
    seconds = alternate(args, {"plain": [], "cam_all": ["--cam-dir", cams, "--cam-for", "all"]}, rounds, cams)
    return {"images": args.images, "plain_seconds": seconds["plain"], "cam_all_seconds": seconds["cam_all"],
            "overhead": min(seconds["cam_all"]) / min(seconds["plain"]) - 1}


def provenance_overhead(args) -> dict:
    """Scans with the provenance reader off and on, alternated (best of each), and the reader alone per file on
    the bench images (no metadata: the container walk) and on files that carry a signed C2PA manifest."""
    from forensics.provenance import ProvenanceSettings, read_provenance

    seconds = alternate(args, {"off": ["--provenance", "off"], "on": []}, max(args.rounds, 3))
    files = sorted(find_images(args.data / f"bench-{args.images}"))[:300]
    per_file = {"bench images": [f.read_bytes() for f in files]}
    signed = sorted(Path(args.signed).glob("*")) if args.signed else []
    if signed:
        per_file["signed C2PA files"] = [f.read_bytes() for f in signed]
    cost = {}
    for name, blobs in per_file.items():
        images = [Image.open(io.BytesIO(b)) for b in blobs]
        for image in images:
            image.getexif()  # the scan reads EXIF (orientation) before provenance: a PNG decodes here
        started = time.perf_counter()
        for data, image in zip(blobs, images):
            read_provenance(data, image.format, image, ProvenanceSettings())
        cost[name] = 1000 * (time.perf_counter() - started) / len(blobs)
    return {"images": args.images, "off_seconds": seconds["off"], "on_seconds": seconds["on"],
            "on_over_off": min(seconds["on"]) / min(seconds["off"]), "reader_ms_per_file": cost}


def watermark_overhead(args) -> dict:
    """Scans with the invisible-watermark reader stubbed out and with it (provenance on in both), alternated, best
    of each; and the reader alone per image on the bench images' decoded pixels."""
    from forensics.provenance import read_watermarks

    seconds = alternate(args, {"without": [], "with": []}, max(args.rounds, 3),
                        launchers={"without": GSCAN_WITHOUT_WATERMARKS})
    files = sorted(find_images(args.data / f"bench-{args.images}"))[:200]
    pixels = [decode_file(f).pixels for f in files]
    started = time.perf_counter()
    for image in pixels:
        read_watermarks(image)
    reader_ms = 1000 * (time.perf_counter() - started) / len(pixels)
    return {"images": args.images, "without_seconds": seconds["without"], "with_seconds": seconds["with"],
            "with_over_without": min(seconds["with"]) / min(seconds["without"]), "reader_ms_per_image": reader_ms,
            "megapixels_per_image": float(np.mean([p.shape[0] * p.shape[1] for p in pixels]) / 1e6)}


TABLE_ROWS = (("baseline", "baseline (PyTorch eager + DataLoader)"), ("gscan", "gscan dir, end to end"),
              ("gscan_before", "gscan dir, the `--before` model as given (fp32, every tile)"),
              ("decode_ceiling", "decode ceiling (every core, processes)"),
              ("model_ceiling", "model ceiling (ONNX Runtime on pre-cut tiles)"),
              ("decode_tile_threads", "decode + tile on the scan's threads (diagnostic)"),
              ("gscan_processes", "gscan dir --decode processes, end to end"),
              ("decode_tile_processes", "decode + tile on the scan's processes (diagnostic)"))


def table_lines(result: dict) -> list[str]:
    lines = [f"{result['images']} images, {result['cores']} cores, {result['device']}, {result['model']}, "
             f"{result['tiles_per_image']:.2f} tiles/image", "", "| measure | images/s |", "|---|---|"]
    lines += [f"| {label} | {result[key]:.1f} |" for key, label in TABLE_ROWS
              if key in result and result[key] == result[key]]
    ratio = result["gscan_over_baseline"]
    lines += ["", (f"gscan / baseline **{ratio:.2f}x**, " if ratio == ratio else "") +
              f"gscan / min(ceilings) **{result['gscan_over_min_ceiling']:.0%}**, gscan / decode ceiling "
              f"{result['gscan'] / result['decode_ceiling']:.0%}, gscan peak RSS {result['gscan_peak_rss_mb']:.0f} MB."]
    if "gscan_before" in result:
        lines += ["", f"gscan / the same model as before ({result['before_model']}, fp32, every tile) "
                      f"**{result['gscan'] / result['gscan_before']:.2f}x**."]
    if len(result.get("gscan_runs", [])) > 1:
        runs = ", ".join(f"{g:.1f} / {m:.1f}" for g, m in zip(result["gscan_runs"], result["model_ceiling_runs"]))
        mean = np.mean(result["gscan_runs"]) / np.mean(result["model_ceiling_runs"])
        lines += ["", f"Each round, gscan / model ceiling (images/s): {runs}; the means give {mean:.0%}."]
    return lines


def write_docs(result: dict, docs: Path) -> None:
    """The table into its own section of docs/RESULTS.md, one section per device."""
    sys.path.insert(0, str(REPO / "studies"))
    from results_doc import write_section

    lines = [f"## Scan throughput ({result['device']})", "",
             "Written by `python bench/scan_bench.py --docs` (see the script's docstring for what each row measures; "
             "gscan and the model ceiling are the best of alternating runs).", "", *table_lines(result)]
    write_section(docs / "RESULTS.md", f"scan-{result['device']}", lines)


def thread_scaling(args) -> dict:
    """Decode and tile on 1, 2, 4, ... threads in one process against the same on as many processes: where the
    thread curve flattens below the process one, the GIL is what limits a scan that is not model-bound."""
    folder = make_images(args.data / f"bench-{args.images}", args.images)
    files = sorted(find_images(folder))
    card = Detector(resolve_model(args.model), device="cpu").card
    cores = os.cpu_count() or 1
    counts = sorted({1, *(n for n in (2, 4, 8, 16, 32) if n < cores), max(1, cores - 1), cores})
    out = {"images": len(files), "cores": cores}
    for n in counts:
        out[f"threads_{n}"] = decode_tile_threads(files, card, n)
        out[f"processes_{n}"] = decode_ceiling(files, n)
        log(f"{n:2d} workers: threads {out[f'threads_{n}']:.0f}, processes {out[f'processes_{n}']:.0f} images/s")
    return out


def batch_sweep(args) -> dict:
    """The model ceiling at several batch sizes (tiles per call), to choose the automatic batch size per device."""
    folder = make_images(args.data / f"bench-{args.images}", args.images)
    detector = Detector(resolve_model(args.model), device=DEVICE)
    tiles_per_img, tiles = tile_sample(sorted(find_images(folder)), detector.card, limit=1024)
    out = {"device": detector.device, "tiles_per_image": tiles_per_img}
    for batch in (b for b in (16, 32, 64, 128, 256, 512) if b <= sum(map(len, tiles))):
        out[f"batch_{batch}"] = model_ceiling(detector, tiles, batch, seconds=4.0)
        log(f"batch {batch:3d}: model ceiling {out[f'batch_{batch}']:.1f} images/s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default=None, help="shipped model name or .onnx (default: the shipped default)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/gscan-bench"))
    parser.add_argument("--quick", action="store_true", help="100 images: a smoke run under a minute")
    parser.add_argument("--rss-scaling", action="store_true")
    parser.add_argument("--cam", action="store_true")
    parser.add_argument("--provenance", action="store_true", help="scan time with the provenance reader off vs on")
    parser.add_argument("--watermarks", action="store_true", help="scan time with the watermark reader off vs on")
    parser.add_argument("--signed", default=None, help="with --provenance: a folder of files with C2PA manifests")
    parser.add_argument("--load", type=int, default=0, help="scan this many small files (e.g. 20000)")
    parser.add_argument("--processes", action="store_true", help="also scan with --decode processes")
    parser.add_argument("--thread-scaling", action="store_true", help="decode+tile on n threads vs n processes")
    parser.add_argument("--batch-sweep", action="store_true", help="model ceiling at batch sizes 16 to 512")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=1, help="scan the images this many times over (hard links)")
    parser.add_argument("--rounds", type=int, default=2, help="gscan and model-ceiling runs, in turn; best of each")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/RESULTS.md")
    parser.add_argument("--before", type=Path, default=None,
                        help="also scan with this .onnx as given (fp32, every tile), in the same rounds")
    parser.add_argument("--skip-baseline", action="store_true", help="no PyTorch baseline (a GPU box without torch)")
    args = parser.parse_args()
    global DEVICE, SKIP_BASELINE
    DEVICE, SKIP_BASELINE = args.device, args.skip_baseline
    if args.quick:
        args.images, args.rounds = 100, 1
    if args.load:
        result = load_test(args)
    elif args.rss_scaling:
        result = rss_scaling(args)
    elif args.cam:
        result = cam_overhead(args)
    elif args.provenance:
        result = provenance_overhead(args)
    elif args.watermarks:
        result = watermark_overhead(args)
    elif args.thread_scaling:
        result = thread_scaling(args)
    elif args.batch_sweep:
        result = batch_sweep(args)
    else:
        result = throughput_table(args)
    print(json.dumps(result, indent=2))
    if "gscan" in result:
        print("\n".join(["", *table_lines(result)]))
        if args.docs:
            write_docs(result, REPO / "docs")


if __name__ == "__main__":
    main()
