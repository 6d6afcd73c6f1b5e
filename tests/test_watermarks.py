"""Invisible watermarks: the numpy reader agrees bit for bit with the invisible-watermark library's own decoder,
finds the marks its encoder embeds at every size the library accepts, and a marked file scanned through the CLI
becomes a fake row with the mark named; --provenance off and unmarked images claim nothing."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from forensics.provenance import read_watermarks
from forensics.provenance.signatures import MARK_FALSE_CLAIM, WATERMARKS, binomial_tail
from forensics.provenance.watermarks import MAX_READ_PIXELS, MIN_PIXELS, decode_bits, find_marks, u_plane

imwatermark = pytest.importorskip("imwatermark", reason="the reference library comes with the dev extra")
cv2 = pytest.importorskip("cv2")

# sizes the library accepts: odd, not multiples of 4 or 8, narrow strips, and larger than the band the scan reads
SIZES = [(256, 256), (257, 263), (301, 999), (256, 1500), (1030, 260), (512, 512), (384, 640), (999, 777)]
MARK = {m.name: m for m in WATERMARKS}


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour fields with grain: the kind of content the reference encoder sees in a generated image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = [128 + 40 * np.sin(x / (20 + 13 * c) + y / (31 + 7 * c) + c) for c in range(3)]
    pixels = np.stack(base, axis=2) + rng.normal(0, 25, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def embed(rgb: np.ndarray, mark) -> np.ndarray:
    """The library's encoder on the image's BGR twin, as the reference Stable Diffusion scripts call it."""
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bits", list(mark.bits))
    return np.ascontiguousarray(encoder.encode(np.ascontiguousarray(rgb[..., ::-1]), "dwtDct")[..., ::-1])


def reference_bits(rgb: np.ndarray, n_bits: int) -> np.ndarray:
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    return np.asarray(imwatermark.WatermarkDecoder("bits", n_bits).decode(bgr, "dwtDct"), dtype=bool)


def test_u_plane_is_opencvs_conversion_for_every_colour():
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(4096, 4096, 3)
    expected = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2YUV)[..., 1]
    np.testing.assert_array_equal(u_plane(rgb), expected)


@pytest.mark.parametrize("height,width", SIZES)
def test_bits_agree_with_the_reference_decoder(height, width):
    plain = photo_like(height, width, seed=height * width)
    noise = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    marked = embed(plain, MARK["StableDiffusionV1"])
    for image in (plain, noise, marked):
        for n_bits in sorted({len(m.bits) for m in WATERMARKS} | {8}):
            np.testing.assert_array_equal(decode_bits(image, n_bits), reference_bits(image, n_bits))


@pytest.mark.parametrize("height,width", SIZES)
def test_every_embedded_mark_is_found(height, width):
    plain = photo_like(height, width, seed=7)
    for mark in WATERMARKS:
        found = find_marks(embed(plain, mark), WATERMARKS)
        assert [m.mark for m in found] == [mark.name], (mark.name, found)
        assert found[0].matching >= mark.min_matching
    assert find_marks(plain, WATERMARKS) == []


def test_the_scan_reads_a_bounded_band():
    # a 2048 x 1024 image is read on its top 128 rows only, and the mark is still found with every bit
    marked = embed(photo_like(2048, 1024, seed=3), MARK["SDXL"])
    full = decode_bits(marked, 48)
    band = decode_bits(marked, 48, max_pixels=MAX_READ_PIXELS)
    np.testing.assert_array_equal(band, np.asarray(MARK["SDXL"].bits, bool))
    np.testing.assert_array_equal(full, band)


def test_thresholds_keep_a_false_claim_below_one_in_a_million():
    budget = MARK_FALSE_CLAIM / len(WATERMARKS)
    for mark in WATERMARKS:
        n, k = len(mark.bits), mark.min_matching
        assert binomial_tail(k, n) < budget <= binomial_tail(k - 1, n), mark.name
        assert binomial_tail(k, n) == pytest.approx(sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)
    # the marks' lengths as their reference code writes them
    assert [len(m.bits) for m in WATERMARKS] == [136, 32, 48, 46]


def test_too_small_images_claim_nothing():
    small = embed(photo_like(256, 256, seed=1), MARK["SDV2"])[:255]
    assert small.shape[0] * small.shape[1] < MIN_PIXELS
    assert read_watermarks(small) == []
    with pytest.raises(ValueError, match="too small"):
        decode_bits(small, 32)


@pytest.fixture(scope="module")
def marked_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("watermarks")
    Image.fromarray(embed(photo_like(512, 512, seed=11), MARK["StableDiffusionV1"])).save(folder / "sd1.png")
    Image.fromarray(embed(photo_like(600, 800, seed=12), MARK["FLUX.1"])).save(folder / "flux.png")
    Image.fromarray(photo_like(512, 512, seed=13)).save(folder / "plain.png")
    return folder


def _rows(report) -> dict[str, dict]:
    return {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(report.open(newline=""))}


def test_a_marked_file_is_a_fake_row_naming_its_mark(marked_folder, tmp_path):
    report = tmp_path / "out.csv"
    # --threshold 1.0: the model alone calls nothing fake, so a fake label here comes from the mark
    invoke("dir", marked_folder, "--report", report, "--threshold", 1.0, "-q")
    rows = _rows(report)
    assert rows["sd1.png"]["provenance"] == "generated" and rows["sd1.png"]["label"] == "fake"
    for name, mark in (("sd1.png", MARK["StableDiffusionV1"]), ("flux.png", MARK["FLUX.1"])):
        found = re.search(rf"invisible watermark: {re.escape(mark.name)}, (\d+) of {len(mark.bits)} bits",
                          rows[name]["provenance_detail"])
        assert found and int(found.group(1)) >= mark.min_matching, rows[name]["provenance_detail"]
    assert rows["plain.png"]["provenance"] == "" and rows["plain.png"]["label"] == "real"
    assert "watermarks=" in rows["plain.png"]["scan_settings"]


def test_provenance_off_reads_no_watermark(marked_folder, tmp_path):
    report = tmp_path / "off.csv"
    invoke("dir", marked_folder, "--report", report, "--threshold", 1.0, "--provenance", "off", "-q")
    rows = _rows(report)
    assert all(r["provenance"] == "" and r["label"] == "real" for r in rows.values())


def test_a_recompressed_mark_is_not_claimed_falsely(marked_folder):
    # JPEG q75 wipes the dwtDct mark (docs/WATERMARKS.md): what is left must stay under every threshold
    import io
    buf = io.BytesIO()
    Image.open(marked_folder / "sd1.png").save(buf, "JPEG", quality=75)
    recompressed = np.asarray(Image.open(buf).convert("RGB"))
    agree = int((decode_bits(recompressed, 136) == np.asarray(MARK["StableDiffusionV1"].bits, bool)).sum())
    assert agree < MARK["StableDiffusionV1"].min_matching


def test_bits_agree_with_the_reference_at_any_accepted_size():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(256, 900), st.integers(73, 1100), st.integers(0, 2**16))
    def check(height, width, seed):
        if height * width < MIN_PIXELS:
            width = -(-MIN_PIXELS // height)
        image = embed(photo_like(height, width, seed), WATERMARKS[seed % len(WATERMARKS)])
        n_bits = len(WATERMARKS[seed % len(WATERMARKS)].bits)
        np.testing.assert_array_equal(decode_bits(image, n_bits), reference_bits(image, n_bits))

    check()
