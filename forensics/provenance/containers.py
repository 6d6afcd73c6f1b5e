"""The metadata a file carries beside its pixels, pulled from the bytes already read: text chunks, XMP packets,
comments and where a C2PA manifest (JUMBF) sits. Walks the container's structure (PNG chunks, JPEG segments up to
the image data, RIFF chunks, ISO-BMFF boxes) instead of searching the whole file, and bounds everything it keeps:
a hostile file can make this stop early (and say so), never make it hold more than a few MiB."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

MAX_TEXT_VALUE = 256 * 1024  # characters of one text chunk examined (a 50 MB chunk costs no more than this)
MAX_TEXT_CHUNKS = 64  # text chunks kept; the rest are counted, not read
MAX_XMP = 1024 * 1024  # bytes of an XMP packet examined
MAX_STRUCTURES = 20_000  # chunks, segments or boxes walked before giving up on a file's metadata
MAX_MANIFEST = 16 * 1024 * 1024  # bytes of C2PA JUMBF handed to the validator; larger stores are not read
# ISO-BMFF 'uuid' box that holds a C2PA manifest store (C2PA specification, "Embedding manifests into BMFF")
C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


@dataclass
class Embedded:
    """What a container holds besides its pixels."""

    texts: list[tuple[str, str]] = field(default_factory=list)  # (key, value) text chunks, values cut to a bound
    xmp: bytes = b""
    comments: list[str] = field(default_factory=list)
    c2pa_bytes: int = 0  # size of the C2PA store found by structure; 0: none found that way
    c2pa_maybe: bool = False  # the format has no structure walked here, but the bytes name c2pa
    notes: list[str] = field(default_factory=list)

    @property
    def has_c2pa(self) -> bool:
        return self.c2pa_bytes > 0 or self.c2pa_maybe


def embedded_metadata(data: bytes, fmt: str) -> Embedded:
    """The metadata of a file of format fmt (Pillow's name), never raising for bad content."""
    walker = {"PNG": _png, "JPEG": _jpeg, "WEBP": _riff, "AVIF": _bmff, "HEIF": _bmff}.get(fmt)
    out = Embedded()
    try:
        if walker is not None:
            walker(data, out)
        elif fmt in ("TIFF", "GIF"):
            out.c2pa_maybe = b"c2pa" in data  # both carry C2PA; their manifests sit anywhere in the file
    except (struct.error, ValueError, IndexError) as exc:
        out.notes.append(f"metadata cut short ({exc})")
    return out


def _bounded_inflate(blob: bytes, limit: int) -> bytes:
    """At most `limit` bytes of a zlib stream: a decompression bomb stops at the bound."""
    return zlib.decompressobj().decompress(blob, limit)


def _add_text(out: Embedded, key: bytes, value: str) -> None:
    if len(out.texts) >= MAX_TEXT_CHUNKS:
        if not any(n.startswith("more than") for n in out.notes):
            out.notes.append(f"more than {MAX_TEXT_CHUNKS} text chunks: the rest not read for provenance")
        return
    out.texts.append((key.decode("latin-1")[:80], value[:MAX_TEXT_VALUE]))


def _png_text(tag: bytes, body: bytes, out: Embedded) -> None:
    key, _, rest = body.partition(b"\x00")
    try:
        if tag == b"tEXt":
            value = rest[:MAX_TEXT_VALUE].decode("latin-1")
        elif tag == b"zTXt":
            value = _bounded_inflate(rest[1:], MAX_TEXT_VALUE).decode("latin-1")
        else:  # iTXt: compression flag, method, language\0, translated keyword\0, text (UTF-8)
            compressed, rest = rest[:1] == b"\x01", rest[2:]
            rest = rest.split(b"\x00", 2)[-1]
            raw = _bounded_inflate(rest, MAX_TEXT_VALUE) if compressed else rest[:MAX_TEXT_VALUE]
            value = raw.decode("utf-8", "replace")
    except zlib.error:
        out.notes.append(f"PNG {tag.decode()} chunk {key[:40].decode('latin-1')!r} does not decompress")
        return
    if key == b"XML:com.adobe.xmp":
        out.xmp = out.xmp or value.encode("utf-8")[:MAX_XMP]
    else:
        _add_text(out, key, value)


Header = Callable[[bytes, int], "tuple[bytes, int, int, int] | None"]


def _structures(data: bytes, pos: int, header: Header, kind: str, out: Embedded) -> Iterator[tuple[bytes, int, int]]:
    """(tag, body offset, body length) of each chunk or box from pos, at most MAX_STRUCTURES of them (the rest
    noted as not read). header(data, pos) reads one header: (tag, body offset, body length, next pos), or None to
    stop."""
    for _ in range(MAX_STRUCTURES):
        if pos + 8 > len(data):
            return
        parsed = header(data, pos)
        if parsed is None:
            return
        tag, start, length, pos = parsed
        yield tag, start, length
    out.notes.append(f"more than {MAX_STRUCTURES:,} {kind}: metadata after them not read")


def _png_header(data: bytes, pos: int) -> tuple[bytes, int, int, int]:
    length, tag = struct.unpack(">I4s", data[pos:pos + 8])
    return tag, pos + 8, length, pos + 12 + length


def _png(data: bytes, out: Embedded) -> None:
    for tag, start, length in _structures(data, 8, _png_header, "PNG chunks", out):
        if tag in (b"tEXt", b"zTXt", b"iTXt"):  # a bounded prefix: a 50 MB chunk is never copied
            _png_text(tag, data[start:start + min(length, MAX_TEXT_VALUE + 4096)], out)
        elif tag == b"caBX":
            out.c2pa_bytes += length
        elif tag == b"IEND":
            return


_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg(data: bytes, out: Embedded) -> None:
    pos = 2
    for _ in range(MAX_STRUCTURES):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # image data starts: metadata segments come before it
            return
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment.startswith(XMP_JPEG_HEADER) and not out.xmp:
            out.xmp = segment[len(XMP_JPEG_HEADER):][:MAX_XMP]
        elif marker == 0xEB and segment[:2] == b"JP":  # APP11: JUMBF, the C2PA store split over segments
            out.c2pa_bytes += len(segment) if b"c2pa" in segment or out.c2pa_bytes else 0
        elif marker == 0xFE:
            out.comments.append(segment[:MAX_TEXT_VALUE].decode("utf-8", "replace"))
        pos += 2 + length
    out.notes.append(f"more than {MAX_STRUCTURES:,} JPEG segments: metadata after them not read")


def _riff_header(data: bytes, pos: int) -> tuple[bytes, int, int, int]:
    length = struct.unpack("<I", data[pos + 4:pos + 8])[0]
    return data[pos:pos + 4], pos + 8, length, pos + 8 + length + (length & 1)


def _riff(data: bytes, out: Embedded) -> None:
    for tag, start, length in _structures(data, 12, _riff_header, "RIFF chunks", out):
        if tag == b"XMP " and not out.xmp:
            out.xmp = data[start:start + min(length, MAX_XMP)]
        elif tag == b"C2PA":
            out.c2pa_bytes += length


def _bmff(data: bytes, out: Embedded) -> None:
    def header(data: bytes, pos: int) -> tuple[bytes, int, int, int] | None:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        start = pos + 8
        if size == 1:
            size, start = struct.unpack(">Q", data[pos + 8:pos + 16])[0], pos + 16
        elif size == 0:
            size = len(data) - pos
        if size < start - pos:
            out.notes.append("ISO-BMFF box with an impossible size: metadata after it not read")
            return None
        return kind, start, size - (start - pos), pos + size

    for kind, start, length in _structures(data, 0, header, "ISO-BMFF boxes", out):
        if kind == b"uuid" and data[start:start + 16] == C2PA_BMFF_UUID:
            out.c2pa_bytes += length
