"""Writing a scan's outputs safely in folders others can write to: no write through a planted link, no two
scans on one report, no output that overwrites an input or is scanned as one."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO

from .errors import GscanError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def is_stdout(path: Path | str | None) -> bool:
    """`--report -`: JSON Lines on stdout."""
    return path is not None and str(path) == "-"


def report_format(path: Path) -> str:
    try:
        return FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise GscanError(f"report {path} must end in .csv, .json or .jsonl") from None


def _real(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return os.path.commonpath([real, base]) == base


def check_outputs(root: Path, report: Path | None, html: Path | None, cam_dir: Path | None) -> tuple[Path, ...]:
    """Refuse outputs that collide with each other or with a scanned file (GscanError, exit 2); return gscan's
    own output folders that lie inside the scanned tree, which the scan then skips."""
    from .images import _looks_like_image

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
        _refuse_special(name, path)
        if path.exists() and root.exists() and _inside(path, root) and _looks_like_image(path):
            raise GscanError(f"{name} {path} is a file the scan reads: choose another name")
    if len(files) == 2 and _real(files["--report"]) == _real(files["--html"]):
        raise GscanError("--report and --html name the same file")
    if cam_dir is None:
        return ()
    for name, path in files.items():
        if _inside(path, cam_dir):
            raise GscanError(f"{name} {path} lies inside --cam-dir {cam_dir}")
    if root.is_dir() and _real(cam_dir) == _real(root):
        raise GscanError(f"--cam-dir {cam_dir} is the scanned folder itself: heatmaps would be scanned as evidence")
    _make_cam_dir(Path(cam_dir))
    if root.is_dir() and _inside(cam_dir, root):
        return (Path(_real(cam_dir)),)  # the real path: the walk compares real paths, whatever link names it
    return ()


def _refuse_special(name: str, path: Path) -> None:
    """An output must be a regular file or a new name: never a device, FIFO or socket (`--html /dev/null` as root
    would replace the device), and never a link (refused again when opened, O_NOFOLLOW)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise GscanError(f"{name} {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise GscanError(f"{name} {path} is a symbolic link: gscan never writes through one")
    if not stat.S_ISREG(st.st_mode):
        raise GscanError(f"{name} {path} is not a regular file (a device, FIFO or socket): give a file name "
                         "(--report - writes to stdout)")


def _make_cam_dir(cam_dir: Path) -> None:
    """The heatmap folder, created before the scan starts, so that one that cannot be is exit 2, not a traceback."""
    if cam_dir.exists() and not cam_dir.is_dir():
        raise GscanError(f"--cam-dir {cam_dir} is a file: give a folder")
    try:
        cam_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GscanError(f"--cam-dir {cam_dir} cannot be created: {exc.strerror or exc}") from None
    if not os.access(cam_dir, os.W_OK | os.X_OK):
        raise GscanError(f"--cam-dir {cam_dir} is not writable")


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
    stops with exit 2 instead of interleaving rows. The lock file is removed when the scan ends, so no litter is
    left: a scan that locked a file someone removed meanwhile finds the name no longer names its file and locks
    afresh. A no-op where flock does not exist (Windows)."""

    def __init__(self, report: Path):
        self.path = Path(report).with_name(Path(report).name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "ReportLock":
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise GscanError(f"another gscan is writing {self.path.with_suffix('')} (it holds {self.path}): "
                                 "wait for it, or write another report") from None
            if self._still_named(fd):
                self._fd = fd
                return self
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        raise GscanError(f"cannot lock {self.path}: it keeps being replaced")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as exc:
            raise GscanError(f"cannot lock {self.path}: {exc.strerror or exc}") from None

    def _still_named(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            if self._still_named(self._fd):
                try:
                    os.unlink(self.path)  # while still holding the lock: a waiting scan re-checks the name
                except OSError:
                    pass
            os.close(self._fd)
            self._fd = None
