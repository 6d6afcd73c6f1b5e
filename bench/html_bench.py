"""How fast the triage page opens and sorts in headless Chromium, for N scanned images (default 2,000).

    python bench/html_bench.py [--images 2000] [--model NAME]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from scan_bench import make_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=Path("/tmp/gscan-bench"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    folder = make_images(args.data / f"page-{args.images}", args.images, seed=3, sizes=(96, 384))
    page = args.data / f"page-{args.images}.html"
    cmd = [sys.executable, "-m", "cli", "dir", str(folder), "--html", str(page), "-q",
           "--cam-dir", str(args.data / "page-cams")] + (["--model", args.model] if args.model else [])
    subprocess.run(cmd, cwd=REPO, check=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        tab = browser.new_page()
        start = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_function(f"document.querySelectorAll('#grid .card').length === {args.images}")
        opened = time.perf_counter() - start
        start = time.perf_counter()
        tab.select_option("#sort", "score-asc")
        tab.wait_for_function("(() => { const s = [...document.querySelectorAll('#grid .card .score')]"
                              ".map(e => parseFloat(e.textContent.split(' ')[1]));"
                              " return s.every((v, i) => i === 0 || s[i - 1] <= v); })()")
        sorted_in = time.perf_counter() - start
        browser.close()
    size_mb = page.stat().st_size / 1e6
    print(f"{args.images} images: page {size_mb:.1f} MB ({page.stat().st_size / args.images / 1e3:.1f} KB/image), "
          f"opened in {opened:.2f} s, sorted in {sorted_in:.2f} s")


if __name__ == "__main__":
    main()
