"""Laundering, as images reach a moderation queue: downscaled, then recompressed. A chain of perturbations for
evaluation (`resize:0.3,jpeg:75`) and an augmentation applied alike to every class in training."""

from __future__ import annotations

import random

import numpy as np
import pytest

from forensics.errors import GscanError
from forensics.perturb import LAUNDERED, parse_perturbation
from forensics.synthetic import natural_image


def test_a_chain_applies_its_steps_in_order():
    pixels = natural_image(np.random.default_rng(0), 200, 300)
    laundered = parse_perturbation(LAUNDERED)(pixels)
    assert laundered.shape == (60, 90, 3)
    resized = parse_perturbation("resize:0.3")(pixels)
    assert 0 < np.abs(laundered.astype(int) - resized.astype(int)).mean() < 20  # recompressed after the resize
    with pytest.raises(GscanError, match="joined by commas"):
        parse_perturbation("resize:0.3,jpg:75")


def test_laundering_in_training_downscales_and_recompresses_but_never_below_the_crop():
    pytest.importorskip("torch")
    from forensics.training.config import Augment

    pixels = natural_image(np.random.default_rng(1), 400, 512)
    augment = Augment(launder_prob=1.0, launder_scale=(0.25, 0.5))
    shapes = {augment.launder(pixels, 128, random.Random(seed)).shape for seed in range(12)}
    assert all(128 <= h <= 200 and w <= 256 for h, w, _ in shapes) and len(shapes) > 1
    assert Augment(launder_prob=0.0).launder(pixels, 128, random.Random(0)) is pixels
    small = natural_image(np.random.default_rng(2), 130, 140)  # already near the crop: kept at least the crop
    assert min(augment.launder(small, 128, random.Random(3)).shape[:2]) >= 128


def test_the_launder_scale_option_reads_as_a_range(tmp_path):
    pytest.importorskip("torch")
    from cli.train_options import config_from_options, train_parameters
    from forensics.training.config import Augment

    options = {p.name: p.default for p in train_parameters()}
    options.update(out=tmp_path / "run", launder_prob=0.5, launder_scale="0.2-0.5")
    config = config_from_options([tmp_path], None, options)
    assert config.augment.launder_scale == (0.2, 0.5) and config.augment.launder_prob == 0.5
    default = {p.name: p.default for p in train_parameters()}["launder_scale"]  # as --help shows it
    assert config_from_options([tmp_path], None, {**options, "launder_scale": default}).augment.launder_scale \
        == Augment().launder_scale
    with pytest.raises(GscanError, match="0.25-0.75"):
        config_from_options([tmp_path], None, {**options, "launder_scale": "big"})
