"""A claim is one statement of how a file was made, from one source (a C2PA manifest, XMP, a text chunk, EXIF);
a file's provenance is the strongest kind its claims make, with every claim in its detail."""

from __future__ import annotations

from dataclasses import dataclass, field

from .signatures import CAPTURED, EDITED, GENERATED

_STRENGTH = {GENERATED: 3, EDITED: 2, CAPTURED: 1, "": 0}
MAX_DETAIL = 1000  # characters of a row's provenance_detail


@dataclass(frozen=True)
class Claim:
    kind: str  # generated, edited-with-ai, captured, or "" (a statement that is none of them)
    detail: str  # one readable phrase, already escaped


@dataclass(frozen=True)
class Provenance:
    """What a file's own metadata says of its origin: the row's provenance and provenance_detail columns, and notes
    on what could not be read."""

    kind: str = ""
    detail: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    claims: tuple[Claim, ...] = field(default_factory=tuple)

    def adding(self, claims: list[Claim]) -> "Provenance":
        """This provenance with more claims (the pixels' watermarks, read after the metadata)."""
        return combine([*self.claims, *claims], list(self.notes)) if claims else self


def combine(claims: list[Claim], notes: list[str]) -> Provenance:
    """The strongest kind among the claims (generated > edited-with-ai > captured), every claim in the detail,
    strongest first."""
    ordered = sorted(claims, key=lambda c: -_STRENGTH[c.kind])
    kind = ordered[0].kind if ordered else ""
    detail = " | ".join(dict.fromkeys(c.detail for c in ordered))
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL - 3] + "..."
    return Provenance(kind, detail, tuple(notes), tuple(ordered))
