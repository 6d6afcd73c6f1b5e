"""Rich output for the CLI: progress on a terminal, plain text elsewhere, summary tables."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from forensics.scoring import relative_score
from forensics.text import visible


class ScanProgress:
    """A live bar on a terminal: files found so far (counted beside the scan), rows done, images/s and an ETA once
    the count is complete. Nothing when stderr is not a TTY (CI logs stay clean)."""

    def __init__(self, console: Console, root: Path, enabled: bool = True):
        self.enabled = enabled and console.is_terminal
        self.root = root
        self.progress = Progress(SpinnerColumn(), TextColumn("scanning"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[found]}{task.fields[fake]} fake, "
                                            "{task.fields[errors]} errors"),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.task = None
        self.rows = self.fake = self.errors = 0
        self._stop = threading.Event()
        self._started = time.perf_counter()

    def __enter__(self) -> "ScanProgress":
        if self.enabled:
            self.progress.start()
            self.task = self.progress.add_task("scan", total=None, fake=0, errors=0, found="", rate="")
            threading.Thread(target=self._count, name="gscan-count", daemon=True).start()
        return self

    def _count(self) -> None:
        """Walk the tree as the scan does, so the bar gets its total (and an ETA) before the scan ends."""
        from forensics.images import find_images

        found = 0
        for found, _ in enumerate(find_images(self.root), 1):
            if self._stop.is_set():
                return
            if found % 500 == 0:
                self.progress.update(self.task, found=f"{found} found so far; ")
        self.progress.update(self.task, total=found, found="")

    def advance(self, rows: list[dict]) -> None:
        self.rows += len(rows)
        self.fake += sum(r["label"] == "fake" for r in rows)
        self.errors += sum(r["status"] == "error" for r in rows)
        if self.task is not None:
            rate = self.rows / max(time.perf_counter() - self._started, 1e-9)
            self.progress.update(self.task, advance=len(rows), fake=self.fake, errors=self.errors,
                                 rate=f"{rate:.1f} images/s")

    def stop(self) -> None:
        self._stop.set()
        if self.enabled:
            self.progress.stop()

    def __exit__(self, *exc) -> None:
        self.stop()


def print_rows(console: Console, rows: list[dict], total: int) -> None:
    """The verdicts: a table on a terminal; piped or in CI, one tab-separated line per row, never wrapped, so that
    what a log holds does not depend on a terminal's width."""
    title = "verdicts" + (f" (first {len(rows)} of {total}; use --report for all)" if total > len(rows) else "")
    columns = ("path", "label", "score (0.5 = threshold; raw)", "generator", "tiles", "status / error")
    cells = [_row_cells(r) for r in rows]
    if not console.is_terminal:
        console.print("\t".join(columns), soft_wrap=True, highlight=False, markup=False)
        for line in cells:
            console.print("\t".join(line), soft_wrap=True, highlight=False, markup=False)
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    colour = {"fake": "[red]fake[/]", "real": "[green]real[/]"}
    for path, label, *rest in cells:
        table.add_row(escape(path), colour.get(label, escape(label)), *map(escape, rest))
    console.print(table)


def _row_cells(r: dict) -> list[str]:
    # file names and errors are data: never markup, and never terminal control sequences
    # with a threshold at 0.979 every fake sits within +0.021 of it in raw terms: the threshold-relative score
    # (0.5 at the threshold, log-odds apart) reads right, the raw one stays beside it
    score = "" if r["score"] is None else \
        f"{relative_score(r['score'], r['threshold']):.2f} (raw {r['score']:.4f})"
    status = r["status"] if r["status"] == "ok" else f"error: {r['error']}"
    generator = r.get("generator") or ""
    if generator and r.get("generator_score") is not None:
        generator += f" ({r['generator_score']:.2f})"
    return [visible(r["path"]), r["label"] or "", score, generator, str(r["tiles"] or ""), visible(status)]


def print_facts(console: Console, title: str, facts: list[tuple[str, str]]) -> None:
    """Key-value facts: a table on a terminal, plain `key: value` lines elsewhere (never wrapped)."""
    if not console.is_terminal:
        console.print(title, soft_wrap=True, highlight=False, markup=False)
        for key, value in facts:
            console.print(f"{key}: {value}", soft_wrap=True, highlight=False, markup=False)
        return
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in facts:
        table.add_row(key, escape(value))
    console.print(table)


def print_summary(console: Console, result) -> None:
    s = result.summary
    d = result.detector
    facts = [("model", f"{visible(d.card.name)}, {d.card.precision} (sha256 {d.sha256[:16]}…)")]
    if d.exact is not None:
        facts.append(("near the threshold", f"fp32 (sha256 {d.exact.sha256[:16]}…) within "
                                            f"{d.card.rescore_margin:g} log-odds"))
    if result.attributor:
        a = result.attributor
        facts.append(("attribution", f"{visible(a.card.name)} (sha256 {a.sha256[:16]}…): "
                                     f"{', '.join(map(visible, a.card.classes))}"))
    facts += [("device", f"{s.device} ({', '.join(d.providers)})"), ("threshold", f"{s.threshold:.4f}"),
              ("files", str(s.files)), ("real / fake / error", f"{s.real} / {s.fake} / {s.errors}")]
    if not s.provenance_read:
        facts.append(("provenance", "off (--provenance off): the model alone"))
    elif s.declared:
        facts.append(("provenance", f"{s.declared} declare generation in their metadata or watermarks ({s.from_provenance} fake "
                                    "by that alone: the model scored them real)"))
    if s.reused or s.rescanned or s.kept_unseen or s.pruned:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(s.rescan_reasons.items()))
        facts.append(("resumed", f"{s.reused} rows reused, {s.files - s.reused - s.kept_unseen} scanned"
                                 + (f" ({s.rescanned} earlier rows not reused: {why})" if s.rescanned else "")
                                 + (f"; {s.kept_unseen} rows of files not found now kept as they were"
                                    if s.kept_unseen else "")
                                 + (f"; {s.pruned} rows of files not found now pruned" if s.pruned else "")))
    speed = f"{s.images_per_second:.1f} images/s" if s.files > s.reused else "nothing new scanned"
    facts.append(("time", f"{s.seconds:.2f} s ({speed})"))
    if result.report:
        facts.append(("report", visible(str(result.report)) + ("" if s.signed else " (rows unsigned: no report key)")))
        if str(result.report) != "-":
            facts.append(("seal", visible(str(result.report)) + ".seal" + (
                f" (signed by public key {s.signer[:16]}...)" if s.signer else "")))
    if result.html:
        facts.append(("page", visible(str(result.html))))
    if result.cam_dir:
        facts.append(("heatmaps", f"{s.heatmaps} in {visible(str(result.cam_dir))} (named IMAGE-SHA256PREFIX.png)"))
    print_facts(console, "gscan summary", facts)


def _shareable(value):
    """A card's value as `gscan models --json` shows it: long numeric arrays (open-set centroids) summarised by
    shape, and the training machine's absolute paths cut to their last two parts (`.../wild/val`)."""
    if isinstance(value, dict):
        return {k: _shareable(v) for k, v in value.items()}
    if isinstance(value, list):
        flat = [x for v in value for x in (v if isinstance(v, list) else [v])]
        if len(flat) > 64 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat):
            inner = f" x {len(value[0])}" if isinstance(value[0], list) else ""
            return f"<{len(value)}{inner} numbers: gscan models --json --full shows them>"
        return [_shareable(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and "/" in value[1:]:
        return ".../" + "/".join(Path(value).parts[-2:])
    return value


def print_models_json(console: Console, models, full: bool = False) -> None:
    """Each model's path, whether it is shipped, its sha256 as its card states it, and its card: whole with full,
    else without long arrays and with the training machine's paths shortened."""
    records = [{"name": m.card.name, "path": str(m.path), "shipped": m.shipped,
                "int8": str(m.int8) if m.int8 else None,
                "card": m.card.to_dict() if full else _shareable(m.card.to_dict())} for m in models]
    console.out(json.dumps(records, indent=2), highlight=False)


def print_models(console: Console, models) -> None:
    from forensics.card import quality_warnings, worst_source

    """A few lines per model (a wide table would cut names off on narrow terminals)."""
    if not models:
        console.print("no models found")
    for m in models:
        c = m.card
        val, q75 = c.metrics.get("val", {}), c.metrics.get("val_jpeg75", {})
        if c.task == "binary":
            worst = worst_source(c)
            quality = (f"val ROC-AUC {val.get('roc_auc', float('nan')):.4f} as stored, "
                       f"{q75.get('roc_auc', float('nan')):.4f} at JPEG q75"
                       + (f" (worst source {worst[1]}: {worst[2]:.3f}"
                          f"{' at q75' if worst[0] == 'val_jpeg75' else ''})" if worst else "")
                       + f"; threshold {c.threshold:.4f}")
        else:
            quality = (f"val per-image accuracy {val.get('accuracy', float('nan')):.4f} as stored, "
                       f"{q75.get('accuracy', float('nan')):.4f} at JPEG q75")
        where = ("shipped" if m.shipped else f"yours: {m.path}") + ("; int8 variant for the CPU" if m.int8 else "")
        # names come from cards, which anyone can write: shown escaped, never as terminal sequences
        console.print(escape(visible(f"{c.name}  ({c.task}, {c.arch}, crop {c.tiling.crop}, up to "
                                     f"{c.tiling.max_tiles} tiles; {where})")), style="bold", soft_wrap=True)
        console.print(escape(visible(f"  classes: {', '.join(c.classes)}")), soft_wrap=True)
        console.print(escape(visible(f"  {quality}" + (f"; companion {c.companion}" if c.companion else ""))),
                      soft_wrap=True)
        for problem in quality_warnings(c):
            console.print(escape(visible(f"  warning: {problem}")), style="yellow", soft_wrap=True)


class TrainProgress:
    """Per-step bar and per-epoch lines on a terminal; epoch lines only elsewhere."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=console,
                                 disable=not console.is_terminal)
        self.task = None

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def update(self, event: dict) -> None:
        if event["event"] == "step":
            if self.task is None or event["step"] == 1:
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task("train", total=event["steps"], epoch=event["epoch"], loss=0.0)
            self.progress.update(self.task, completed=event["step"], loss=event["loss"])
        elif event["event"] == "epoch":
            keys = [k for k in ("val_roc_auc", "val_accuracy", "val_loss") if k in event]
            figures = ", ".join(f"{k} {event[k]:.4f}" for k in keys)
            self.progress.console.print(f"epoch {event['epoch']}: train_loss {event['train_loss']:.4f}, {figures} "
                                        f"({event['seconds']:.0f} s; best epoch {event['best_epoch']})")

    def __exit__(self, *exc) -> None:
        self.progress.stop()


class SynthProgress:
    """A bar over the decoders (with an ETA from the ones trained so far) and one over the twins on a terminal;
    a line per decoder, with the ETA, everywhere."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                                 disable=not console.is_terminal)
        self.task = self.decoders = None
        self.trained: list[float] = []

    def __enter__(self) -> "SynthProgress":
        self.progress.start()
        return self

    def update(self, event: dict) -> None:
        kind = event["event"]
        if kind == "bank":
            self.decoders = self.progress.add_task("decoders", total=event["total"])
        elif kind == "decoder_start" and not event["reused"]:
            self.progress.console.print(f"decoder {event['index'] + 1}/{event['total']} {event['name']}: training",
                                        soft_wrap=True, highlight=False)
        elif kind == "decoder":
            self._decoder_done(event)
        elif kind == "twin":
            if self.task is None:
                self.task = self.progress.add_task("twins", total=event["total"])
            self.progress.update(self.task, completed=event["done"])
        elif kind == "generator":
            self.progress.console.print(f"{event['name']}: {event['total']} images, {event['kept']} kept from an "
                                        "earlier run", soft_wrap=True, highlight=False)
            self.task = self.progress.add_task(event["name"], total=event["total"] - event["kept"])
        elif kind == "image":
            self.progress.update(self.task, completed=event["done"])
            if not self.console.is_terminal and event["done"] in (1, 10, 100) or event["done"] % 500 == 0:
                eta = (event["total"] - event["done"]) * event["seconds"] / event["done"]
                self.progress.console.print(f"{event['done']}/{event['total']} in {event['seconds']:.0f} s; about "
                                            f"{eta / 60:.1f} min left", soft_wrap=True, highlight=False)

    def _decoder_done(self, event: dict) -> None:
        left = event["total"] - event["index"] - 1
        if event["reused"]:
            line = f"decoder {event['index'] + 1}/{event['total']} {event['name']}: kept from the earlier run"
        else:
            self.trained.append(event["seconds"])
            eta = left * sum(self.trained) / len(self.trained)
            line = (f"decoder {event['index'] + 1}/{event['total']} {event['name']}: {event['crop_psnr_db']:.1f} dB "
                    f"on held-out crops ({event['steps']} steps, {event['seconds']:.0f} s)"
                    + (f"; about {eta / 60:.0f} min for the {left} left" if left else ""))
        self.progress.console.print(line, highlight=False, soft_wrap=True)
        if self.decoders is not None:
            self.progress.advance(self.decoders)

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def print_synth_result(console: Console, manifest: dict, out_dir: Path) -> None:
    table = Table(title=f"{len(manifest['twins'])} twins in {escape(str(out_dir))}")
    for col in ("decoder", "twins", "PSNR of twins (dB)", "PSNR on training crops (dB)"):
        table.add_column(col)
    for d in manifest["decoders"]:
        twin_psnr = "" if d.get("twin_psnr_db") is None else f"{d['twin_psnr_db']:.1f}"
        table.add_row(d["name"], str(d.get("twins", 0)), twin_psnr, f"{d['crop_psnr_db']:.1f}")
    console.print(table)


def print_train_result(console: Console, result, out_dir: Path) -> None:
    card = result.card
    decision = f"threshold {card.threshold:.4f}" if card.task == "binary" else "the top class is the answer"
    console.print(f"trained {card.arch} ({card.task}: {', '.join(card.classes)}) in {result.seconds:.0f} s; "
                  f"best epoch {result.best_epoch}; {decision}")
    print_metrics(console, card.metrics.get("val", {}))
    console.print(f"run folder: {out_dir} (model.safetensors, card.json, history.json, curves.png)")


def print_metrics(console: Console, metrics: dict) -> None:
    table = Table(title=f"metrics ({metrics.get('perturb') or 'as stored'})")
    table.add_column("metric")
    table.add_column("value")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    sources = metrics.get("per_source") or {}
    if sources:
        st = Table(title="per source")
        for col in ("source", "n", "mean score", "called fake", "ROC-AUC vs other class"):
            st.add_column(col)
        for name, row in sources.items():
            auc = row.get("roc_auc_vs_other_class")
            st.add_row(name, str(row["n"]), f"{row['mean_score']:.4f}", f"{row['called_fake']:.3f} ({row.get('rate', '')})",
                       "" if auc is None else f"{auc:.4f}")
        console.print(st)
    recall = metrics.get("per_class_recall") or {}
    if recall:
        rt = Table(title="per-class recall")
        rt.add_column("class")
        rt.add_column("recall")
        for name, value in recall.items():
            rt.add_row(name, f"{value:.4f}")
        console.print(rt)
