"""The triage page: every row once, hostile names shown as text, and it works in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from forensics.synthetic import add_trace, natural_image, save

HOSTILE = "<img src=x onerror=alert(1)>.png"
BIDI = "photo-\u202egnp.exe.png"  # shows as photo-exe.png... in a browser unless the control is made visible
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page(tiny_onnx: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("page")
    folder = root / "in"
    rng = np.random.default_rng(21)
    for i in range(12):
        px = natural_image(rng, 64 + 8 * i, 72)
        save(add_trace(px) if i % 2 else px, folder / f"img{i:02d}.png")
    save(add_trace(natural_image(rng, 64, 64)), folder / HOSTILE)
    save(natural_image(rng, 64, 64), folder / BIDI)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    out = root / "triage.html"
    invoke("dir", folder, "--model", tiny_onnx, "--html", out, "--report", root / "r.jsonl",
           "--cam-dir", root / "cams")
    return out, root / "r.jsonl", folder


def embedded_rows(text: str) -> list[dict]:
    block = re.search(r'<script id="gscan-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(block)["rows"]


def test_every_row_once_with_previews(page):
    out, report, folder = page
    text = out.read_text()
    rows = embedded_rows(text)
    report_rows = [json.loads(x) for x in report.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in report_rows)
    assert len(rows) == 15 and len({r["path"] for r in rows}) == 15
    for r in rows:
        if r["status"] == "ok":
            assert r["thumb"] and r["large"] and r["label"] in ("real", "fake")
        else:
            assert r["error"] and "thumb" not in r
    assert any(r.get("heat") for r in rows if r["label"] == "fake")
    assert len(text) / 14 < 100_000  # light: well under 100 KB per image
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text


def test_hostile_names_are_never_markup(page):
    out, _, _ = page
    text = out.read_text()
    assert "<img src=x" not in text  # only the escaped JSON form may appear
    assert any(r["path"].endswith(HOSTILE) for r in embedded_rows(text))
    assert "innerHTML" not in text


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_in_a_real_browser(page, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright's Python package is not installed")
    out, report, _ = page
    rows = [json.loads(x) for x in report.read_text().splitlines()]
    fakes = sorted((r for r in rows if r["label"] == "fake"), key=lambda r: -r["score"])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        tab = browser.new_page()
        alerts = []
        tab.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
        tab.goto(out.as_uri())
        assert tab.locator("#grid .card").count() == 15
        names = tab.locator("#grid .card .path").all_inner_texts()
        assert any("photo-<U+202E>gnp.exe.png" in n for n in names) and not any("\u202e" in n for n in names)
        tab.select_option("#sort", "score-desc")
        scores = [float(s.split()[1]) for s in tab.locator("#grid .card .score").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)
        tab.select_option("#verdict", "fake")
        shown = tab.locator("#grid .card .path").all_inner_texts()
        assert shown == [r["path"] for r in fakes]
        assert any(HOSTILE in s for s in tab.locator("#grid .card .path").all_inner_texts()) == any(
            r["path"].endswith(HOSTILE) for r in fakes)
        tab.fill("#search", "img01")
        assert tab.locator("#grid .card").count() == sum("img01" in r["path"] for r in fakes)
        tab.fill("#search", "")
        axis = " ".join(tab.locator("#histogram text").all_text_contents())
        assert "images" in axis and "score (probability of fake)" in axis and "0.5" in axis
        tab.select_option("#verdict", "fake")
        tab.locator("#grid .card").first.click()
        assert tab.locator("#view-body img").count() == 2  # the image and its heatmap
        caption = tab.locator("#view-body figcaption").all_inner_texts()[1]
        assert f"more evidence for '{fakes[0]['cam_class']}'" in caption and "raw peak" in caption
        assert "of the image examined" in caption
        tab.screenshot(path=str(tmp_path / "triage.png"), full_page=True)
        browser.close()
    assert alerts == [] and (tmp_path / "triage.png").stat().st_size > 10_000
