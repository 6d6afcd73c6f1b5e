"""Labelled folders, forensic augmentation (native crops, blur, JPEG alike for every class), splits by image."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset, WeightedRandomSampler

from ..card import TilingPolicy
from ..errors import DataError
from ..images import decode_file, find_images
from ..tiling import normalise
from .config import Augment

REAL = "real"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    source: str  # "class/subfolder": the unit that evaluation breaks results down by


def discover(root: Path, task: str) -> tuple[list[Sample], list[str]]:
    """Samples and class names from a folder per class (subfolders below a class are sources).

    binary: `real/` is class 0 and every other top-level folder is `fake`; attribution: one class per folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if task == "binary":
        if not any(p.name == REAL for p in folders) or len(folders) < 2:
            raise DataError(f"{root} needs a `real/` folder and at least one fake folder beside it")
        classes = [REAL, "fake"]
        label_of = {p.name: 0 if p.name == REAL else 1 for p in folders}
    elif task == "attribution":
        classes = [p.name for p in folders if p.name != REAL]
        if len(classes) < 2:
            raise DataError(f"{root} needs at least two generator folders for attribution")
        label_of = {name: i for i, name in enumerate(classes)}
    else:
        raise DataError(f"unknown task {task!r}: use binary or attribution")
    samples = []
    for folder in folders:
        if folder.name not in label_of:
            continue
        for path in find_images(folder):
            rel = path.relative_to(folder).parts
            source = f"{folder.name}/{rel[0]}" if len(rel) > 1 else folder.name
            samples.append(Sample(path, label_of[folder.name], source))
    if not samples:
        raise DataError(f"no images found under {root}")
    return samples, classes


def split_by_image(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Train/val split by source image, stratified by class; crops of one image never land on both sides."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({s.label for s in samples}):
        group = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        rng.shuffle(group)
        n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def stratified_subsample(samples: list[Sample], limit: int | None, seed: int = 0) -> list[Sample]:
    """At most `limit` whole images, the same number from each source (for quick validation on a budget)."""
    if not limit or len(samples) <= limit:
        return samples
    rng = random.Random(seed)
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    per = max(1, limit // len(by_source))
    return [s for group in by_source.values() for s in rng.sample(group, min(per, len(group)))]


def summarise(samples: list[Sample], classes: list[str]) -> dict:
    return {
        "images": len(samples),
        "per_class": {classes[k]: v for k, v in sorted(Counter(s.label for s in samples).items())},
        "per_source": dict(sorted(Counter(s.source for s in samples).items())),
    }


def random_crop(pixels: np.ndarray, crop: int, rng: random.Random, grid: int = 8) -> np.ndarray:
    """A crop x crop window at native resolution on the 8-px JPEG grid (as a scan tiles), so a stored
    image's block artefacts keep their phase in training as at scan time; smaller images come whole."""
    h, w = pixels.shape[:2]
    y = rng.randint(0, max(0, h - crop) // grid) * grid
    x = rng.randint(0, max(0, w - crop) // grid) * grid
    return pixels[y:y + crop, x:x + crop]


def exclude_sources(samples: list[Sample], sources: Iterable[str],
                    strict: bool = True) -> tuple[list[Sample], list[Sample]]:
    """(kept, held out): samples whose source (e.g. "real/ciplab-600") or class folder is listed are held out;
    strict: a listed source that none of the samples has is an error (a typo)."""
    held = set(sources)
    names = [{s.source, s.source.split("/")[0]} for s in samples]  # a sample answers to its source and its class
    unknown = held - set().union(*names)
    if unknown and strict:
        raise DataError(f"no such source(s) {sorted(unknown)}; sources here: {sorted({s.source for s in samples})}")
    is_held = [bool(n & held) for n in names]
    return ([s for s, h in zip(samples, is_held) if not h], [s for s, h in zip(samples, is_held) if h])


def augmented_tile(sample: Sample, policy: TilingPolicy, mean, std, augment: Augment, rng: random.Random,
                   soften: float = 0.0) -> torch.Tensor:
    """One training tile: rescale, native crop on the JPEG grid, optional softening, then the augmentation."""
    decoded = decode_file(sample.path)
    if not decoded.ok:
        raise DataError(f"cannot train on {sample.path}: {decoded.error}")
    pixels = augment.launder(augment.rescale(decoded.pixels, policy.crop, rng), policy.crop, rng)
    patch = Image.fromarray(random_crop(pixels, policy.crop, rng))
    if soften:
        patch = patch.filter(ImageFilter.GaussianBlur(soften))
    # the crop is on the 8-px grid, so a pass on the crop puts its blocks where a pass on the file would
    patch = np.asarray(augment(patch, rng, stored_lossy=decoded.format == "JPEG"))
    tile = np.full((3, policy.crop, policy.crop), policy.pad_value, dtype=np.float32)
    tile[:, :patch.shape[0], :patch.shape[1]] = normalise(patch, mean, std)
    return torch.from_numpy(tile)


class CropDataset(Dataset):
    """Random native-resolution crops for training; `crops_per_image` draws per image and epoch."""

    def __init__(self, samples: list[Sample], policy: TilingPolicy, mean, std, augment: Augment, seed: int,
                 crops_per_image: int = 1):
        self.samples, self.policy, self.mean, self.std = samples, policy, mean, std
        self.augment, self.seed, self.crops_per_image = augment, seed, crops_per_image
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples) * self.crops_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index % len(self.samples)]
        rng = random.Random(hash((self.seed, self.epoch, index)))
        return augmented_tile(sample, self.policy, self.mean, self.std, self.augment, rng), sample.label


TWIN = "twin"  # the source prefix of synthesized twins: `--hold-out fake` keeps them, `--hold-out twin` drops them


def twin_samples(samples: list[Sample], twins: dict[Path, Path]) -> list[tuple[Sample, Sample]]:
    """(real, twin) for every real in samples that has a twin in `twins` (resolved real path -> twin path, from
    gscan synth's manifest); the twin is a fake whose source is twin/<the real's source>."""
    out = []
    for s in samples:
        twin = twins.get(Path(s.path).resolve()) if s.label == 0 else None
        if twin is not None:
            out.append((s, Sample(twin, 1, f"{TWIN}/{s.source.split('/', 1)[-1]}")))
    return out


@dataclass(frozen=True)
class Pair:
    """A real and a fake trained side by side; aligned when the fake is the real's own twin."""

    real: Sample
    fake: Sample
    aligned: bool

    @property
    def group(self) -> str:
        return f"aligned:{self.real.source}" if self.aligned else f"unaligned:{self.fake.source}"


PARTNER_SIZE_RATIO = 2.0  # with pair_by_size, an untwinned fake's real is at most this much larger or smaller


def make_pairs(samples: list[Sample], aligned: list[tuple[Sample, Sample]], seed: int,
               by_size: bool = False) -> list[Pair]:
    """Every (real, twin) as an aligned pair; every other fake in samples beside a real drawn at random, so
    that each pair gives one tile of each class. With by_size the real is drawn from those whose short side is
    within PARTNER_SIZE_RATIO of the fake's (all reals when none is): laundered alike, a downscaled 1024-px fake
    then meets a downscaled 1024-px real, not a 128-px thumbnail, so "large content, shrunk" never means fake."""
    rng = random.Random(seed)
    reals = [s for s in samples if s.label == 0]
    if not reals or not aligned:
        raise DataError("paired training needs real images with twins: none of the training reals has one in "
                        "the --twins folder(s)")
    untwinned = [s for s in samples if s.label == 1 and not s.source.startswith(TWIN + "/")]
    partners = _size_matched(reals, untwinned) if by_size else {}
    return [Pair(r, t, True) for r, t in aligned] + [Pair(rng.choice(partners.get(s) or reals), s, False)
                                                      for s in untwinned]


def _size_matched(reals: list[Sample], fakes: list[Sample]) -> dict[Sample, list[Sample]]:
    """Each fake's reals of about its size (short side, from the file header)."""
    def short(sample: Sample) -> int:
        with Image.open(sample.path) as img:
            return min(img.size)

    real_sides = [(r, short(r)) for r in reals]
    return {fake: [r for r, s in real_sides if 1 / PARTNER_SIZE_RATIO <= s / side <= PARTNER_SIZE_RATIO]
            for fake, side in ((f, short(f)) for f in fakes)}


class PairedCropDataset(Dataset):
    """(real, fake) tiles with the same crop position, flip, blur and JPEG draws: a batch holds both.

    soften_real_prob blurs the real alone (sigma 0.3-1.0) before the shared augmentation, so that a twin being a
    little softer than its real never becomes the rule the network learns.
    """

    def __init__(self, pairs: list[Pair], policy: TilingPolicy, mean, std, augment: Augment, seed: int,
                 soften_real_prob: float = 0.0):
        self.pairs, self.policy, self.mean, self.std = pairs, policy, mean, std
        self.augment, self.seed, self.soften_real_prob = augment, seed, soften_real_prob
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        draw = hash((self.seed, self.epoch, index))
        own = random.Random(draw + 1)
        soften = own.uniform(0.3, 1.0) if own.random() < self.soften_real_prob else 0.0
        tiles = [augmented_tile(s, self.policy, self.mean, self.std, self.augment, random.Random(draw), soften=sf)
                 for s, sf in ((pair.real, soften), (pair.fake, 0.0))]
        return torch.stack(tiles), torch.tensor([0, 1])


def collate_pairs(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs -> one batch of tiles with each real next to its fake."""
    return torch.cat([x for x, _ in batch]), torch.cat([y for _, y in batch])


def pair_sampler(pairs: list[Pair], seed: int, num_samples: int | None = None) -> WeightedRandomSampler:
    """Aligned and unaligned pairs drawn equally often (when both exist), and within each kind every group
    (real source for aligned pairs, fake source for unaligned ones) equally often."""
    per_group = Counter(p.group for p in pairs)
    groups_per_kind = Counter(group.split(":", 1)[0] for group in per_group)
    weights = [1.0 / (per_group[p.group] * groups_per_kind[p.group.split(":", 1)[0]]) for p in pairs]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)


def balanced_sampler(samples: list[Sample], crops_per_image: int, balance: str, seed: int,
                     num_samples: int | None = None) -> WeightedRandomSampler:
    """Each class (balance="class") or each class x source (balance="source") drawn equally often."""
    if balance not in ("class", "source"):
        raise DataError(f"unknown balance {balance!r}: use class or source")
    group = (lambda s: (s.label, 0)) if balance == "class" else (lambda s: (s.label, s.source))
    per_group = Counter(group(s) for s in samples)
    groups_per_class = Counter(label for label, _ in per_group)
    weights = [1.0 / (per_group[group(s)] * groups_per_class[s.label]) for s in samples] * crops_per_image
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)

