"""Dataset pairing rules, synthetic haze and deterministic crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA as SHARED
from PIL import Image

from hazefree.data import (
    CropSampler,
    PairBank,
    find_depth_samples,
    find_pairs,
    load_pair,
    read_airlights,
    read_depth,
    split_unpaired,
    synthesize_haze,
    write_airlights,
)
from hazefree.physics import fit_haze_model

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not available")


def _img(path: Path, size=(24, 16), value: int | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.full((h, w, 3), value, np.uint8) if value is not None else rng.integers(0, 256, (h, w, 3), np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _names(pairset):
    return sorted((p.hazy.name, p.clear.name) for p in pairset.pairs)


class TestFindPairs:
    def test_same_name(self, tmp_path):
        for n in ("a.png", "b.png"):
            _img(tmp_path / "hazy" / n)
            _img(tmp_path / "clear" / n)
        assert _names(find_pairs(tmp_path)) == [("a.png", "a.png"), ("b.png", "b.png")]

    def test_reside_names(self, tmp_path):
        _img(tmp_path / "hazy" / "1410_3.png")
        _img(tmp_path / "hazy" / "1410_7.png")
        _img(tmp_path / "hazy" / "0001_0.8_0.2.jpg")
        _img(tmp_path / "GT" / "1410.png")
        _img(tmp_path / "GT" / "0001.png")
        assert _names(find_pairs(tmp_path)) == [
            ("0001_0.8_0.2.jpg", "0001.png"),
            ("1410_3.png", "1410.png"),
            ("1410_7.png", "1410.png"),
        ]

    def test_ohaze_and_nhhaze_names(self, tmp_path):
        _img(tmp_path / "hazy" / "35_outdoor_hazy.jpg")
        _img(tmp_path / "GT" / "35_outdoor_GT.jpg")
        _img(tmp_path / "hazy" / "01_hazy.png")
        _img(tmp_path / "GT" / "01_GT.png")
        assert _names(find_pairs(tmp_path)) == [("01_hazy.png", "01_GT.png"), ("35_outdoor_hazy.jpg", "35_outdoor_GT.jpg")]

    def test_flat_ntire_folder(self, tmp_path):
        _img(tmp_path / "05_indoor_hazy.jpg")
        _img(tmp_path / "05_indoor_GT.jpg")
        _img(tmp_path / "51_hazy.png")
        _img(tmp_path / "51_GT.png")
        assert _names(find_pairs(tmp_path)) == [("05_indoor_hazy.jpg", "05_indoor_GT.jpg"), ("51_hazy.png", "51_GT.png")]

    def test_rice_cloud_label(self, tmp_path):
        _img(tmp_path / "cloud" / "7.png")
        _img(tmp_path / "label" / "7.png")
        assert _names(find_pairs(tmp_path)) == [("7.png", "7.png")]

    def test_user_pattern(self, tmp_path):
        _img(tmp_path / "hazy" / "scene12-fog-heavy.png")
        _img(tmp_path / "clear" / "scene12.png")
        with pytest.raises(ValueError, match="no hazy/clear pairs"):
            find_pairs(tmp_path, warn=False)
        got = find_pairs(tmp_path, pattern=r"(?P<key>scene\d+)-.*")
        assert _names(got) == [("scene12-fog-heavy.png", "scene12.png")]

    def test_unmatched_is_reported(self, tmp_path):
        _img(tmp_path / "hazy" / "a.png")
        _img(tmp_path / "hazy" / "orphan.png")
        _img(tmp_path / "clear" / "a.png")
        with pytest.warns(UserWarning, match="1 hazy image.*orphan.png"):
            ps = find_pairs(tmp_path)
        assert [p.name for p in ps.unmatched] == ["orphan.png"]
        assert len(ps) == 1

    def test_no_pairs_message(self, tmp_path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(ValueError, match="no hazy/clear pairs found"):
            find_pairs(tmp_path / "empty")
        with pytest.raises(ValueError, match="not a folder"):
            find_pairs(tmp_path / "missing")

    def test_mismatched_sizes_centre_cropped(self, tmp_path):
        # official SOTS-indoor: GT 640x480 around a 620x460 hazy image (10 px border)
        gt = np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)
        (tmp_path / "clear").mkdir()
        (tmp_path / "hazy").mkdir()
        Image.fromarray(gt).save(tmp_path / "clear" / "1400.png")
        Image.fromarray(gt[5:-5, 5:-5]).save(tmp_path / "hazy" / "1400_1.png")
        pair = find_pairs(tmp_path).pairs[0]
        with pytest.warns(UserWarning, match="centre-cropped"):
            hazy, clear = load_pair(pair)
        assert hazy.shape == clear.shape == (1, 3, 38, 54)
        assert torch.equal(hazy, clear)

    @needs_shared
    def test_real_layouts(self):
        assert len(find_pairs(SHARED / "train" / "sots_indoor")) == 90
        assert len(find_pairs(SHARED / "train" / "rice1")) == 50
        assert len(find_pairs(SHARED / "sots_indoor")) == 10
        assert len(find_pairs(SHARED / "ohaze")) == 2
        assert len(find_pairs(SHARED / "sots_outdoor")) == 5

    @needs_shared
    def test_training_folders_pair_every_hazy_image(self):
        """Each train/ layout pairs every hazy image with the clear image of its scene (RESIDE
        ``<scene>_<level>`` and ``<scene>_<A>_<beta>`` names map to ``<scene>``; other sets share names)."""
        for folder in sorted((SHARED / "train").iterdir()):
            if not (folder / "hazy").is_dir() or not (folder / "clear").is_dir():
                continue  # clear + depth (middlebury_depth) or photos without ground truth (real_unpaired)
            found = find_pairs(folder, warn=False)
            n_hazy = len([p for p in (folder / "hazy").iterdir() if p.is_file()])
            assert len(found) == n_hazy, folder.name
            for pair in found.pairs:
                scene = pair.hazy.stem if pair.hazy.stem == pair.clear.stem else pair.hazy.stem.split("_")[0]
                assert pair.clear.stem == scene, (folder.name, pair.hazy.name, pair.clear.name)


class TestSyntheticHaze:
    def _depth_set(self, root: Path, bits: int) -> Path:
        _img(root / "clear" / "s.png", size=(20, 10))
        (root / "depth").mkdir(parents=True)
        x = np.tile(np.arange(20), (10, 1))
        if bits == 8:
            disp = (200 - 8 * x).astype(np.uint8)  # near on the left
            disp[0, 0] = 0  # unknown
            Image.fromarray(disp).save(root / "depth" / "s.png")
        else:
            import cv2

            depth = (500 + 100 * x).astype(np.uint16)
            depth[0, 0] = 0
            cv2.imwrite(str(root / "depth" / "s.png"), depth)
        return root

    @pytest.mark.parametrize("bits", [8, 16])
    def test_depth_is_relative_and_increasing(self, tmp_path, bits):
        sample = find_depth_samples(self._depth_set(tmp_path, bits))[0]
        assert sample.disparity == (bits == 8)
        d = read_depth(sample)[0, 0]
        assert d.shape == (10, 20)
        assert d.max().item() == pytest.approx(1.0)
        assert d[0, 0].item() == pytest.approx(1.0)  # unknown -> farthest
        row = d[5]
        assert torch.all(row[1:] >= row[:-1])

    def test_haze_follows_the_model(self):
        clear = torch.rand(1, 3, 8, 8)
        depth = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
        hazy, t = synthesize_haze(clear, depth, beta=1.5, airlight=(0.9, 0.9, 0.9))
        assert torch.allclose(hazy, clear * t + 0.9 * (1 - t), atol=1e-6)
        assert t[0, 0, 0, 0].item() == pytest.approx(1.0)
        assert t[0, 0, -1, -1].item() == pytest.approx(np.exp(-1.5), rel=1e-5)


class TestRealisticRenders:
    """Depth renders with tinted airlights and non-uniform density (stage 9's heavy haze)."""

    def _bank(self, root: Path, **kwargs) -> PairBank:
        TestSyntheticHaze()._depth_set(root, 16)
        return PairBank((), find_depth_samples(root), synthetic_per_sample=16, seed=3, **kwargs)

    def test_tint_spreads_the_channels_by_its_amount(self, tmp_path):
        grey = self._bank(tmp_path / "a", airlight_range=(0.8, 0.8))
        tinted = self._bank(tmp_path / "b", airlight_range=(0.8, 0.8), airlight_tint=0.5)
        spread = lambda bank: torch.stack([a.max() - a.min() for a in bank.airlights])  # noqa: E731
        assert spread(grey).max() <= 0.8 * 0.1 + 1e-6  # +-5 %: at most 10 % of the level apart
        assert spread(tinted).max() > 0.8 * 0.2 and spread(tinted).max() <= 0.8 * 0.5 + 1e-6

    def test_variation_makes_haze_denser_in_some_regions_than_depth_says(self, tmp_path):
        plain = self._bank(tmp_path / "a", beta_range=(2.0, 2.0))
        varied = self._bank(tmp_path / "b", beta_range=(2.0, 2.0), haze_variation=0.5)
        depth = read_depth(find_depth_samples(tmp_path / "a")[0])
        a = varied.airlights[0].view(1, 3, 1, 1)
        hazy, clear = varied.full(0)
        # recover t from the render: in the plain bank a function of depth alone, here not
        t = ((hazy - a) / (clear - a)).mean(1, keepdim=True)
        ok = ((clear - a).abs().min(1, keepdim=True).values > 0.2)
        beta = (-t.clamp(1e-3, 1).log() / depth.clamp_min(1e-3))[ok]
        assert beta.std() / beta.mean() > 0.05  # beta varies across the scene
        t_plain = ((plain.full(0)[0] - plain.airlights[0].view(1, 3, 1, 1)) / (clear - plain.airlights[0].view(1, 3, 1, 1)))
        beta_plain = (-t_plain.mean(1, keepdim=True).clamp(1e-3, 1).log() / depth.clamp_min(1e-3))[ok]
        assert beta_plain.std() / beta_plain.mean() < 0.05
        # off by default: the variation does not change the renders of a config without it
        again = self._bank(tmp_path / "c", beta_range=(2.0, 2.0))
        assert all(torch.equal(x, y) for x, y in zip(plain.hazy, again.hazy))


class TestRecordedAirlights:
    def test_a_folders_airlights_reach_the_bank_and_its_batches(self, tmp_path):
        for n in ("a.png", "b.png"):
            _img(tmp_path / "hazy" / n, seed=1)
            _img(tmp_path / "clear" / n, seed=2)
        write_airlights(tmp_path, {"a": [0.9, 0.8, 0.6]})
        bank = PairBank(find_pairs(tmp_path).pairs)
        a = dict(zip(bank.names, bank.airlights))
        torch.testing.assert_close(a["a"], torch.tensor([0.9, 0.8, 0.6]))
        assert a["b"].isnan().all()  # not recorded: unknown, as before
        batch = CropSampler(bank, [0], crop=8, batch_size=2, seed=0).batch(0)
        torch.testing.assert_close(batch["airlight"], torch.tensor([[0.9, 0.8, 0.6]] * 2))

    def test_a_bad_record_is_named(self, tmp_path):
        (tmp_path / "airlights.json").write_text('{"a": [0.9, 2.0, 0.5]}')
        with pytest.raises(ValueError, match="airlights.json.*bad: a"):
            read_airlights(tmp_path)
        (tmp_path / "airlights.json").write_text("[1, 2")
        with pytest.raises(ValueError, match="airlights.json"):
            read_airlights(tmp_path)
        assert read_airlights(tmp_path / "elsewhere") == {}


class TestSplitUnpaired:
    def test_holdout_is_seeded_disjoint_and_complete(self, tmp_path):
        for i in range(20):
            _img(tmp_path / "hazy" / f"p{i:02d}.jpg", seed=i)
        train, held = split_unpaired(tmp_path, 0.25, seed=0)
        assert len(held) == 5 and len(train) == 15 and not set(train) & set(held)
        assert sorted(train + held) == sorted((tmp_path / "hazy").iterdir())
        assert split_unpaired(tmp_path, 0.25, seed=0) == (train, held)
        assert split_unpaired(tmp_path, 0.25, seed=1)[1] != held

    def test_a_folder_without_photos_is_named(self, tmp_path):
        with pytest.raises(ValueError, match=str(tmp_path)):
            split_unpaired(tmp_path, 0.1)


class TestSampler:
    def _bank(self, tmp_path, n=3, size=(40, 30)):
        for i in range(n):
            _img(tmp_path / "hazy" / f"{i}.png", size=size, seed=i)
            _img(tmp_path / "clear" / f"{i}.png", size=size, seed=100 + i)
        return PairBank(find_pairs(tmp_path).pairs)

    def test_deterministic_by_step(self, tmp_path):
        bank = self._bank(tmp_path)
        s = CropSampler(bank, range(len(bank)), crop=16, batch_size=4, seed=3, scale_range=(0.6, 1.0))
        a, b, c = s.batch(5), s.batch(5), s.batch(6)
        assert torch.equal(a["hazy"], b["hazy"]) and torch.equal(a["clear"], b["clear"])
        assert not torch.equal(a["hazy"], c["hazy"])
        assert not torch.equal(s.batch(5, rank=1)["hazy"], a["hazy"])
        assert a["hazy"].shape == (4, 3, 16, 16)

    def test_pairs_stay_aligned(self, tmp_path):
        # hazy == clear: any misalignment between the two crops would show as a difference
        for i in range(2):
            p = _img(tmp_path / "hazy" / f"{i}.png", size=(50, 37), seed=i)
            (tmp_path / "clear").mkdir(exist_ok=True)
            (tmp_path / "clear" / p.name).write_bytes(p.read_bytes())
        bank = PairBank(find_pairs(tmp_path).pairs)
        s = CropSampler(bank, [0, 1], crop=24, batch_size=6, seed=0, scale_range=(0.5, 1.0))
        for step in range(4):
            b = s.batch(step)
            assert torch.equal(b["hazy"], b["clear"])

    def test_channel_shuffle_permutes_both_alike(self, tmp_path):
        bank = self._bank(tmp_path)
        # batch size 1: the permutation is drawn after the crop, so both samplers cut the same crop
        plain = CropSampler(bank, range(len(bank)), crop=16, batch_size=1, seed=3)
        shuffled = CropSampler(bank, range(len(bank)), crop=16, batch_size=1, seed=3, channel_shuffle=True)
        permuted = 0
        for step in range(12):
            a, b = plain.batch(step), shuffled.batch(step)
            perms = [p for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
                     if torch.equal(a["hazy"][:, list(p)], b["hazy"])]
            # one permutation, shared by the hazy and the clear crop
            assert len(perms) == 1 and torch.equal(a["clear"][:, list(perms[0])], b["clear"])
            permuted += perms[0] != (0, 1, 2)
        assert permuted > 0
        assert torch.equal(shuffled.batch(5)["hazy"], shuffled.batch(5)["hazy"])

    def test_balance_sources(self, tmp_path):
        for i in range(9):  # a large source and a small one
            _img(tmp_path / "big" / "hazy" / f"{i}.png", seed=i)
            _img(tmp_path / "big" / "clear" / f"{i}.png", seed=i)
        _img(tmp_path / "small" / "hazy" / "s.png", value=7)
        _img(tmp_path / "small" / "clear" / "s.png", value=7)
        bank = PairBank(find_pairs(tmp_path / "big").pairs + find_pairs(tmp_path / "small").pairs)
        assert bank.sources == [str(tmp_path / "big")] * 9 + [str(tmp_path / "small")]

        def small_share(balance: bool) -> float:
            s = CropSampler(bank, range(10), crop=8, batch_size=50, seed=0, balance_sources=balance)
            hazy = torch.cat([s.batch(k)["hazy"] for k in range(4)])
            return (hazy.flatten(1).std(1) == 0).float().mean().item()  # the flat image is the small source

        assert small_share(True) == pytest.approx(0.5, abs=0.1)
        assert small_share(False) == pytest.approx(0.1, abs=0.06)

    def test_source_weights(self, tmp_path):
        for i in range(9):
            _img(tmp_path / "big" / "hazy" / f"{i}.png", seed=i)
            _img(tmp_path / "big" / "clear" / f"{i}.png", seed=i)
        _img(tmp_path / "small" / "hazy" / "s.png", value=7)
        _img(tmp_path / "small" / "clear" / "s.png", value=7)
        bank = PairBank(find_pairs(tmp_path / "big").pairs + find_pairs(tmp_path / "small").pairs)

        def small_share(weights) -> float:
            s = CropSampler(bank, range(10), crop=8, batch_size=50, seed=0, source_weights=weights)
            hazy = torch.cat([s.batch(k)["hazy"] for k in range(6)])
            return (hazy.flatten(1).std(1) == 0).float().mean().item()

        assert small_share({"big": 1.0, "small": 3.0}) == pytest.approx(0.75, abs=0.08)
        assert small_share({"big": 1.0, "small": 0.0}) == 0.0
        with pytest.raises(ValueError, match="missing: small"):
            CropSampler(bank, range(10), crop=8, batch_size=2, source_weights={"big": 1.0})
        with pytest.raises(ValueError, match="unknown: nope"):
            CropSampler(bank, range(10), crop=8, batch_size=2, source_weights={"big": 1, "small": 1, "nope": 1})
        with pytest.raises(ValueError, match="positive sum"):
            CropSampler(bank, range(10), crop=8, batch_size=2, source_weights={"big": 0, "small": 0})

    def test_crop_boxes_in_source_coordinates(self, tmp_path):
        """Each crop's index and box (y, x, h, w) locate it in the source file: exactly at scale 1,
        and through the max_side reduction (2x here) and a random scale up to resampling."""
        bank = self._bank(tmp_path, n=2, size=(60, 40))
        s = CropSampler(bank, [0, 1], crop=16, batch_size=6, seed=2)
        small = PairBank(find_pairs(tmp_path).pairs, max_side=30)
        scaled = CropSampler(small, [0, 1], crop=8, batch_size=6, seed=2, scale_range=(0.6, 1.0))
        assert small.sizes == [(40, 60), (40, 60)] and small.files == [str(tmp_path / "hazy" / f"{i}.png") for i in (0, 1)]
        for sampler, atol in ((s, 0.0), (scaled, 0.12)):
            b = sampler.batch(3)
            assert b["index"].shape == (6,) and b["box"].shape == (6, 4)
            for crop, i, (y, x, h, w) in zip(b["hazy"], b["index"].tolist(), b["box"].tolist()):
                source = torch.from_numpy(np.array(Image.open(bank.files[i]))).permute(2, 0, 1).float() / 255
                assert 0 <= y and y + h <= 40 and 0 <= x and x + w <= 60
                cut = torch.nn.functional.interpolate(source[None, :, y : y + h, x : x + w], size=crop.shape[-2:],
                                                      mode="area")[0]
                err = min((cut - crop).abs().mean(), (cut.flip(-1) - crop).abs().mean())  # a crop may be flipped
                assert err <= atol + 1e-6, err

    def test_small_images_are_enlarged(self, tmp_path):
        bank = self._bank(tmp_path, n=1, size=(12, 10))
        b = CropSampler(bank, [0], crop=32, batch_size=2).batch(0)
        assert b["hazy"].shape == (2, 3, 32, 32)

    def test_split_keeps_scenes_together(self, tmp_path):
        for scene in range(6):
            for k in range(3):
                _img(tmp_path / "hazy" / f"{1400 + scene}_{k}.png", seed=scene * 10 + k)
            _img(tmp_path / "clear" / f"{1400 + scene}.png", seed=99)
        bank = PairBank(find_pairs(tmp_path).pairs)
        train, val = bank.split(0.34, seed=0)
        assert len(train) + len(val) == 18 and val
        scenes = lambda idx: {bank.names[i].split("_")[0] for i in idx}  # noqa: E731
        assert not scenes(train) & scenes(val)
        assert bank.split(0.34, seed=0) == (train, val)

    def test_split_by_source(self, tmp_path):
        for first, root in ((1400, tmp_path / "indoor"), (100, tmp_path / "clouds")):
            n = 10 if first == 1400 else 4
            for scene in range(n):
                _img(root / "hazy" / f"{first + scene}_1.png", seed=scene)
                _img(root / "clear" / f"{first + scene}.png", seed=99)
        pairs = find_pairs(tmp_path / "indoor").pairs + find_pairs(tmp_path / "clouds").pairs
        bank = PairBank(pairs)
        train, val = bank.split({"indoor": 0.2, "clouds": 0.5}, seed=3)
        assert sorted(train + val) == list(range(14))
        per = {Path(src).name: len(idx) for src, idx in bank.by_source(val).items()}
        assert per == {"indoor": 2, "clouds": 2}  # 20 % of 10 scenes, 50 % of 4
        assert bank.split({"indoor": 0.2, "clouds": 0.5}, seed=3) == (train, val)
        assert bank.split({"indoor": 0.0, "clouds": 0.5}, seed=3)[1] == [i for i in val if "clouds" in bank.sources[i]]
        with pytest.raises(ValueError, match="missing: clouds; unknown: cloud"):
            bank.split({"indoor": 0.2, "cloud": 0.5}, seed=3)

    def test_synthetic_samples_in_bank(self, tmp_path):
        TestSyntheticHaze()._depth_set(tmp_path / "depthset", 8)
        bank = PairBank(depth_samples=find_depth_samples(tmp_path / "depthset"), synthetic_per_sample=3, seed=1)
        assert len(bank) == 3
        hazy0, clear0 = bank.full(0)
        assert not torch.equal(hazy0, clear0)
        again = PairBank(depth_samples=find_depth_samples(tmp_path / "depthset"), synthetic_per_sample=3, seed=1)
        assert torch.equal(again.hazy[2], bank.hazy[2])


class TestRerenderedHaze:
    """PairBank(rerender_per_pair=K): new haze levels for pairs that follow the scattering model."""

    def _reside_pair(self, root: Path, scene: int = 1410, a: float = 0.9) -> None:
        rng = np.random.default_rng(scene)
        clear = rng.uniform(0.0, 0.6, (24, 32, 3))
        t = np.linspace(0.3, 0.95, 32)[None, :, None] * np.ones((24, 1, 1))
        hazy = clear * t + a * (1 - t)
        for folder, name, arr in (("hazy", f"{scene}_1.png", hazy), ("clear", f"{scene}.png", clear)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(root / folder / name)

    def test_model_pairs_get_new_levels(self, tmp_path):
        self._reside_pair(tmp_path)
        bank = PairBank(find_pairs(tmp_path).pairs, rerender_per_pair=3, seed=0)
        assert bank.names == ["1410_1", "1410_1_rr0", "1410_1_rr1", "1410_1_rr2"]
        clear = bank.full(0)[1]
        for i in range(1, 4):
            hazy, c = bank.full(i)
            assert torch.equal(c, clear)
            assert (hazy - bank.full(0)[0]).abs().max() > 0.02  # another haze level
            # still the scattering model with the pair's airlight: (I - A) / (J - A) is one t per pixel
            t = (hazy - 0.9) / (clear - 0.9)
            assert (t.max(1).values - t.min(1).values).abs().max() < 0.05

    def test_deterministic_and_scene_grouped(self, tmp_path):
        for scene in (1410, 1411, 1412):
            self._reside_pair(tmp_path, scene)
        pairs = find_pairs(tmp_path).pairs
        bank = PairBank(pairs, rerender_per_pair=2, seed=4)
        again = PairBank(pairs, rerender_per_pair=2, seed=4)
        assert all(torch.equal(x, y) for x, y in zip(bank.hazy, again.hazy))
        train, val = bank.split(0.34, seed=0)
        scenes = lambda idx: {bank.names[i].split("_")[0] for i in idx}  # noqa: E731
        assert len(val) == 3 and not scenes(train) & scenes(val)


    def test_new_airlight_renders_follow_the_model_with_another_airlight(self, tmp_path):
        self._reside_pair(tmp_path)
        pairs = find_pairs(tmp_path).pairs
        same = PairBank(pairs, rerender_per_pair=4, seed=0)
        new = PairBank(pairs, rerender_per_pair=4, seed=0, rerender_new_airlight=1.0,
                       airlight_range=(0.6, 0.8))
        clear = new.full(0)[1]
        for i in range(1, 5):
            hazy = new.full(i)[0]
            assert not torch.equal(hazy, same.full(i)[0])
            # recover the airlight of the render: it is in the drawn range, not the pair's 0.9
            a, _, fit_db = fit_haze_model(hazy, clear)
            assert 0.55 <= a.mean().item() <= 0.85 and fit_db.item() > 30  # grey fit of a tinted A
        # the option off leaves every level as the fraction-free bank renders it
        off = PairBank(pairs, rerender_per_pair=4, seed=0, rerender_new_airlight=0.0)
        assert all(torch.equal(x, y) for x, y in zip(off.hazy, same.hazy))

    def test_airlights_are_known_where_the_bank_rendered_or_fitted_them(self, tmp_path):
        self._reside_pair(tmp_path / "indoor", a=0.9)
        for n in ("a.png", "b.png"):  # not a rendering of each other: no airlight
            _img(tmp_path / "real" / "hazy" / n, seed=1)
            _img(tmp_path / "real" / "clear" / n, seed=2)
        TestSyntheticHaze()._depth_set(tmp_path / "depthset", 8)
        pairs = find_pairs(tmp_path / "indoor").pairs + find_pairs(tmp_path / "real").pairs
        bank = PairBank(pairs, find_depth_samples(tmp_path / "depthset"), synthetic_per_sample=2,
                        rerender_per_pair=3, rerender_new_airlight=1.0, airlight_range=(0.6, 0.8), seed=0)
        a = dict(zip(bank.names, bank.airlights))
        torch.testing.assert_close(a["1410_1"], torch.full((3,), 0.9), atol=0.011, rtol=0)  # fitted
        clear = bank.full(0)[1]
        for k in range(3):  # each new level's own tinted airlight, which the render follows
            i = bank.names.index(f"1410_1_rr{k}")
            hazy = bank.full(i)[0]
            assert 0.55 <= a[f"1410_1_rr{k}"].min() and a[f"1410_1_rr{k}"].max() <= 0.85
            t = (hazy - a[f"1410_1_rr{k}"].view(1, 3, 1, 1)) / (clear - a[f"1410_1_rr{k}"].view(1, 3, 1, 1))
            assert (t.max(1).values - t.min(1).values).abs().max() < 0.05
        assert a["a"].isnan().all() and a["b"].isnan().all()
        synthetic = [v for n, v in a.items() if "_syn" in n]
        assert len(synthetic) == 2 and all(0.55 <= v.min() and v.max() <= 0.85 for v in synthetic)
        # without re-rendering nothing is fitted, so a pair's airlight is not known
        assert PairBank(pairs).airlights[0].isnan().all()

    def test_sampler_airlight_follows_the_channel_shuffle(self, tmp_path):
        # a black scene under a tinted airlight: every hazy pixel is A (1 - t), so each crop's
        # channel ratios are its airlight's
        root = tmp_path / "black"
        t = np.linspace(0.2, 0.9, 32)[None, :, None] * np.ones((32, 1, 1))
        for folder, name, arr in (("hazy", "1410_1.png", 0.9 * (1 - t)), ("clear", "1410.png", 0 * t)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(arr * np.ones((1, 1, 3)) * 255).astype(np.uint8)).save(root / folder / name)
        bank = PairBank(find_pairs(root).pairs, rerender_per_pair=4, rerender_new_airlight=1.0,
                        rerender_min_fit_db=30.0, airlight_range=(0.5, 0.9), seed=0)
        tinted = [i for i in range(len(bank)) if bank.rerendered[i]]
        sampler = CropSampler(bank, tinted, crop=16, batch_size=8, channel_shuffle=True, seed=2)
        batch = sampler.batch(0)
        ratios = batch["hazy"].mean(dim=(2, 3)) / batch["airlight"]
        assert (ratios.max(1).values - ratios.min(1).values).max() < 0.02
        assert not torch.equal(batch["airlight"], torch.stack([bank.airlights[i] for i in batch["index"]]))

    def test_pairs_outside_the_model_are_kept_as_they_are(self, tmp_path):
        for n in ("a.png", "b.png"):  # unrelated random images: not a rendering of each other
            _img(tmp_path / "hazy" / n, seed=1)
            _img(tmp_path / "clear" / n, seed=2)
        bank = PairBank(find_pairs(tmp_path).pairs, rerender_per_pair=3)
        assert bank.names == ["a", "b"]
