"""Tamper-evident reports: each row carries `row_digest`, an HMAC-SHA256 of its cells under a key the scanning side
holds ($GSCAN_REPORT_KEY, else a 0600 file in the user config folder, made on first use). Whoever can write a
report but not read the key cannot change a row, or forge one, without the digest failing: --resume scans such
rows again and `gscan verify` lists them."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import warnings
from pathlib import Path

from .errors import GscanWarning

KEY_ENV = "GSCAN_REPORT_KEY"
KEY_FILE_ENV = "GSCAN_REPORT_KEY_FILE"
DIGEST_COLUMN = "row_digest"


def key_file() -> Path:
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    from platformdirs import user_config_path

    return user_config_path("gscan") / "report.key"


def report_key(create: bool = True) -> bytes | None:
    """The key rows are signed with, or None (with a warning) when there is none and none can be made."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode("utf-8")
    path = key_file()
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        warnings.warn(GscanWarning(f"report key {path} cannot be read ({exc.strerror or exc}): rows carry no "
                                   f"digest (set {KEY_ENV})"), stacklevel=2)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        warnings.warn(GscanWarning(f"made a new report key {path} (0600): it signs every row and seal this user's "
                                   "scans write; gscan verify needs it, so keep it, and keep it from whoever may "
                                   f"write the reports (or set {KEY_ENV})"), stacklevel=2)
    except FileExistsError:
        pass  # another scan made it first: read theirs
    except OSError as exc:
        warnings.warn(GscanWarning(f"report key {path} cannot be created ({exc.strerror or exc}): rows carry no "
                                   f"digest (set {KEY_ENV})"), stacklevel=2)
        return None
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd) as fh:
        text = fh.read(4096).strip()
    if not text:
        raise OSError(f"{path} is empty")
    return text.encode("utf-8")


def _canonical(row: dict, columns: list[str]) -> bytes:
    """The cells as typed values, one JSON text per column in schema order: the same for a row fresh from a scan
    and for that row read back from CSV, JSON or JSON Lines (report.read_rows types CSV cells again)."""
    cells = [json.dumps(_finite(row.get(k)), ensure_ascii=True, default=str) for k in columns if k != DIGEST_COLUMN]
    return "\x1f".join(cells).encode("ascii")


def _finite(value):
    """As the report stores it: JSON has no NaN or Infinity, and CSV writes them empty."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def row_digest(key: bytes, row: dict, columns: list[str]) -> str:
    return hmac.new(key, _canonical(row, columns), hashlib.sha256).hexdigest()


def digest_holds(key: bytes | None, row: dict, columns: list[str]) -> bool:
    """Whether the row's digest is the one this key gives its cells (False without a key or a digest)."""
    stated = row.get(DIGEST_COLUMN)
    if key is None or not isinstance(stated, str) or len(stated) != 64:
        return False
    try:
        return hmac.compare_digest(stated, row_digest(key, row, columns))
    except (TypeError, ValueError):
        return False


def changed_rows(rows: list[dict], key: bytes, columns: list[str]) -> list[tuple[dict, str]]:
    """The rows whose digest does not hold under key, each with why: `gscan verify`'s answer."""
    out = []
    for row in rows:
        if not row.get(DIGEST_COLUMN):
            out.append((row, "no row_digest (written without a key, or removed)"))
        elif not digest_holds(key, row, columns):
            out.append((row, "row_digest does not match its cells (changed since it was written)"))
    return out


def sealed_bytes(row: dict, columns: list[str]) -> bytes:
    """Every cell of a row, its digest included, as the seal's hash chain takes it (forensics/seal.py)."""
    cells = [json.dumps(_finite(row.get(k)), ensure_ascii=True, default=str) for k in columns]
    return "\x1f".join(cells).encode("ascii")
