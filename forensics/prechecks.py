"""Size checks that must run before a Pillow plugin decodes anything. Pillow's ICO plugin decodes the largest
embedded image inside Image.open itself, before gscan can look at the size it reports: a 2.6 MB icon holding a
900-megapixel PNG cost 3.7 GB there. The icon directory and each entry's own header say how large the entries
are, so they are read first."""

from __future__ import annotations

import struct

_PNG = b"\x89PNG\r\n\x1a\n"


def icon_entry_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of each image an ICO or CUR file holds, from the embedded PNG's IHDR or the BMP's info
    header (whose height counts the AND mask too); entries that cannot be read are left out (Pillow refuses them)."""
    if len(data) < 6:
        return []
    count = struct.unpack("<H", data[4:6])[0]
    sizes = []
    for i in range(count):  # every entry: Pillow reads them all and opens the largest
        entry = data[6 + 16 * i:22 + 16 * i]
        if len(entry) < 16:
            break
        offset = struct.unpack("<I", entry[12:16])[0]
        head = data[offset:offset + 32]
        if head.startswith(_PNG) and len(head) >= 24:
            sizes.append(struct.unpack(">II", head[16:24]))
        elif len(head) >= 12:
            width, height = struct.unpack("<ii", head[4:12])
            sizes.append((abs(width), abs(height) // 2))
        sizes.append((entry[0] or 256, entry[1] or 256))  # what the directory itself claims
    return sizes


def icon_problem(data: bytes, max_pixels: int) -> str | None:
    """Why an icon must not be opened (an entry larger than --max-pixels), or None."""
    for width, height in icon_entry_sizes(data):
        if width * height > max_pixels:
            return (f"icon holds an image of {width}x{height} = {width * height:,} pixels, more than --max-pixels "
                    f"{max_pixels:,}: not decoded")
    return None


def icon_decoded_bytes(data: bytes) -> int:
    """What the largest entry of an icon takes once Pillow decodes it (RGBA)."""
    return max((w * h * 4 for w, h in icon_entry_sizes(data)), default=0)
