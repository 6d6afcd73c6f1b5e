"""The triage page: one self-contained HTML file (thumbnails, verdicts, heatmaps, filters), readable offline."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from .heatmap import orient
from .outputs import create_new
from .text import visible

THUMB_SIDE = 160
VIEW_SIDE = 480
ASSETS = Path(__file__).resolve().parent / "assets"
ROW_KEYS = ("path", "status", "error", "sha256", "label", "score", "notes", "cam_class", "cam_max", "generator",
            "generator_score", "provenance", "provenance_detail", "tiles", "coverage")


def jpeg_b64(image: Image.Image, side: int, quality: int = 80) -> str:
    """A scaled-down JPEG (never enlarged) as base64, to embed in the page."""
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def previews(pixels: np.ndarray, orientation: int) -> dict[str, str]:
    """The thumbnail and the enlarged view of an image as a viewer shows it (EXIF orientation applied)."""
    image = orient(Image.fromarray(pixels), orientation)
    return {"thumb": jpeg_b64(image, THUMB_SIDE, 75), "large": jpeg_b64(image, VIEW_SIDE)}


def _script_json(value) -> str:
    """JSON safe inside <script>: no '<' can close the element, whatever a file name holds."""
    return json.dumps(value, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class TriagePage:
    """Collects rows (and their previews) on disk as the scan goes; `close` writes the page atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spool_path = self.path.with_name(self.path.name + ".rows")
        self._spool = create_new(self._spool_path)  # never through a link planted at that name
        self.count = 0

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            entry = {k: row.get(k) for k in ROW_KEYS}
            entry["score"] = None if row.get("score") in (None, "") else float(row["score"])
            entry["index"] = self.count
            entry.update({k: row[k] for k in ("thumb", "large") if row.get(k)})
            if row.get("cam_path") and os.path.isfile(row["cam_path"]):
                entry["heat"] = jpeg_b64(Image.open(row["cam_path"]), VIEW_SIDE)
            self._spool.write(json.dumps(entry, ensure_ascii=True) + "\n")
            self.count += 1

    def discard(self) -> None:
        """The scan stopped (Ctrl-C, an error): no page, and no spool left behind."""
        self._spool.close()
        with contextlib.suppress(OSError):
            self._spool_path.unlink()

    def close(self, facts: dict) -> None:
        self._spool.close()
        with open(self._spool_path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        tmp = self.path.with_name(self.path.name + ".partial")
        try:
            with create_new(tmp) as fh:
                fh.write(render_page(rows, facts))
            os.replace(tmp, self.path)  # replaces a link at the page's name, never writes through it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            self._spool_path.unlink()


def render_page(rows: list[dict], facts: dict) -> str:
    counts = {v: sum((r["status"] == "error" and v == "error") or (r["status"] == "ok" and r["label"] == v)
                     for r in rows) for v in ("real", "fake", "error")}
    e = html.escape
    fact_rows = [("folder", facts.get("folder", "")), ("images", f"{len(rows)}: {counts['real']} real, "
                                                                 f"{counts['fake']} fake, {counts['error']} errors"),
                 ("model", f"{facts.get('model', '')} (sha256 {facts.get('model_sha256', '')})"),
                 ("threshold", f"{facts.get('threshold', 0.5):.4f}: {facts.get('threshold_method', '')}"),
                 ("gscan", facts.get("gscan_version", "")),
                 ("time", facts.get("time") or datetime.now(timezone.utc).isoformat(timespec="seconds"))]
    # visible(): a folder name's control or bidi characters, or undecodable bytes, shown, never acted on
    facts_html = "".join(f"<tr><th>{e(k)}</th><td>{e(visible(str(v)))}</td></tr>" for k, v in fact_rows)
    data = {"rows": rows, "threshold": float(facts.get("threshold", 0.5))}
    return TEMPLATE.format(facts=facts_html, data=_script_json(data), css=CSS,
                           script=(ASSETS / "triage.js").read_text(encoding="utf-8"),
                           title=e(visible(f"gscan triage: {facts.get('folder', '')}")))


CSS = """
body{font:14px system-ui,sans-serif;margin:1.2em;background:#fafafa;color:#222}
table.facts th{text-align:left;padding-right:1em;color:#555;vertical-align:top}
.controls{display:flex;gap:.8em;align-items:center;margin:1em 0;flex-wrap:wrap}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;cursor:pointer;overflow:hidden}
.card.fake{border-color:#d33}.card.error{border-color:#999;background:#f1f1f1}
.thumb{width:100%;height:160px;object-fit:contain;background:#eee;display:block}
.thumb.none{display:flex;align-items:center;justify-content:center;color:#888}
.verdict{font-weight:600;text-transform:uppercase;margin-top:4px}.fake .verdict{color:#c22}.real .verdict{color:#282}
.bar{height:6px;background:#e4e4e4;border-radius:3px;margin:3px 0}.fill{height:100%;background:#d55;border-radius:3px}
.path,.sha,.err{font-size:11px;word-break:break-all;white-space:pre-wrap}.sha{color:#888}.err{color:#a00}
.gen,.hasheat{font-size:12px;color:#046}
.prov{display:inline-block;font-size:11px;padding:1px 5px;border-radius:3px;background:#eee;color:#333;margin-top:3px}
.prov.generated,.prov.edited-with-ai{background:#c22;color:#fff}.provdetail{font-size:13px;margin:6px 0}
#view{position:fixed;inset:0;background:rgba(0,0,0,.8);display:flex;align-items:center;justify-content:center}
#view[hidden]{display:none}#view-body{background:#fff;padding:1em;max-width:95vw;max-height:95vh;overflow:auto}
.pics{display:flex;gap:1em}.pics img{min-width:320px;max-width:45vw;max-height:75vh;image-rendering:pixelated}
svg .realbin{fill:#6a6}svg .fakebin{fill:#d66}svg .threshold{stroke:#000;stroke-width:2;stroke-dasharray:4 2}svg .axis{stroke:#444}svg .tick{font-size:11px;fill:#333}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{css}</style></head>
<body>
<h1>gscan triage</h1>
<table class="facts">{facts}</table>
<h2>Scores</h2>
<svg id="histogram" width="450" height="136" role="img" aria-label="score histogram with the threshold marked"></svg>
<div class="controls">
<label>sort <select id="sort"><option value="score-desc">score, high first</option>
<option value="score-asc">score, low first</option><option value="path">path</option></select></label>
<label>verdict <select id="verdict"><option value="all">all</option><option value="fake">fake</option>
<option value="real">real</option><option value="error">error</option></select></label>
<label>generator <select id="generator"><option value="all">all</option></select></label>
<label>search <input id="search" type="search" placeholder="path contains"></label>
<span id="shown"></span>
</div>
<div id="grid"></div>
<div id="view" hidden><div id="view-body"></div></div>
<script id="gscan-data" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""
