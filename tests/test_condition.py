"""How an image reached the scanner, read from its file, and the card's figures for that condition on each row."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.condition import AS_STORED, LAUNDERED, RECOMPRESSED, jpeg_quality
from forensics.images import decode_bytes
from forensics.report import read_rows
from forensics.synthetic import natural_image


def encoded(fmt: str, size: int, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(natural_image(np.random.default_rng(size), size, size)).save(buf, fmt, **save)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_the_jpeg_quality_is_read_from_the_quantisation_tables(quality):
    image = Image.open(io.BytesIO(encoded("JPEG", 96, quality=quality)))
    assert jpeg_quality(image.quantization) == quality


def _camera_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    return encoded("JPEG", 600, quality=80, exif=exif.tobytes())


@pytest.mark.parametrize("data,kind,shown", [
    (encoded("PNG", 300), AS_STORED, "PNG lossless, 300x300"),
    (encoded("JPEG", 300, quality=95), AS_STORED, "JPEG q~95, 300x300, no camera EXIF"),
    (_camera_jpeg(), AS_STORED, "JPEG q~80, 600x600, camera EXIF"),
    (encoded("JPEG", 800, quality=75), RECOMPRESSED, "JPEG q~75, 800x800, no camera EXIF"),
    (encoded("JPEG", 300, quality=75), LAUNDERED, "JPEG q~75, 300x300, no camera EXIF"),
    (encoded("WEBP", 300, lossless=True), AS_STORED, "WEBP lossless, 300x300"),
    (encoded("WEBP", 300, quality=80), LAUNDERED, "WEBP (lossy), 300x300, no camera EXIF"),
])
def test_the_condition_is_what_the_file_shows(data, kind, shown):
    decoded = decode_bytes(data, Path("x"))
    assert decoded.condition.kind == kind and decoded.condition.detail == shown


def test_rows_quote_the_cards_figures_and_a_weak_real_says_so(tiny_onnx: Path, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "small.jpg").write_bytes(encoded("JPEG", 300, quality=75))
    (folder / "lossless.png").write_bytes(encoded("PNG", 300))
    # the tiny model's card with measured conditions: strong as stored, weak laundered
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    import onnx

    proto = onnx.load(model)
    props = {p.key: p.value for p in proto.metadata_props}
    card = json.loads(props["gscan_card"])
    card["metrics"]["conditions"] = {"as stored": {"unseen_caught": 0.9, "worst_real_fpr": 0.01},
                                     "laundered": {"unseen_caught": 0.08, "worst_real_fpr": 0.19}}
    onnx.helper.set_model_props(proto, {**props, "gscan_card": json.dumps(card)})
    onnx.save(proto, model)
    report = tmp_path / "r.jsonl"
    invoke("dir", folder, "--model", model, "--report", report, "--threshold", 1.0, "-q")  # every row real
    rows = {Path(r["path"]).name: r for r in read_rows(report)}
    assert rows["small.jpg"]["condition"] == ("laundered (JPEG q~75, 300x300, no camera EXIF); card: 8% of unseen "
                                              "generators' images caught, up to 19% of a real source called fake")
    assert "could not tell: laundered" in rows["small.jpg"]["notes"]
    assert rows["lossless.png"]["condition"].startswith("as stored (PNG lossless, 300x300); card: 90% of unseen")
    assert "could not tell" not in (rows["lossless.png"]["notes"] or "")


def test_the_shipped_card_states_its_figures_per_condition():
    card = json.loads((Path(__file__).resolve().parents[1] / "exported_models" /
                       "gscan-binary-effnetlite0.int8.json").read_text())
    conditions = card["metrics"]["conditions"]
    for kind in (AS_STORED, RECOMPRESSED, LAUNDERED):
        assert 0 <= conditions[kind]["unseen_caught"] <= 1 and 0 <= conditions[kind]["worst_real_fpr"] <= 1
        assert conditions[kind]["fakes"] > 1000 and conditions[kind]["reals"] > 1000
