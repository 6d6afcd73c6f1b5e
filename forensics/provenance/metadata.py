"""Unsigned statements of origin: XMP Digital Source Type and credit notes, generator text chunks, EXIF fields that
name a generator, and camera make and model (context only). Each becomes a Claim; nothing here is verified, and
the detail says so."""

from __future__ import annotations

import json
import re

from PIL import Image

from ..text import visible
from .claims import Claim
from .containers import MAX_TEXT_VALUE, Embedded
from .signatures import (CAPTURED, CREDIT_NOTES, DIGITAL_SOURCE_TYPES, GENERATED, GENERATOR_NAMES, PARAMETER_TEXT,
                         PNG_TEXT_KEYS, source_type_name)

EXIF_IFD = 0x8769
EXIF_TAGS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x010E: "ImageDescription", 0x013B: "Artist"}
USER_COMMENT = 0x9286
_XMP_FIELD = r"(?:{name})\s*(?:=\s*[\"']([^\"'<>]{{0,2000}})[\"']|>\s*(?:<rdf:Alt>\s*<rdf:li[^>]{{0,200}}>)?([^<]{{0,2000}})<)"
_XMP_SOURCE_TYPE = re.compile(_XMP_FIELD.format(name=r"Iptc4xmpExt:DigitalSourceType|\bDigitalSourceType"))
_XMP_CREDIT = re.compile(_XMP_FIELD.format(name=r"photoshop:Credit"))
_XMP_CREATOR_TOOL = re.compile(_XMP_FIELD.format(name=r"xmp:CreatorTool"))


def short(text: str, limit: int = 120) -> str:
    """A claim's string as shown in a row: control and bidi characters escaped, cut to a readable length."""
    text = visible(" ".join(text.split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _field_values(pattern: re.Pattern, text: str) -> list[str]:
    return [(a or b).strip() for a, b in pattern.findall(text)[:8] if (a or b).strip()]


def xmp_claims(xmp: bytes) -> list[Claim]:
    """Claims of an XMP packet, read with bounded regular expressions: no XML parser, so no entity expansion."""
    text = xmp.decode("utf-8", "replace")
    claims = []
    for value in _field_values(_XMP_SOURCE_TYPE, text)[:2]:
        term = source_type_name(value)
        claims.append(Claim(DIGITAL_SOURCE_TYPES.get(term, ""), f"xmp: DigitalSourceType {short(term)} (unsigned)"))
    for value in _field_values(_XMP_CREDIT, text)[:1]:
        kind = next((k for pattern, k in CREDIT_NOTES if pattern.search(value)), "")
        if kind:
            claims.append(Claim(kind, f"xmp: Credit {short(value)!r} (unsigned)"))
    for value in _field_values(_XMP_CREATOR_TOOL, text)[:1]:
        if GENERATOR_NAMES.search(value):
            claims.append(Claim(GENERATED, f"xmp: CreatorTool {short(value)!r} names a generator (unsigned)"))
    return claims


def _json_text(escaped: str) -> str:
    try:
        return json.loads(f'"{escaped}"')
    except ValueError:
        return escaped


def _comfy_detail(value: str) -> str:
    # a JSON string, escaped quotes and backslashes included (a checkpoint named `my \"best\" model` is whole)
    found = re.findall(r"\"(?:ckpt_name|unet_name)\"\s*:\s*\"((?:[^\"\\]|\\.){1,200})\"", value)
    checkpoints = sorted({_json_text(f) for f in found})[:3]
    return f"; checkpoint {', '.join(map(short, checkpoints))}" if checkpoints else ""


def text_claims(texts: list[tuple[str, str]]) -> list[Claim]:
    """Claims of PNG text chunks (generator front ends) and of their Software / Source / Comment values."""
    found: dict[str, list[str]] = {}
    extra = ""
    for key, value in texts:
        known = PNG_TEXT_KEYS.get(key)
        if known and known[1](value):
            found.setdefault(known[0], []).append(key)
            if key == "prompt":
                extra = _comfy_detail(value)
        elif key in ("Software", "Source", "Title") and GENERATOR_NAMES.search(value[:500]):
            found.setdefault(f"{key} {short(value, 60)!r} names a generator", []).append(key)
        elif key in ("Comment", "Description") and PARAMETER_TEXT.search(value[:MAX_TEXT_VALUE]):
            found.setdefault("generation parameters", []).append(key)
    claims = []
    for what, keys in found.items():
        chunks = ", ".join(sorted(set(map(short, keys))))
        claims.append(Claim(GENERATED, f"png text: {what} ({chunks}){extra if 'prompt' in keys else ''} (unsigned)"))
    return claims


def comment_claims(comments: list[str]) -> list[Claim]:
    return [Claim(GENERATED, "jpeg comment: generation parameters (unsigned)")
            for c in comments[:4] if PARAMETER_TEXT.search(c)][:1]


def _exif_text(value) -> str:
    if isinstance(value, bytes):
        # UserComment: an 8-byte character-code prefix, then the text (UNICODE is UTF-16, big- or little-endian)
        head, body = value[:8], value[8:8 + 2 * MAX_TEXT_VALUE]
        if head.startswith(b"UNICODE"):
            text = body.decode("utf-16-be" if body[:1] == b"\x00" else "utf-16-le", "replace")
        else:
            text = (body if head.rstrip(b"\x00 ") in (b"ASCII", b"") else value[:MAX_TEXT_VALUE]).decode(
                "utf-8", "replace")
        return text.replace("\x00", "")
    return str(value)[:MAX_TEXT_VALUE] if value is not None else ""


def exif_claims(image: Image.Image) -> list[Claim]:
    """Claims of EXIF: Software naming a generator, parameter text in ImageDescription or UserComment, and the
    camera make and model as capture context."""
    try:
        exif = image.getexif()
        fields = {name: _exif_text(exif.get(tag)) for tag, name in EXIF_TAGS.items() if exif.get(tag) is not None}
        comment = _exif_text(exif.get_ifd(EXIF_IFD).get(USER_COMMENT))
    except Exception:  # EXIF is attacker-controlled; a broken block is no claim
        return []
    claims = []
    software = fields.get("Software", "")
    if GENERATOR_NAMES.search(software[:500]):
        claims.append(Claim(GENERATED, f"exif: Software {short(software, 60)!r} names a generator (unsigned)"))
    for name, text in (("ImageDescription", fields.get("ImageDescription", "")), ("UserComment", comment)):
        if PARAMETER_TEXT.search(text):
            claims.append(Claim(GENERATED, f"exif: {name} holds generation parameters (unsigned)"))
    make, model = fields.get("Make", "").strip(), fields.get("Model", "").strip()
    if make.startswith("workflow:") or model.startswith("prompt:"):
        # ComfyUI's WebP and animated savers put the graph where a camera's make and model go
        return claims + [Claim(GENERATED, "exif: ComfyUI generation graph in Make / Model (unsigned)")]
    camera = " ".join(filter(None, (make, model)))
    if camera:
        claims.append(Claim(CAPTURED, f"exif: camera {short(camera, 60)} (unsigned: context only)"))
    return claims


def metadata_claims(embedded: Embedded, image: Image.Image) -> list[Claim]:
    xmp = embedded.xmp or _pillow_xmp(image)
    return (xmp_claims(xmp) if xmp else []) + text_claims(embedded.texts) + comment_claims(embedded.comments) \
        + exif_claims(image)


def _pillow_xmp(image: Image.Image) -> bytes:
    """The XMP packet Pillow found where no container walk did (TIFF tag 700, AVIF/HEIF items)."""
    value = image.info.get("xmp")
    if value is None and hasattr(image, "tag_v2"):
        value = image.tag_v2.get(700)
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    return bytes(value[:1024 * 1024]) if isinstance(value, (bytes, bytearray)) else b""
