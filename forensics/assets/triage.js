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
      c.appendChild(el("div", "score", "score " + r.score.toFixed(4)));
    }
    if (r.generator) c.appendChild(el("div", "gen", r.generator + " (" + (r.generator_score || 0).toFixed(3) + ")"));
    if (r.heat) c.appendChild(el("div", "hasheat", "heatmap"));
    c.appendChild(el("div", "path", r.path));
    c.appendChild(el("div", "sha", r.sha256 || ""));
    if (r.error) c.appendChild(el("div", "err", r.error));
    c.addEventListener("click", () => openView(r));
    return c;
  }

  function openView(r) {
    const view = document.getElementById("view");
    const body = document.getElementById("view-body");
    body.replaceChildren();
    body.appendChild(el("div", "path", r.path));
    const pics = el("div", "pics");
    for (const [key, label] of [["large", "image"], ["heat", "heatmap (" + (r.cam_class || "") + ")"]]) {
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
    body.appendChild(el("div", "meta", verdictOf(r) + (r.score != null ? " · score " + r.score.toFixed(4) : "") +
      " · sha256 " + (r.sha256 || "-") + (r.error ? " · " + r.error : "") + (r.notes ? " · " + r.notes : "")));
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
    const svg = document.getElementById("histogram");
    const ns = "http://www.w3.org/2000/svg";
    const bins = new Array(20).fill(0);
    for (const r of rows) if (r.score != null) bins[Math.min(19, Math.floor(r.score * 20))]++;
    const peak = Math.max(1, ...bins);
    bins.forEach((n, i) => {
      const rect = document.createElementNS(ns, "rect");
      const h = 80 * n / peak;
      rect.setAttribute("x", 10 + i * 20); rect.setAttribute("y", 90 - h);
      rect.setAttribute("width", 18); rect.setAttribute("height", h);
      rect.setAttribute("class", (i + 0.5) / 20 >= data.threshold ? "fakebin" : "realbin");
      const title = document.createElementNS(ns, "title");
      title.textContent = (i / 20).toFixed(2) + "–" + ((i + 1) / 20).toFixed(2) + ": " + n;
      rect.appendChild(title);
      svg.appendChild(rect);
    });
    const x = 10 + 400 * data.threshold;
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", x); line.setAttribute("x2", x); line.setAttribute("y1", 0); line.setAttribute("y2", 95);
    line.setAttribute("class", "threshold");
    svg.appendChild(line);
  }

  const gens = [...new Set(rows.map((r) => r.generator).filter(Boolean))].sort();
  for (const g of gens) { const o = el("option", null, g); o.value = g; controls.generator.appendChild(o); }
  controls.generator.disabled = gens.length === 0;
  for (const c of Object.values(controls)) c.addEventListener("input", render);
  document.getElementById("view").addEventListener("click", (e) => { e.currentTarget.hidden = true; });
  histogram();
  render();
})();
