"""Reports that prove they are whole: a seal beside every report file (REPORT.seal) commits to its columns, its
row count and every row in order, through a hash chain over the rows. The seal's header is authenticated twice:
an HMAC under the scanner's report key (forensics/integrity.py: only its holder can check or forge it) and, with
`gscan dir --sign-key`, an Ed25519 signature that anyone with the public key can check on another machine.

The seal is JSON Lines: a header line, then one line per row with the first 16 hex digits of that row's hash, so
that `gscan verify` can say *what* happened (rows deleted, moved or spliced in, the report cut short) while it
streams the report and the seal side by side in bounded memory."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GscanError
from .outputs import create_new

SEAL_VERSION = 1
SHORT = 16  # hex digits of a row's hash kept per seal line (locating only; integrity rests on the full chain)
LOOK_AHEAD = 4096  # seal lines searched ahead for a row that is not where it should be (rows deleted before it)
RECENT = 4096  # rows already seen that a moved row may match


def seal_path(report: Path) -> Path:
    return report.with_name(report.name + ".seal")


def row_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(canonical).digest()


def chain_start(columns: list[str]) -> bytes:
    return hashlib.sha256(f"gscan-seal/{SEAL_VERSION}\x1f".encode() + "\x1f".join(columns).encode()).digest()


def chain_next(chain: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(chain + digest).digest()


def _signed_bytes(header: dict) -> bytes:
    """What the HMAC and the signature cover: every header field but themselves, canonical JSON."""
    body = {k: v for k, v in header.items() if k not in ("hmac", "signature")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class SigningKey:
    """An Ed25519 private key from a PEM file (gscan keys writes one)."""

    def __init__(self, path: Path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(Path(path).read_bytes()[:64 * 1024], password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise GscanError(f"--sign-key {path}: not a readable Ed25519 private key in PEM ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise GscanError(f"--sign-key {path}: not an Ed25519 key (gscan keys makes one)")
        self._key = key
        self.fingerprint = public_fingerprint(key.public_key())

    def sign(self, data: bytes) -> str:
        return self._key.sign(data).hex()


def public_fingerprint(public_key) -> str:
    """sha256 of the raw 32-byte public key, hex: what reports and `gscan keys` name a key by."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


def load_public_key(path: Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(Path(path).read_bytes()[:64 * 1024])
    except (OSError, ValueError, TypeError) as exc:
        raise GscanError(f"--public-key {path}: not a readable public key in PEM ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise GscanError(f"--public-key {path}: not an Ed25519 public key")
    return key


def make_key_pair(folder: Path, name: str = "gscan-signing") -> tuple[Path, Path, str]:
    """A new Ed25519 key pair: FOLDER/NAME.key (private, 0600, never overwritten) and FOLDER/NAME.pub."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                              PublicFormat)

    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    folder.mkdir(parents=True, exist_ok=True)
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise GscanError(f"{path} exists: keys are never overwritten (choose another --out)")
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    with create_new(public) as fh:
        fh.write(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())
    return private, public, public_fingerprint(key.public_key())


class SealWriter:
    """Chains rows as a report writes them; `finish` writes REPORT.seal (atomically, beside the report)."""

    def __init__(self, report: Path, columns: list[str], fmt: str, key: bytes | None, signer: SigningKey | None):
        self.report, self.columns, self.format, self.key, self.signer = report, columns, fmt, key, signer
        self.chain = chain_start(columns)
        self.count = 0
        self._partial = seal_path(report).with_name(seal_path(report).name + ".partial")
        if self._partial.exists() or self._partial.is_symlink():
            self._partial.unlink()
        self._lines = create_new(self._partial)

    def add(self, canonical: bytes) -> None:
        digest = row_hash(canonical)
        self.chain = chain_next(self.chain, digest)
        self.count += 1
        self._lines.write(digest.hex()[:SHORT] + "\n")

    def finish(self, complete: bool = True) -> None:
        if not complete:  # an unfinished report has no seal, and leaves no spool behind
            try:
                self._lines.close()
            finally:
                self._partial.unlink(missing_ok=True)
            return
        self._lines.close()
        header = {"gscan_seal": SEAL_VERSION, "report": self.report.name, "format": self.format,
                  "columns": self.columns, "rows": self.count, "chain": self.chain.hex(),
                  "public_key_sha256": self.signer.fingerprint if self.signer else None}
        header["hmac"] = hmac.new(self.key, _signed_bytes(header), hashlib.sha256).hexdigest() if self.key else None
        header["signature"] = self.signer.sign(_signed_bytes(header)) if self.signer else None
        target = seal_path(self.report)
        with create_new(target.with_name(target.name + ".tmp")) as out, open(self._partial) as lines:
            out.write(json.dumps(header, sort_keys=True) + "\n")
            for line in lines:
                out.write(line)
        os.replace(target.with_name(target.name + ".tmp"), target)
        self._partial.unlink(missing_ok=True)


@dataclass
class SealCheck:
    """What `gscan verify` found against the seal."""

    sealed_rows: int = 0
    rows: int = 0
    authenticated_by: list[str] = field(default_factory=list)  # "report key", "public key <fp>"
    problems: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return not self.problems


def read_seal_header(report: Path) -> dict:
    path = seal_path(report)
    try:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline(1 << 20))
    except FileNotFoundError:
        raise GscanError(f"{path.name} is missing: the report cannot be shown to be whole (a report written "
                         "to stdout, or by a gscan before seals, has none; a deleted seal looks the same)") from None
    except (OSError, ValueError) as exc:
        raise GscanError(f"{path.name} is not a gscan seal ({exc})") from None
    if not isinstance(header, dict) or header.get("gscan_seal") != SEAL_VERSION:
        raise GscanError(f"{path.name} is not a gscan seal of version {SEAL_VERSION}")
    return header


def authenticate(header: dict, key: bytes | None, public_key) -> tuple[list[str], list[str]]:
    """(what authenticated the seal, problems): the HMAC under key, the signature under public_key."""
    by, problems = [], []
    signed = _signed_bytes(header)
    if public_key is not None:
        fingerprint = public_fingerprint(public_key)
        if header.get("public_key_sha256") != fingerprint:
            problems.append(f"the seal was not signed with this public key (it names "
                            f"{str(header.get('public_key_sha256'))[:16]}..., the key is {fingerprint[:16]}...)")
        else:
            from cryptography.exceptions import InvalidSignature
            try:
                public_key.verify(bytes.fromhex(str(header.get("signature") or "")), signed)
                by.append(f"public key {fingerprint[:16]}...")
            except (InvalidSignature, ValueError):
                problems.append("the seal's signature does not hold: the seal was changed or forged")
    if key is not None and header.get("hmac"):
        if hmac.compare_digest(str(header["hmac"]), hmac.new(key, signed, hashlib.sha256).hexdigest()):
            by.append("report key")
        elif public_key is None:
            problems.append("the seal's HMAC does not hold under this report key (changed, or another key)")
    if not by and not problems:
        problems.append("nothing to check the seal with: the report key is not here and no --public-key was given")
    return by, problems


class SealReader:
    """Walks the seal's row lines beside the report's rows, in bounded memory, naming what differs."""

    def __init__(self, report: Path, header: dict):
        self.header = header
        self._fh = open(seal_path(report), encoding="utf-8")
        self._fh.readline(1 << 20)
        self._ahead: list[str] = []  # seal lines read but not matched yet (look-ahead)
        self.position = 0  # seal lines consumed
        self.recent: OrderedDict[str, int] = OrderedDict()  # rows matched lately: a repeat is a duplicate
        self.skipped: OrderedDict[str, int] = OrderedDict()  # sealed rows passed over: a later match was moved
        self.chain = chain_start(list(header.get("columns") or []))
        self.count = 0
        self.problems: list[str] = []

    def _next(self) -> str | None:
        if self._ahead:
            return self._ahead.pop(0)
        line = self._fh.readline(64)
        return line.strip() if line else None

    def match(self, canonical: bytes) -> None:
        digest = row_hash(canonical)
        self.chain = chain_next(self.chain, digest)
        self.count += 1
        short = digest.hex()[:SHORT]
        expected = self._next()
        if expected == short:
            self._consume(short)
            return
        if expected is not None:
            self._ahead.insert(0, expected)
        while len(self._ahead) < LOOK_AHEAD:
            line = self._fh.readline(64)
            if not line:
                break
            self._ahead.append(line.strip())
        if short in self.skipped:
            self.problems.append(f"row {self.count} is sealed row {self.skipped.pop(short) + 1}, out of its sealed "
                                 "order (moved)")
        elif short in self._ahead:
            skipped = self._ahead.index(short)
            self.problems.append(f"{skipped} sealed row(s) missing before row {self.count} (deleted, or moved)")
            for offset, line in enumerate(self._ahead[:skipped]):
                self.skipped[line] = self.position + offset
                if len(self.skipped) > RECENT:
                    self.skipped.popitem(last=False)
            del self._ahead[:skipped + 1]
            self.position += skipped
            self._consume(short)
        elif short in self.recent:
            self.problems.append(f"row {self.count} is sealed row {self.recent[short] + 1} again (duplicated)")
        else:
            self.problems.append(f"row {self.count} is not a sealed row (changed, forged, or spliced in from "
                                 "another report)")

    def _consume(self, short: str) -> None:
        self.recent[short] = self.position
        self.position += 1
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    def finish(self) -> list[str]:
        left = len(self._ahead) + sum(1 for _ in self._fh)
        self._fh.close()
        problems = list(self.problems)
        if left:
            problems.append(f"the report ends {left} sealed row(s) early (truncated, or rows deleted at its end)")
        if self.count != self.header.get("rows"):
            problems.append(f"{self.count} rows where the seal says {self.header.get('rows')}")
        if self.chain.hex() != self.header.get("chain") and not problems:
            problems.append("the rows' hash chain differs from the sealed one (rows changed or reordered)")
        return problems
