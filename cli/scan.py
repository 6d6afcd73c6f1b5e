"""`gscan dir`: scan a folder, write the report, and turn the summary into an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from forensics.choices import CamFor, Decode, Device, Engine, Switch, Tiles
from forensics.images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS
from forensics.text import visible

from .app import FLAG, _probability, app, err, out
from .exit_codes import EXIT_FLAGGED, EXIT_INTERRUPTED, EXIT_USAGE


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
    s = result.summary
    failed = _failures(s, fail_on_fake, fail_on_error, allow_unscored)
    if failed:
        # even with -q, a failed CI job's log says why (stderr, one line)
        where = f"; rows in {result.report}" if result.report and not to_stdout else ""
        code = EXIT_USAGE if s.heatmap_failures else EXIT_FLAGGED
        err.print(escape(visible(f"gscan: exit {code}: of {s.files} files, {' and '.join(failed)}{where}")),
                  soft_wrap=True, highlight=False)
    if s.heatmap_failures:  # outputs that were asked for and not written: never a quiet exit 0, nor taken for 1
        err.print(escape(visible(f"gscan: exit {EXIT_USAGE}: {s.heatmap_failures} of the heatmaps asked for could "
                                 f"not be written ({s.heatmap_failure}); their rows say so in notes")), soft_wrap=True,
                  highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if failed:
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
