"""gscan synth (aligned twins from a decoder bank) and paired training on (real, twin)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_ARCH, invoke
from forensics.synthetic import natural_image, save
from forensics.card import TilingPolicy
from forensics.training.data import Augment, Pair, PairedCropDataset, Sample, collate_pairs
from forensics.training.synth import DEFAULT_BANK, TwinAutoencoder, psnr, reconstruct


@pytest.fixture(scope="module")
def reals(tmp_path_factory):
    """real/<source>/ with PNG and JPEG files of odd sizes."""
    root = tmp_path_factory.mktemp("reals")
    rng = np.random.default_rng(5)
    for i in range(6):
        save(natural_image(rng, 72, 88), root / "real" / "camera" / f"c{i}.png")
        save(natural_image(rng, 61, 70), root / "real" / "phone" / f"p{i}.jpg", fmt="JPEG", quality=83)
    return root


@pytest.fixture(scope="module")
def twins(reals, tmp_path_factory):
    out = tmp_path_factory.mktemp("twins") / "t"
    invoke("synth", reals / "real", "--out", out, "--steps", 15, "--train-images", 8,
           "--decoder", "nearest-x2", "--decoder", "transposed-x4", "--decoder", "stylegan2-x2")
    return out


def test_every_real_gets_a_twin_of_its_size_in_the_same_source(reals, twins):
    manifest = json.loads((twins / "synth.json").read_text())
    assert len(manifest["twins"]) == 12
    for t in manifest["twins"]:
        real = Image.open(reals / "real" / t["real"])
        twin = Image.open(twins / t["twin"])
        assert twin.size == real.size
        assert t["twin"].split("/")[0] == t["real"].split("/")[0]  # the source folder is kept
        # the recorded PSNR is the stored twin's against the real's pixels
        assert t["psnr_db"] == pytest.approx(psnr(np.asarray(twin.convert("RGB")), np.asarray(real.convert("RGB"))),
                                             abs=0.01)
    # a JPEG real's twin is a JPEG with the real's own quantisation tables; a PNG real's twin is lossless
    jpeg = next(t for t in manifest["twins"] if t["real"].endswith(".jpg"))
    assert Image.open(twins / jpeg["twin"]).quantization == Image.open(reals / "real" / jpeg["real"]).quantization
    png = next(t for t in manifest["twins"] if t["real"].endswith(".png"))
    assert Image.open(twins / png["twin"]).format == "PNG"
    # every decoder made twins in both sources, and its record says how it was trained and what it reached
    used = {(t["decoder"], t["real"].split("/")[0]) for t in manifest["twins"]}
    assert used == {(d, s) for d in ("nearest-x2", "transposed-x4", "stylegan2-x2") for s in ("camera", "phone")}
    for d in manifest["decoders"]:
        assert d["steps"] == 15 and d["twins"] == 4 and 5 < d["twin_psnr_db"] < 60
        assert (twins / "decoders" / f"{d['name']}.safetensors").is_file()


def test_a_saved_bank_makes_the_same_twins_again(reals, twins, tmp_path):
    invoke("synth", reals / "real", "--out", tmp_path / "again", "--bank", twins)
    first = json.loads((twins / "synth.json").read_text())["twins"]
    again = json.loads((tmp_path / "again" / "synth.json").read_text())["twins"]
    assert [t["decoder"] for t in again] == [t["decoder"] for t in first]
    for t in first:
        assert np.array_equal(np.asarray(Image.open(twins / t["twin"])),
                              np.asarray(Image.open(tmp_path / "again" / t["twin"])))


def test_twins_keep_the_real_mean_colour_and_size_at_every_factor():
    rng = np.random.default_rng(0)
    pixels = natural_image(rng, 45, 51)  # not a multiple of 8: padded, then cut back
    for spec in DEFAULT_BANK:
        twin = reconstruct(TwinAutoencoder(spec).eval(), pixels, seed=0)
        assert twin.shape == pixels.shape, spec.name
        assert np.abs(twin.reshape(-1, 3).mean(0) - pixels.reshape(-1, 3).mean(0)).max() < 3, spec.name


def test_upsampling_traces_differ_by_family():
    """An untrained decoder of each family leaves its upsampling's own spectrum: nearest repeats pixels in 2x2
    blocks (a period-2 pattern), bilinear does not."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    nearest = torch.nn.Upsample(scale_factor=2, mode="nearest")(x)
    assert torch.equal(nearest[..., ::2, ::2], nearest[..., 1::2, 1::2])
    from forensics.training.decoders import _fir_up
    up = _fir_up(x)
    assert up.shape == (1, 8, 32, 32)
    flat = _fir_up(torch.full((1, 2, 8, 8), 0.7))
    assert torch.allclose(flat[..., 2:-2, 2:-2], torch.tensor(0.7))  # [1,3,3,1] with gain 4 keeps the level


def test_a_pair_gets_the_same_crop_flip_blur_and_jpeg(tmp_path):
    rng = np.random.default_rng(1)
    path = save(natural_image(rng, 120, 136), tmp_path / "a.png")
    same = save(np.asarray(Image.open(path)), tmp_path / "b.png")
    augment = Augment(blur_prob=0.5, jpeg_prob=0.7, jpeg_quality=(50, 95), double_jpeg_prob=0.5)
    data = PairedCropDataset([Pair(Sample(path, 0, "real/x"), Sample(same, 1, "twin/x"), True)] * 12,
                             TilingPolicy(crop=64), (0.5,) * 3, (0.5,) * 3, augment, seed=3)
    x, y = collate_pairs([data[i] for i in range(12)])
    assert x.shape == (24, 3, 64, 64) and y.tolist() == [0, 1] * 12
    assert torch.equal(x[0::2], x[1::2])  # identical files, identical draws: identical tiles
    assert len({x[i].sum().item() for i in range(0, 24, 2)}) > 6  # while the draws vary from pair to pair
    softened = PairedCropDataset(data.pairs, data.policy, data.mean, data.std, augment, seed=3, soften_real_prob=1.0)
    xs, _ = collate_pairs([softened[i] for i in range(12)])
    assert torch.equal(xs[1::2], x[1::2])  # the fake's tiles are unchanged ...
    assert not torch.equal(xs[0::2], x[0::2])  # ... and only the real was softened


def test_train_on_twins_alone(reals, twins, tmp_path):
    """--hold-out fake keeps every real generator output out; the twins are the fakes, trained in pairs."""
    rng = np.random.default_rng(9)
    for i in range(3):
        save(natural_image(rng, 64, 64), reals / "fake" / "gan" / f"g{i}.png")
    run = tmp_path / "run"
    invoke("train", reals, "--twins", twins, "--hold-out", "fake", "--out", run, "--arch", TINY_ARCH,
           "--crop", 32, "--epochs", 1, "--batch-size", 8, "--workers", 0, "--max-tiles", 2,
           "--soften-real-prob", 0.5)
    card = json.loads((run / "card.json").read_text())
    per_source = card["training"]["train"]["per_source"]
    assert set(per_source) == {"real/camera", "real/phone", "twin/camera", "twin/phone"}  # no fake/gan
    assert card["training"]["config"]["twins"] == [str(twins)]


def test_synth_refuses_an_unknown_decoder(reals, tmp_path):
    result = invoke("synth", reals / "real", "--out", tmp_path / "x", "--decoder", "nope", expect=2)
    assert "unknown decoder" in result.output


def test_pairs_aligned_and_unaligned_are_drawn_equally_often(tmp_path):
    from forensics.training.data import make_pairs, pair_sampler

    reals = [Sample(tmp_path / f"r{i}.png", 0, "real/a" if i < 8 else "real/b") for i in range(10)]
    twins = [Sample(tmp_path / f"t{i}.png", 1, r.source.replace("real/", "twin/")) for i, r in enumerate(reals)]
    fakes = [Sample(tmp_path / f"f{i}.png", 1, "fake/gan" if i < 30 else "fake/other") for i in range(33)]
    pairs = make_pairs(reals + fakes, list(zip(reals, twins)), seed=0)
    assert len(pairs) == 43 and sum(p.aligned for p in pairs) == 10
    assert all(p.real.label == 0 and p.fake.label == 1 for p in pairs)
    drawn = [pairs[i] for i in pair_sampler(pairs, seed=1, num_samples=20000)]
    share = {g: sum(p.group == g for p in drawn) / len(drawn) for g in {p.group for p in pairs}}
    # two kinds, half each; within a kind every group alike, however many images it has
    for group in ("aligned:real/a", "aligned:real/b", "unaligned:fake/gan", "unaligned:fake/other"):
        assert share[group] == pytest.approx(0.25, abs=0.02), group


def test_pairs_by_size_give_each_untwinned_fake_a_real_of_about_its_size(tmp_path):
    from forensics.training.data import make_pairs

    def sample(name, side, label, source):
        Image.new("RGB", (side + 7, side), (90, 90, 90)).save(tmp_path / name)  # short side = side
        return Sample(tmp_path / name, label, source)

    reals = [sample(f"t{i}.png", 128, 0, "real/thumb") for i in range(30)] + \
            [sample(f"h{i}.png", 1024, 0, "real/hires") for i in range(3)]
    twins = [sample(f"w{i}.png", 128, 1, "twin/thumb") for i in range(3)]
    fakes = [sample(f"f{i}.png", 900, 1, "fake/big") for i in range(12)] + [sample("s.png", 3000, 1, "fake/huge")]
    aligned = list(zip(reals[:3], twins))
    pairs = make_pairs(reals + fakes, aligned, seed=0, by_size=True)
    partner = {p.fake.path.name: p.real.source for p in pairs if not p.aligned}
    assert [partner[f"f{i}.png"] for i in range(12)] == ["real/hires"] * 12
    assert partner["s.png"] in {"real/thumb", "real/hires"}  # no real within 2x: drawn from all of them
    unmatched = make_pairs(reals + fakes, aligned, seed=0)
    assert sum(p.real.source == "real/thumb" for p in unmatched if not p.aligned) > 6  # 30 of 33 reals are thumbs


def test_a_held_out_source_need_not_be_in_validation(tmp_path):
    from forensics.training.data import exclude_sources

    samples = [Sample(tmp_path / "a.png", 0, "real/a"), Sample(tmp_path / "b.png", 1, "fake/b")]
    with pytest.raises(Exception, match="no such source"):
        exclude_sources(samples, ["fake/elsewhere"])
    kept, held = exclude_sources(samples, ["fake/elsewhere", "fake/b"], strict=False)
    assert kept == samples[:1] and held == samples[1:]


def test_without_a_val_folder_each_twin_lands_on_its_real_side(reals, twins):
    from forensics.training.data import TWIN, discover
    from forensics.training.train import TrainConfig, _split_with_twins, _with_twins

    samples, _ = discover(reals, "binary")
    samples, aligned = _with_twins(samples, (twins,))
    train, val = _split_with_twins(samples, aligned, TrainConfig(data_dir=reals, out=reals / "unused"))
    assert len(train) + len(val) == len(samples)
    for real, twin in aligned:
        assert (real in train) == (twin in train) and (real in val) == (twin in val)
    assert any(s.source.startswith(TWIN + "/") for s in val)


def test_a_rerun_keeps_the_decoders_an_interrupted_run_trained(reals, tmp_path):
    args = ("synth", reals / "real", "--out", tmp_path / "t", "--steps", 15, "--train-images", 8,
            "--decoder", "nearest-x2", "--decoder", "transposed-x4")
    first = invoke(*args).output
    assert "decoder 1/2 nearest-x2: training" in first and "about" in first  # an ETA for the one left
    (tmp_path / "t" / "decoders" / "transposed-x4.json").unlink()  # as if killed while training the second
    (tmp_path / "t" / "synth.json").unlink()
    again = invoke(*args).output
    assert "decoder 1/2 nearest-x2: kept from the earlier run" in again
    assert "decoder 2/2 transposed-x4: training" in again
    assert len(json.loads((tmp_path / "t" / "synth.json").read_text())["twins"]) == 12
    other = invoke("synth", reals / "real", "--out", tmp_path / "t", "--steps", 16, "--train-images", 8,
                   "--decoder", "nearest-x2").output
    assert "kept" not in other  # other settings: trained afresh
