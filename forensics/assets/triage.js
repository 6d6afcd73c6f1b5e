// gscan triage page: renders the embedded rows; sorting, filters and search work offline, no external assets.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("gscan-data").textContent);
  const rows = data.rows;
  const cards = new Array(rows.length);
  const grid = document.getElementById("grid");
  const count = document.getElementById("shown");
  const controls = {
    sort: document.getElementById("sort"),
    verdict: document.getElementById("verdict"),
    generator: document.getElementById("generator"),
    search: document.getElementById("search"),
  };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);  // textContent only: file names are hostile
    return node;
  }

  // control and bidi characters shown as escapes: "photo-\u202egpj.exe" must not read as "photo-exe.jpg"
  const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function visible(s) {
    return String(s).replace(INVISIBLE, (c) => {
      const n = c.charCodeAt(0);
      return n < 0xa0 ? "\\x" + n.toString(16).padStart(2, "0") : "<U+" + n.toString(16).toUpperCase().padStart(4, "0") + ">";
    });
  }

  // the score as people read it: log-odds measured from the threshold's, so the threshold is 0.5 (with a
  // threshold at 0.979 a raw 0.9991 is 0.96); the raw score stays beside it (forensics/scoring.py relative_score)
  function logOdds(p) { const c = Math.min(Math.max(p, 1e-12), 1 - 1e-12); return Math.log(c / (1 - c)); }
  function relative(score) { return 1 / (1 + Math.exp(-(logOdds(score) - logOdds(data.threshold)))); }
  function scoreText(score) {
    return relative(score).toFixed(2) + " (0.5 = threshold " + data.threshold.toFixed(4) + "; raw " +
      score.toFixed(4) + ")";
  }

  function verdictOf(r) { return r.status === "error" ? "error" : r.label; }

  function card(r) {
    const c = el("div", "card " + verdictOf(r));
    c.dataset.index = r.index;
    if (r.thumb) {
      const img = el("img", "thumb");
      img.src = "data:image/jpeg;base64," + r.thumb;
      img.alt = "thumbnail";
      img.loading = "lazy";
      c.appendChild(img);
    } else {
      c.appendChild(el("div", "thumb none", "no image"));
    }
    c.appendChild(el("div", "verdict", verdictOf(r)));
    if (r.score !== null && r.score !== undefined) {
      const bar = el("div", "bar");
      const fill = el("div", "fill");
      fill.style.width = (100 * r.score).toFixed(1) + "%";
      bar.appendChild(fill);
      bar.title = "score " + r.score.toFixed(4);
      c.appendChild(bar);
      c.appendChild(el("div", "score", "score " + scoreText(r.score)));
    }
    if (r.provenance) {
      const badge = el("div", "prov " + r.provenance, "metadata: " + r.provenance);
      badge.title = visible(r.provenance_detail || "");
      c.appendChild(badge);
    }
    if (r.generator) {
      c.appendChild(el("div", "gen", r.generator + (r.generator_score != null ? " (" +
        Number(r.generator_score).toFixed(3) + ")" : "")));
    }
    if (r.heat) c.appendChild(el("div", "hasheat", "heatmap"));
    c.appendChild(el("div", "path", visible(r.path)));
    c.appendChild(el("div", "sha", r.sha256 || ""));
    if (r.error) c.appendChild(el("div", "err", visible(r.error)));
    c.addEventListener("click", () => openView(r));
    return c;
  }

  function openView(r) {
    const view = document.getElementById("view");
    const body = document.getElementById("view-body");
    body.replaceChildren();
    body.appendChild(el("div", "path", visible(r.path)));
    const pics = el("div", "pics");
    const examined = r.coverage != null ? Math.round(100 * r.coverage) + "% of the image examined (" + r.tiles +
      " tiles)" + (r.coverage < 1 ? "; hatched areas were not" : "") : "";
    const explained = "heatmap: brighter means more evidence for '" + (r.cam_class || "") + "', relative to this " +
      "image's peak (raw peak " + (r.cam_max != null ? r.cam_max.toPrecision(3) : "?") + "). " + examined;
    for (const [key, label] of [["large", "image"], ["heat", explained]]) {
      if (!r[key]) continue;
      const fig = el("figure");
      const img = el("img");
      img.src = "data:image/jpeg;base64," + r[key];
      img.alt = label;
      fig.appendChild(img);
      fig.appendChild(el("figcaption", null, label));
      pics.appendChild(fig);
    }
    body.appendChild(pics);
    if (r.provenance || r.provenance_detail) {
      body.appendChild(el("div", "provdetail", "provenance: " + (r.provenance || "no kind") + " · " +
        visible(r.provenance_detail || "")));
    }
    body.appendChild(el("div", "meta", verdictOf(r) + (r.score != null ? " · score " + scoreText(r.score) : "") +
      " · sha256 " + (r.sha256 || "-") + (r.error ? " · " + visible(r.error) : "") + (r.notes ? " · " + visible(r.notes) : "")));
    view.hidden = false;
  }

  function render() {
    const verdict = controls.verdict.value;
    const gen = controls.generator.value;
    const needle = controls.search.value.toLowerCase();
    let shown = rows.filter((r) => (verdict === "all" || verdictOf(r) === verdict) &&
      (gen === "all" || r.generator === gen) && (!needle || r.path.toLowerCase().includes(needle)));
    const dir = controls.sort.value === "score-asc" ? 1 : -1;
    if (controls.sort.value.startsWith("score")) {
      shown = shown.slice().sort((a, b) => dir * ((a.score ?? -1) - (b.score ?? -1)));
    } else {
      shown = shown.slice().sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    }
    // Cards are built once and only reordered: re-creating 2,000 cards (and decoding their images) took seconds.
    const frag = document.createDocumentFragment();
    for (const r of shown) frag.appendChild(cards[r.index] || (cards[r.index] = card(r)));
    grid.replaceChildren(frag);
    count.textContent = shown.length + " of " + rows.length + " shown";
  }

  function histogram() {
    // bars over x 40..440 (score 0..1), y 10..100 (0..the fullest bin); axes labelled below and left
    const svg = document.getElementById("histogram");
    const ns = "http://www.w3.org/2000/svg";
    const X0 = 40, Y0 = 100, H = 90;
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text != null) node.textContent = text;
      svg.appendChild(node);
      return node;
    };
    const bins = new Array(20).fill(0);
    for (const r of rows) if (r.score != null) bins[Math.min(19, Math.floor(r.score * 20))]++;
    const peak = Math.max(1, ...bins);
    bins.forEach((n, i) => {
      const h = H * n / peak;
      const rect = add("rect", {x: X0 + i * 20, y: Y0 - h, width: 18, height: h,
        class: (i + 0.5) / 20 >= data.threshold ? "fakebin" : "realbin"});
      const title = document.createElementNS(ns, "title");
      title.textContent = (i / 20).toFixed(2) + "–" + ((i + 1) / 20).toFixed(2) + ": " + n + " images";
      rect.appendChild(title);
    });
    add("line", {x1: X0, x2: X0 + 400, y1: Y0, y2: Y0, class: "axis"});
    add("line", {x1: X0, x2: X0, y1: Y0 - H, y2: Y0, class: "axis"});
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      add("text", {x: X0 + 400 * t, y: Y0 + 14, "text-anchor": "middle", class: "tick"}, String(t));
    }
    add("text", {x: X0 - 4, y: Y0, "text-anchor": "end", class: "tick"}, "0");
    add("text", {x: X0 - 4, y: Y0 - H + 8, "text-anchor": "end", class: "tick"}, String(peak));
    add("text", {x: 12, y: Y0 - H / 2, "text-anchor": "middle", class: "tick",
      transform: "rotate(-90 12 " + (Y0 - H / 2) + ")"}, "images");
    add("text", {x: X0 + 200, y: Y0 + 30, "text-anchor": "middle", class: "tick"},
      "score (probability of fake); dashed line: threshold " + data.threshold.toFixed(4));
    const x = X0 + 400 * data.threshold;
    add("line", {x1: x, x2: x, y1: Y0 - H - 5, y2: Y0 + 4, class: "threshold"});
  }

  const gens = [...new Set(rows.map((r) => r.generator).filter(Boolean))].sort();
  for (const g of gens) { const o = el("option", null, g); o.value = g; controls.generator.appendChild(o); }
  controls.generator.disabled = gens.length === 0;
  for (const c of Object.values(controls)) c.addEventListener("input", render);
  document.getElementById("view").addEventListener("click", (e) => { e.currentTarget.hidden = true; });
  histogram();
  render();
})();
