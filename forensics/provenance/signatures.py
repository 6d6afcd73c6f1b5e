"""What is recognised as a statement of how an image was made: one table per kind of mark, to extend in place.
README's "Provenance" section lists the same table for users."""

from __future__ import annotations

import re

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
