"""The closed choices of gscan's options, one Enum each: `--help` lists the values and a typo is an error."""

from __future__ import annotations

from enum import Enum


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Decode(str, Enum):
    threads = "threads"
    processes = "processes"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class CamFor(str, Enum):
    fake = "fake"
    all = "all"
    none = "none"


class Tiles(str, Enum):
    card = "card"  # the card's tiling policy (at most max_tiles, adaptive where it says so)
    all = "all"  # every tile of the grid: the verdict and the heatmap cover the whole image


class Switch(str, Enum):
    on = "on"
    off = "off"


class Task(str, Enum):
    binary = "binary"
    attribution = "attribution"


class FrontEnd(str, Enum):
    rgb = "rgb"
    npr = "npr"


class Balance(str, Enum):
    by_class = "class"
    by_source = "source"


class CamMethod(str, Enum):
    gradcam = "gradcam"
    gradcam_pp = "gradcam++"
    xgradcam = "xgradcam"
    hirescam = "hirescam"
    layercam = "layercam"
    eigencam = "eigencam"
    scorecam = "scorecam"
