"""What is recognised as a statement of how an image was made: one table per kind of mark, to extend in place.
README's "Provenance" section lists the same table for users."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

GENERATED, EDITED, CAPTURED = "generated", "edited-with-ai", "captured"
# provenance values that make a row's label fake (metadata may add suspicion, never clear an image)
GENERATIVE = (GENERATED, EDITED)

# IPTC Digital Source Type vocabulary (cv.iptc.org/newscodes/digitalsourcetype), as C2PA actions and XMP use it.
# Types that are neither generative nor a capture (digitalArt, screenCapture, humanEdits, ...) are named in the
# detail and give no kind.
DIGITAL_SOURCE_TYPES = {
    "trainedAlgorithmicMedia": GENERATED,
    "algorithmicMedia": GENERATED,
    "compositeWithTrainedAlgorithmicMedia": EDITED,
    "compositeSynthetic": EDITED,
    "digitalCapture": CAPTURED,
    "computationalCapture": CAPTURED,
    "compositeCapture": CAPTURED,
    "negativeFilm": CAPTURED,
    "positiveFilm": CAPTURED,
}


def source_type_name(value: str) -> str:
    """The vocabulary term of a Digital Source Type URI (http or https, with or without a trailing slash)."""
    return value.strip().rstrip("/").rsplit("/", 1)[-1][:80]


# PNG text chunk keys that generator front ends write, with a test on the value (so that an unrelated tool's
# chunk of the same name is not taken for one) and the name shown in the detail.
def _looks_like_parameters(value: str) -> bool:
    return bool(re.search(r"Steps:\s*\d|Sampler:|Negative prompt:|\"(prompt|seed|sampler|steps)\"", value[:65536]))


def _is_json(value: str) -> bool:
    return value.lstrip()[:1] in ("{", "[")


PNG_TEXT_KEYS = {
    "parameters": ("AUTOMATIC1111 / Forge / Fooocus generation parameters", _looks_like_parameters),
    "prompt": ("ComfyUI generation graph", _is_json),
    "workflow": ("ComfyUI generation graph", _is_json),
    "Dream": ("InvokeAI (Dream) command", lambda v: bool(v.strip())),
    "sd-metadata": ("InvokeAI sd-metadata", _is_json),
    "invokeai_metadata": ("InvokeAI metadata", _is_json),
    "invokeai_graph": ("InvokeAI metadata", _is_json),
    "fooocus_scheme": ("Fooocus metadata scheme", lambda v: bool(v.strip())),
}

# Names of generators and generator front ends, matched in fields that name the software that made a file
# (EXIF Software, XMP CreatorTool, PNG Software/Source). Word-bounded and specific: "Imagen" alone is Spanish
# for "image", so Google's model is matched only as "Google Imagen".
GENERATOR_NAMES = re.compile(
    r"\b(NovelAI|Midjourney|DALL[\u00b7\-. ]?E|Stable[ -]?Diffusion|SDXL|ComfyUI|AUTOMATIC1111|InvokeAI|Fooocus|"
    r"Draw Things|Adobe Firefly|Google Imagen|Gemini|Leonardo\.?Ai|Ideogram|Bing Image Creator|DreamStudio|"
    r"NightCafe|Craiyon|FLUX\.1|Made with Google AI|Imagined with AI)\b", re.IGNORECASE)
# A1111-style parameter text, written by many tools into EXIF UserComment, ImageDescription or a comment
PARAMETER_TEXT = re.compile(r"Steps:\s*\d+.{0,200}?\b(Sampler|CFG scale|Seed):", re.DOTALL)
# Credit-line notes that tools write into XMP photoshop:Credit or IPTC credit fields
CREDIT_NOTES = (
    (re.compile(r"\bEdited with (Google )?AI\b", re.IGNORECASE), EDITED),
    (re.compile(r"\b(Made|Created|Generated|Imagined) (with|by) (Google )?AI\b|\bAI[- ]generated\b",
                re.IGNORECASE), GENERATED),
)


# Invisible watermarks (forensics/provenance/watermarks.py reads them): the marks open generators' reference code
# embeds with invisible-watermark's dwtDct method. A mark counts when at least min_matching of its bits agree;
# the threshold is the smallest count whose chance on an unmarked image (each bit a fair coin: binomial tail) is
# below MARK_FALSE_CLAIM shared among every mark of the table (a union bound), so that a real photo is falsely
# claimed less than once in a million. docs/WATERMARKS.md gives the measured agreement on real photos.
MARK_FALSE_CLAIM = 1e-6


def _bytes_bits(text: bytes) -> tuple[int, ...]:
    return tuple((byte >> (7 - i)) & 1 for byte in text for i in range(8))


def _int_bits(value: int) -> tuple[int, ...]:
    # the reference scripts write bin(value)[2:], which drops leading zeros: the mark is as long as that string
    return tuple(int(bit) for bit in bin(value)[2:])


def binomial_tail(k: int, n: int) -> float:
    """P(at least k of n fair coin flips come up as the mark's bit): the chance of a false claim of k bits."""
    from math import comb
    return sum(comb(n, i) for i in range(k, n + 1)) / 2 ** n


@dataclass(frozen=True)
class Watermark:
    name: str
    generator: str  # who embeds it, and where that is written
    bits: tuple[int, ...]

    @property
    def min_matching(self) -> int:
        budget = MARK_FALSE_CLAIM / len(WATERMARKS)
        return next(k for k in range(len(self.bits) // 2, len(self.bits) + 1)
                    if binomial_tail(k, len(self.bits)) < budget)


WATERMARKS = (
    Watermark("StableDiffusionV1", "Stable Diffusion 1.x, CompVis txt2img/img2img scripts",
              _bytes_bits(b"StableDiffusionV1")),
    Watermark("SDV2", "Stable Diffusion 2.x, Stability AI stablediffusion scripts", _bytes_bits(b"SDV2")),
    Watermark("SDXL", "Stable Diffusion XL, Stability AI generative-models and diffusers",
              _int_bits(0b101100111110110010010000011110111011000110011110)),
    # black-forest-labs/flux src/flux/util.py (commit 802fb47): 48 bits written, 46 embedded (bin() drops two 0s)
    Watermark("FLUX.1", "FLUX.1, Black Forest Labs reference code",
              _int_bits(0b001010101111111010000111100111001111010100101110)),
)
# What a row's scan_settings name of the table (--resume rescans rows read with another table)
WATERMARK_TABLE = hashlib.sha256(repr([(w.name, w.bits, w.min_matching) for w in WATERMARKS]).encode()).hexdigest()[:8]
