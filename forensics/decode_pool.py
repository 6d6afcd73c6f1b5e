"""Decoding and tiling in worker processes, tiles handed back through shared memory instead of pickles.

For scans whose model outruns what one process can decode (a GPU): on an H100 with 16 cores, 15 decode threads in
one process reached 328 images/s where 16 processes decoded 2,046. Pickling a result's tiles back cost the main
process 1.45 ms per image (measured on 2 cores: a ceiling near 700 images/s), so workers write tiles into slots of
one shared ring and return only the file's facts; the main process copies each image's tiles out and frees the slot.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context, shared_memory
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .errors import GscanError
from .images import DecodedImage, decode_file
from .tiling import Preprocessing

MAX_DEATHS_IN_A_ROW = 5
Job = tuple[Path, int]  # a file and the ring slot its tiles go to
Result = tuple[DecodedImage, int, list[tuple[int, int]]]  # facts (no pixels), tile count, tile origins


@dataclass(frozen=True)
class TileSpec:
    """What a worker needs to turn a file into tiles: the model's preprocessing and the read limits."""

    preprocessing: Preprocessing
    max_pixels: int
    read_limits: dict = field(default_factory=dict)  # decode_file's file-size and link limits

    @property
    def slot_shape(self) -> tuple[int, int, int, int]:
        return self.preprocessing.slot_shape


_worker: dict = {}


def _die_with_parent() -> None:
    """A worker whose scan was killed (SIGKILL leaves no chance to shut the pool down) exits within a second
    instead of blocking forever on its queue: its parent changing is the sign. Once every worker has gone, the
    resource tracker unlinks the shared ring, so no segment outlives the scan."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="gscan-parent-watch", daemon=True).start()


def _init_worker(shm_name: str, slots: int, spec: TileSpec) -> None:
    _die_with_parent()
    # Attaching registers the segment with the resource tracker again; workers share the parent's tracker, so
    # that is a no-op, and the parent's unlink at the end of the scan is the one that counts.
    shm = shared_memory.SharedMemory(name=shm_name)
    _worker.update(shm=shm, spec=spec, ring=np.ndarray((slots, *spec.slot_shape), np.float32, buffer=shm.buf))


def _prepare_chunk(jobs: list[Job]) -> list[Result]:
    spec, ring, out = _worker["spec"], _worker["ring"], []
    for path, slot in jobs:
        decoded, n, origins = decode_file(path, spec.max_pixels, **spec.read_limits), 0, []
        if decoded.ok:
            try:
                tiles, origins = spec.preprocessing.tiles(decoded.pixels)
                ring[slot, :len(tiles)] = tiles
                n = len(tiles)
            except Exception as exc:  # a bad file becomes its row's error, never a dead worker
                decoded.error = f"internal error while tiling: {exc!r}"
        decoded.pixels = None
        out.append((decoded, n, origins))
    return out


class ProcessDecoder:
    """A pool of decode processes and the shared ring their tiles come back through; use as a context manager."""

    def __init__(self, workers: int, spec: TileSpec, chunk: int = 8):
        self.workers, self.spec, self.chunk = workers, spec, chunk
        self.in_flight = 2 * workers  # chunks submitted ahead: every worker has the next one waiting
        self.slots = self.chunk * self.in_flight
        size = self.slots * math.prod(spec.slot_shape) * 4
        self.shm = shared_memory.SharedMemory(create=True, size=size)
        self.ring = np.ndarray((self.slots, *spec.slot_shape), np.float32, buffer=self.shm.buf)
        self.pool = self._start_pool()
        self.deaths_in_a_row = 0

    def _start_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent holds ONNX Runtime's threads, which a forked child would inherit half-alive
        return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                   initargs=(self.shm.name, self.slots, self.spec))

    def __enter__(self) -> "ProcessDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        del self.ring
        self.shm.close()
        self.shm.unlink()

    def decode(self, paths: Iterable[Path], reuse: Callable[[Path], dict | None] = lambda p: None,
               ) -> Iterator[tuple[DecodedImage | None, np.ndarray | None, list, dict | None]]:
        """(facts, tiles, origins, reused row) per path, in input order; a reused row skips decoding."""
        free, queue, source = deque(range(self.slots)), deque(), iter(paths)

        def submit() -> bool:
            batch = list(islice(source, self.chunk))
            if not batch:
                return False
            jobs, reused = [], {}
            for path in batch:
                row = reuse(path)
                if row is not None:
                    reused[path] = row
                else:
                    jobs.append((path, free.popleft()))
            future = self._submit(jobs) if jobs else None
            queue.append((batch, reused, jobs, future))
            return True

        for _ in range(self.in_flight):
            if not submit():
                break
        while queue:
            batch, reused, jobs, future = queue.popleft()
            results = iter(self._results(jobs, future) if jobs else [])
            slots = iter(slot for _, slot in jobs)
            for path in batch:
                if path in reused:
                    yield None, None, [], reused[path]
                    continue
                decoded, n, origins = next(results)
                slot = next(slots)
                tiles = self.ring[slot, :n].copy() if decoded.ok else None
                free.append(slot)
                yield decoded, tiles, origins, None
            submit()

    def _submit(self, jobs: list[Job]) -> Future:
        try:
            return self.pool.submit(_prepare_chunk, jobs)
        except BrokenProcessPool:  # a worker died since the last submit: start a fresh pool
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start_pool()
            return self.pool.submit(_prepare_chunk, jobs)

    def _results(self, jobs: list[Job], future: Future) -> list[Result]:
        """The chunk's results. If a worker died (a decoder crashed on some file), each of the chunk's files is
        retried alone, and the one that kills a worker again gets an error row: a bad file never stops a scan."""
        try:
            return future.result()
        except BrokenProcessPool:
            out = []
            for job in jobs:
                try:
                    out += self._submit([job]).result()
                    self.deaths_in_a_row = 0
                except BrokenProcessPool:
                    self._count_death()
                    out.append((DecodedImage(path=job[0], error="the decoder process died on this file"), 0, []))
            return out

    def _count_death(self) -> None:
        """One bad file kills one worker; fresh workers dying on file after file means they cannot run at all."""
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row >= MAX_DEATHS_IN_A_ROW:
            raise GscanError(f"decode worker processes died on {self.deaths_in_a_row} files in a row: they cannot "
                             "run here (a script started from standard input cannot spawn them); use --decode threads")
