"""What the user asked a scan for, checked once: frozen, so nothing downstream changes it in flight."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from .choices import CamFor, Decode, Tiles
from .errors import GscanError
from .images import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS
from .provenance import ProvenanceSettings


@dataclass(frozen=True)
class ScanOptions:
    batch_size: int = 0  # tiles per inference call; 0: automatic
    workers: int = 0  # decode threads (or processes); 0: automatic
    threshold: float | None = None  # None: the model card's
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes; larger files are error rows, never read
    cam_dir: Path | None = None  # write a heatmap PNG per selected image here
    cam_for: CamFor = CamFor.fake
    decode: Decode = Decode.threads  # processes: tiles back through shared memory; no heatmaps or thumbnails
    follow_links: bool = False  # score files reached through links that leave the scanned folder
    tiles: Tiles = Tiles.card  # all: every tile of the grid (local engine, decode threads)
    provenance: ProvenanceSettings | None = ProvenanceSettings()  # None: metadata not read (--provenance off)
    # set by the session from the other things asked for (the page, the folder), never by hand
    previews: bool = False  # embed-ready thumbnails for the triage page
    root: Path | None = None  # the scanned folder: links must stay inside it
    skip: tuple[Path, ...] = ()  # gscan's own output folders inside the scanned tree: not scanned

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "cam_for", CamFor(self.cam_for))
            object.__setattr__(self, "decode", Decode(self.decode))
            object.__setattr__(self, "tiles", Tiles(self.tiles))
        except ValueError as exc:
            raise GscanError(str(exc)) from None
        if self.batch_size < 0 or self.workers < 0 or self.max_pixels < 1 or self.max_file_size < 1:
            raise GscanError("batch size and workers must be 0 (automatic) or more; the limits at least 1")
        if self.threshold is not None and not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise GscanError(f"the threshold must be a number from 0 to 1, not {self.threshold}")

    def threshold_for(self, card) -> float:
        """The threshold rows are judged by: --threshold, else the model card's."""
        return card.threshold if self.threshold is None else self.threshold

    def replace(self, **changes) -> "ScanOptions":
        return dataclasses.replace(self, **changes)

    def wants_cams(self) -> bool:
        return self.cam_dir is not None and self.cam_for != CamFor.none

    def needs(self) -> set[str]:
        """The engine capabilities these options need (see engines.base.CAPABILITIES)."""
        needed = {"heatmaps"} if self.wants_cams() else set()
        needed |= {"all-tiles"} if self.tiles == Tiles.all else set()
        return needed | ({"previews"} if self.previews else set())

    def settings_text(self, threshold: float, attribution_sha256: str | None) -> str:
        """Every setting that shapes a row besides the model: a resumed scan reuses a row only when it matches."""
        cams = self.cam_for.value if self.cam_dir is not None else "none"
        return (f"threshold={threshold!r};attribution={(attribution_sha256 or 'none')[:16]};"
                f"max_pixels={self.max_pixels};max_file_size={self.max_file_size};"
                f"follow_links={int(self.follow_links)};cams={cams};tiles={self.tiles.value};"
                f"{self.provenance.key() if self.provenance else 'provenance=off'}")

    def read_limits(self) -> dict:
        """decode_file's keyword arguments for these options."""
        return {"max_file_size": self.max_file_size, "root": None if self.follow_links else self.root,
                "provenance": self.provenance}
