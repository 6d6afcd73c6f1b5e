"""Native-resolution tiles for an image (never resized) and where each tile lies in it."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

from .card import TilingPolicy

JPEG_BLOCK = 8  # tile origins stay on the 8-pixel grid so JPEG block artefacts keep their phase


def tile_origins(height: int, width: int, policy: TilingPolicy) -> list[tuple[int, int]]:
    """Top-left corners of the crops taken from an image: an evenly spread subset of the
    non-overlapping grid of crop x crop tiles, centred, at most policy.max_tiles."""
    return list(_origins(height, width, policy.crop, policy.max_tiles, getattr(policy, "first_tiles", 0)))


@functools.lru_cache(maxsize=256)  # a folder holds few distinct sizes; worked out once each, not per image
def _origins(height: int, width: int, crop: int, max_tiles: int, first: int) -> tuple[tuple[int, int], ...]:
    ny, nx = max(1, height // crop), max(1, width // crop)
    side = max(1, math.isqrt(max_tiles))
    gy = min(ny, side)
    gx = min(nx, max(1, max_tiles // gy))
    y0 = _grid_offset(height, ny, crop)
    x0 = _grid_offset(width, nx, crop)
    rows = np.unique(np.linspace(0, ny - 1, gy).round().astype(int))
    cols = np.unique(np.linspace(0, nx - 1, gx).round().astype(int))
    origins = [(int(y0 + r * crop), int(x0 + c * crop)) for r in rows for c in cols]
    if 0 < first < len(origins):  # adaptive tiling scores these first: spread them over the image
        lead = sorted(set(np.linspace(0, len(origins) - 1, first + 2)[1:-1].round().astype(int).tolist()))
        origins = [origins[i] for i in lead] + [o for i, o in enumerate(origins) if i not in lead]
    return tuple(origins)


def coverage(origins: list[tuple[int, int]], crop: int, height: int, width: int) -> float:
    """The share of the image's pixels inside the tiles at these origins (tiles may overlap at the edges with
    --tiles all): their union, measured on the grid of the tiles' own edges."""
    if not origins or height <= 0 or width <= 0:
        return 0.0
    ys = np.unique(np.clip([0, height, *[y for y, _ in origins], *[y + crop for y, _ in origins]], 0, height))
    xs = np.unique(np.clip([0, width, *[x for _, x in origins], *[x + crop for _, x in origins]], 0, width))
    covered = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    for y, x in origins:
        covered[np.searchsorted(ys, y):np.searchsorted(ys, min(y + crop, height)),
                np.searchsorted(xs, x):np.searchsorted(xs, min(x + crop, width))] = True
    area = np.outer(np.diff(ys), np.diff(xs))
    return float(area[covered].sum() / (height * width))


def covering_starts(size: int, crop: int) -> list[int]:
    """Crop starts along one side that leave no pixel out: the grid, then one more crop flush with the far edge
    (rounded down to the 8-pixel JPEG grid, so its blocks keep their phase; it may overlap the last)."""
    starts = list(range(0, max(1, size - crop + 1), crop))
    if size > crop and starts[-1] + crop < size:
        starts.append(max(starts[-1] + JPEG_BLOCK, (size - crop) // JPEG_BLOCK * JPEG_BLOCK))
    return starts


def covering_origins(height: int, width: int, crop: int) -> list[tuple[int, int]]:
    """Every tile of the grid plus the edge tiles (--tiles all): the whole image, up to 7 pixels at an edge."""
    return [(y, x) for y in covering_starts(height, crop) for x in covering_starts(width, crop)]


def _grid_offset(size: int, n: int, crop: int) -> int:
    spare = max(0, size - n * crop)
    return (spare // 2) // JPEG_BLOCK * JPEG_BLOCK


def normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 H x W x 3 -> float32 3 x H x W, (x/255 - mean) / std."""
    return normalise_batch(pixels[None], mean, std)[0]


def normalise_batch(patches: np.ndarray, mean, std) -> np.ndarray:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W in two whole-array passes, x * (1/(255 std)) - mean/std.
    Four numpy steps per tile took 4-8x longer per image, time the decode threads spend partly under the GIL."""
    std = np.asarray(std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
    offset = (np.asarray(mean, dtype=np.float32) / std)[:, None, None]
    out = np.empty((patches.shape[0], 3, *patches.shape[1:3]), dtype=np.float32)
    np.multiply(patches.transpose(0, 3, 1, 2), scale, out=out)
    out -= offset
    return out


def cut_patches(pixels: np.ndarray, policy: TilingPolicy,
                all_tiles: bool = False) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The uint8 crops (N x crop x crop x 3, zero-filled past a small image's edge) and their origins: the card's
    tiles, or with all_tiles every tile that covers the image."""
    h, w = pixels.shape[:2]
    crop = policy.crop
    origins = covering_origins(h, w, crop) if all_tiles else tile_origins(h, w, policy)
    patches = np.zeros((len(origins), crop, crop, 3), dtype=np.uint8)
    for i, (y, x) in enumerate(origins):
        patch = pixels[y:y + crop, x:x + crop]
        patches[i, :patch.shape[0], :patch.shape[1]] = patch
    return patches, origins


def normalise_patches(patches: np.ndarray, height: int, width: int, policy: TilingPolicy, mean, std) -> np.ndarray:
    """cut_patches' crops of a height x width image as model input; what lies past a small image's edge gets the
    policy's pad value."""
    tiles = normalise_batch(patches, mean, std)
    # Only an image smaller than the crop gives partial tiles (every origin then shares its short side).
    tiles[:, :, min(height, policy.crop):, :] = policy.pad_value
    tiles[:, :, :, min(width, policy.crop):] = policy.pad_value
    return tiles


def extract_tiles(pixels: np.ndarray, policy: TilingPolicy, mean, std) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Normalised tiles (N x 3 x crop x crop float32) and their origins; small images are padded."""
    patches, origins = cut_patches(pixels, policy)
    return normalise_patches(patches, *pixels.shape[:2], policy, mean, std), origins


@dataclass(frozen=True)
class Preprocessing:
    """Everything that shapes a model's input tiles, from its card: built once, compared as one value."""

    policy: TilingPolicy
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    all_tiles: bool = False  # --tiles all: every tile of the grid, whatever the card's max_tiles

    @classmethod
    def from_card(cls, card, all_tiles: bool = False) -> "Preprocessing":
        return cls(card.tiling, tuple(card.mean), tuple(card.std), all_tiles)

    def tiles(self, pixels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Normalised tiles (N x 3 x crop x crop float32) and their origins."""
        patches, origins = self.patches(pixels)
        return self.normalise(patches, *pixels.shape[:2]), origins

    def patches(self, pixels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The first half of tiles(), for engines that cut in one process and normalise in another."""
        return cut_patches(pixels, self.policy, self.all_tiles)

    def normalise(self, patches: np.ndarray, height: int, width: int) -> np.ndarray:
        """The second half of tiles()."""
        return normalise_patches(patches, height, width, self.policy, self.mean, self.std)

    def cuts_like(self, other: "Preprocessing") -> bool:
        """The same tiles, normalised alike, as `other`; adaptive tiling's first_tiles and margin only say which
        of them are scored first, so two models that differ there can share one image's tiles."""
        def tile_set(p: "Preprocessing") -> tuple:
            return (replace(p.policy, first_tiles=0, margin=0.0), p.mean, p.std, p.all_tiles)
        return tile_set(self) == tile_set(other)

    @property
    def slot_shape(self) -> tuple[int, int, int, int]:
        """The most tiles one image gives, as an array shape."""
        return (self.policy.max_tiles, 3, self.policy.crop, self.policy.crop)
