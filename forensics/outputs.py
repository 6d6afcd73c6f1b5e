"""Writing a scan's outputs safely in folders others can write to: no write through a planted link, no two
scans on one report, no output that overwrites an input or is scanned as one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO

from .errors import GscanError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _real(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return os.path.commonpath([real, base]) == base


def check_outputs(root: Path, report: Path | None, html: Path | None, cam_dir: Path | None) -> tuple[Path, ...]:
    """Refuse outputs that collide with each other or with a scanned file (GscanError, exit 2); return gscan's
    own output folders that lie inside the scanned tree, which the scan then skips."""
    from .images import _looks_like_image
    from .report import is_stdout, report_format

    files = {name: Path(p) for name, p in (("--report", report), ("--html", html)) if p and not is_stdout(p)}
    for name, path in files.items():
        if path.is_dir():
            raise GscanError(f"{name} {path} is a folder: give a file name")
        if name == "--report":
            report_format(path)  # a clear error for a suffix we cannot write
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise GscanError(f"{name} {path}: {parent} is a file, not a folder")
        if path.exists() and root.exists() and _inside(path, root) and _looks_like_image(path):
            raise GscanError(f"{name} {path} is a file the scan reads: choose another name")
    if len(files) == 2 and _real(files["--report"]) == _real(files["--html"]):
        raise GscanError("--report and --html name the same file")
    if cam_dir is not None:
        if Path(cam_dir).exists() and not Path(cam_dir).is_dir():
            raise GscanError(f"--cam-dir {cam_dir} is a file: give a folder")
        for name, path in files.items():
            if _inside(path, cam_dir):
                raise GscanError(f"{name} {path} lies inside --cam-dir {cam_dir}")
        if root.is_dir() and _inside(cam_dir, root):
            return (Path(os.path.abspath(cam_dir)),)
    return ()


def open_in_place(path: Path) -> IO[str]:
    """Open path for writing (created or truncated), refusing a symlink at it: a link planted at the report's
    name would otherwise send a root scan's writes to the link's target."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o666)
    except OSError as exc:
        if Path(path).is_symlink():
            raise GscanError(f"{path} is a symbolic link: gscan never writes through one") from None
        raise GscanError(f"cannot write {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")


def create_new(path: Path) -> IO[str]:
    """Create path afresh (O_EXCL, never through a link): whatever was at that name, file or planted link, is
    removed first, and if something is put back in between, the create fails instead of following it."""
    try:
        if os.path.lexists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    except OSError as exc:
        raise GscanError(f"cannot create {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")


def temporary_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """A new file with an unpredictable name in path's folder (tempfile: O_EXCL), for os.replace into place."""
    fd, name = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=suffix)
    umask = os.umask(0)
    os.umask(umask)
    if hasattr(os, "fchmod"):  # mkstemp's 0600 would make heatmaps unreadable to the team that reads reports
        os.fchmod(fd, 0o666 & ~umask)
    return fd, name


class ReportLock:
    """An exclusive lock on a report (NAME.lock beside it, flock): a second scan writing the same report at once
    stops with exit 2 instead of interleaving rows. A no-op where flock does not exist (Windows)."""

    def __init__(self, report: Path):
        self.path = Path(report).with_name(Path(report).name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "ReportLock":
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as exc:
            raise GscanError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise GscanError(f"another gscan is writing {self.path.with_suffix('')} (it holds {self.path}): wait for "
                             "it, or write another report") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with the descriptor; the file stays (removing it would race)
            self._fd = None
