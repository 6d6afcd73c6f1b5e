"""What a file's own metadata says made it: Content Credentials (C2PA), XMP Digital Source Type, generator text
chunks and EXIF fields, read from the bytes a scan already holds (no second open, no network). A declaration of
generation makes a row's label fake; nothing here ever makes one real (forensics/rows.py applies the rule)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import GscanError
from .claims import Claim, Provenance, combine
from .containers import MAX_MANIFEST, embedded_metadata
from .content_credentials import MIME, C2paUnavailable, c2pa_claims, manifest_store
from .metadata import metadata_claims, short
from .signatures import CAPTURED, EDITED, GENERATED, GENERATIVE, WATERMARK_TABLE, WATERMARKS
from .watermarks import find_marks

__all__ = ["CAPTURED", "EDITED", "GENERATED", "GENERATIVE", "Provenance", "ProvenanceSettings", "read_provenance",
           "read_watermarks"]
MAX_TRUST_FILE = 4 * 1024 * 1024


@dataclass(frozen=True)
class ProvenanceSettings:
    """How provenance is read in a scan: picklable, so decode processes get the same settings."""

    trust_pem: str = ""  # C2PA trust anchors (PEM); empty: signers are not checked against a trust list
    trust_sha256: str = ""

    @classmethod
    def with_trust_file(cls, path: Path | None) -> "ProvenanceSettings":
        """Settings with the trust anchors of a PEM file (--c2pa-trust), refused (GscanError) unless it is one."""
        if path is None:
            return cls()
        try:
            raw = Path(path).read_bytes()[:MAX_TRUST_FILE + 1]
        except OSError as exc:
            raise GscanError(f"--c2pa-trust {path}: {exc.strerror or exc}") from None
        if len(raw) > MAX_TRUST_FILE or b"-----BEGIN CERTIFICATE-----" not in raw:
            raise GscanError(f"--c2pa-trust {path} is not a PEM file of certificates (BEGIN CERTIFICATE ...)")
        return cls(raw.decode("ascii", "replace"), hashlib.sha256(raw).hexdigest())

    def key(self) -> str:
        """What the settings of a row say of provenance (--resume reuses a row only when it matches)."""
        return f"provenance=on;watermarks={WATERMARK_TABLE};c2pa_trust={self.trust_sha256[:16] or 'none'}"


def _c2pa(data: bytes, fmt: str, settings: ProvenanceSettings, embedded) -> tuple[list[Claim], list[str]]:
    if embedded.c2pa_bytes > MAX_MANIFEST:
        return [], [f"C2PA manifest store of {embedded.c2pa_bytes:,} bytes, more than {MAX_MANIFEST:,}: not read"]
    try:
        store = manifest_store(data, fmt, settings.trust_pem)
    except C2paUnavailable as exc:
        return [], [f"C2PA manifest present but not validated: c2pa-python could not be loaded ({short(str(exc))})"]
    except Exception as exc:  # the library's errors on a malformed manifest: a note, never a failed row
        return ([Claim("", f"c2pa: manifest present but unreadable ({short(str(exc), 100)})")] if embedded.c2pa_bytes
                else []), []
    if store is None:
        return [], []
    return c2pa_claims(store, bool(settings.trust_pem)), []


def read_provenance(data: bytes, fmt: str, image: Image.Image, settings: ProvenanceSettings) -> Provenance:
    """The provenance of one file from its bytes and the Pillow image opened on them (header only is enough)."""
    embedded = embedded_metadata(data, fmt)
    claims, notes = [], list(embedded.notes)
    if embedded.has_c2pa and fmt in MIME:
        found, problems = _c2pa(data, fmt, settings, embedded)
        claims += found
        notes += problems
    claims += metadata_claims(embedded, image)
    return combine(claims, [f"provenance: {n}" for n in notes])


def read_watermarks(pixels: np.ndarray) -> list[Claim]:
    """Claims of the known invisible watermarks the decoded pixels carry (signatures.WATERMARKS): each a
    statement of generation. No mark found is no claim: a missing mark clears nothing."""
    return [Claim(GENERATED, match.detail) for match in find_marks(pixels, WATERMARKS)]
