"""Tests of flowlearn.irn.data: the patch sampler and the aligned HR/LR training patches."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowlearn.images.imresize import imresize
from flowlearn.images.io import write_image
from flowlearn.irn.data import FLIPS, IRNTrainSet, PatchSampler, train_loader
from tests.conftest import benchmark_script, smooth_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i, (h, w) in enumerate([(40, 48), (36, 44), (48, 40)]):
        write_image(tmp_path / f"img{i}.png", smooth_image(h, w, i))
    return tmp_path


def test_patch_sampler_is_a_function_of_seed_and_step() -> None:
    a, b = PatchSampler(7, 3, seed=4), PatchSampler(7, 3, seed=4)
    first = [a.batch(k) for k in range(10)]
    assert [b.batch(k) for k in reversed(range(10))][::-1] == first  # any order of queries
    assert PatchSampler(7, 3, seed=5).batch(0) != first[0]
    resumed = iter(PatchSampler(7, 3, seed=4, start_step=6))
    assert [next(resumed) for _ in range(4)] == first[6:]


def test_patch_sampler_visits_each_image_once_per_epoch() -> None:
    sampler = PatchSampler(6, 4, seed=0)
    stream = [i for k in range(6) for i, _ in sampler.batch(k)]  # 24 samples = 4 epochs
    for epoch in range(4):
        assert sorted(stream[6 * epoch : 6 * epoch + 6]) == list(range(6))
    seeds = [s for k in range(6) for _, s in sampler.batch(k)]
    assert len(set(seeds)) == len(seeds)
    assert stream[:6] != stream[6:12]  # a new permutation each epoch


def test_patch_sampler_batch_larger_than_dataset() -> None:
    batch = PatchSampler(2, 5, seed=0).batch(0)
    assert len(batch) == 5
    assert sorted(i for i, _ in batch[:4]) == [0, 0, 1, 1]


def test_dataset_patch_shapes_and_dtype(folder: Path) -> None:
    data = IRNTrainSet(folder, scale=4, patch_size=24)
    assert len(data) == 3
    hr, lr = data[1, 99]
    assert hr.shape == (3, 24, 24) and lr.shape == (3, 6, 6)
    assert hr.dtype == lr.dtype == torch.float32
    assert torch.equal(data[1, 99][0], hr)  # the seed fixes the patch
    assert not torch.equal(data[1, 100][0], hr)


def test_dataset_patches_aligned_without_augmentation(folder: Path) -> None:
    data = IRNTrainSet(folder, scale=2, patch_size=16, flips=False, rotations=False)
    image = data.image(0)
    lr_full = imresize(image, 0.5)
    assert torch.allclose(data.lr_reference(0), lr_full)
    for seed in range(5):
        hr, lr = data[0, seed]
        # Locate the HR patch in the image: it must be at an even offset, with the LR patch at
        # half that offset in the bicubic LR of the whole image.
        hits = [
            (i, j)
            for i in range(0, image.shape[1] - 15)
            for j in range(0, image.shape[2] - 15)
            if torch.equal(image[:, i : i + 16, j : j + 16], hr)
        ]
        assert len(hits) == 1
        i, j = hits[0]
        assert i % 2 == 0 and j % 2 == 0
        assert torch.equal(lr, lr_full[:, i // 2 : i // 2 + 8, j // 2 : j // 2 + 8])


def test_dataset_augmentation_same_on_hr_and_lr(folder: Path) -> None:
    data = IRNTrainSet(folder, scale=2, patch_size=24)
    image = data.image(2)
    unflipped = 0
    for seed in range(24):
        hr, lr = data[2, seed]
        # Flips and transposes commute with the separable, symmetric bicubic kernel, so away
        # from the patch border the LR patch is the bicubic downscale of the HR patch.
        assert torch.allclose(imresize(hr, 0.5)[:, 3:-3, 3:-3], lr[:, 3:-3, 3:-3], atol=1e-5)
        unflipped += any(
            torch.equal(image[:, i : i + 24, j : j + 24], hr)
            for i in range(0, image.shape[1] - 23, 2)
            for j in range(0, image.shape[2] - 23, 2)
        )
    assert 0 < unflipped < 12  # about 1 in 8 patches keeps its orientation


def test_dataset_crops_odd_sizes_and_logs_it(tmp_path: Path, caplog) -> None:
    write_image(tmp_path / "odd.png", smooth_image(41, 37, 0))
    write_image(tmp_path / "even.png", smooth_image(40, 36, 1))
    with caplog.at_level(logging.WARNING, logger="flowlearn.irn.data"):
        data = IRNTrainSet(tmp_path, scale=4, patch_size=16)
    assert data.image(1).shape == (3, 40, 36)  # odd.png: bottom row and right column dropped
    assert "cropped 1 of 2" in caplog.text and "odd.png 37x41→36x40" in caplog.text
    assert "even.png" not in caplog.text


def test_dataset_image_smaller_than_patch_names_file(folder: Path) -> None:
    write_image(folder / "small.png", smooth_image(30, 64, 0))
    with pytest.raises(ValueError, match=r"small\.png: 64x30 image is smaller than the 32x32"):
        IRNTrainSet(folder, scale=2, patch_size=32)


def test_dataset_prescale_resizes_before_cropping(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", smooth_image(82, 98, 0))
    x = IRNTrainSet(tmp_path, scale=2, patch_size=16).image(0)
    data = IRNTrainSet(tmp_path, scale=2, patch_size=16, prescale=0.5)
    expected = imresize(x, 0.5).clamp(0, 1)  # (3, 41, 49), then cropped to a multiple of 2
    assert data.image(0).shape == (3, 40, 48)
    torch.testing.assert_close(data.image(0), expected[:, :40, :48])
    torch.testing.assert_close(data.lr_reference(0), imresize(expected[:, :40, :48], 0.5))
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"prescale must be in \(0, 1\]"):
            IRNTrainSet(tmp_path, scale=2, patch_size=16, prescale=bad)
    with pytest.raises(ValueError, match=r"a\.png: 49x41 image after resizing by 0\.5 is smaller"):
        IRNTrainSet(tmp_path, scale=2, patch_size=42, prescale=0.5)


def test_prescale_gives_a_4_2_0_jpeg_back_its_colour_detail(tmp_path: Path) -> None:
    # JPEG usually stores Cb and Cr at half resolution (4:2:0): the decoded photo has almost no
    # fine colour detail. Halving the photo brings the luma down to the chroma's resolution.
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(3, 24, 32, generator=g)
    x = torch.nn.functional.interpolate(coarse[None], scale_factor=4, mode="bilinear")[0]
    x = (x + 0.15 * torch.rand(3, 96, 128, generator=g)).clamp(0, 1)  # detail in every channel
    pixels = (x * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95, subsampling=2)
    full = IRNTrainSet(tmp_path, scale=2, patch_size=16).image(0)
    halved = IRNTrainSet(tmp_path, scale=2, patch_size=16, prescale=0.5).image(0)
    colour_detail = benchmark_script("irn_colour").detail_ratio  # Cb, Cr vs Y fine detail
    assert colour_detail(full) < 0.6 * colour_detail(x)  # the JPEG lost colour detail
    assert colour_detail(halved) > 1.5 * colour_detail(full)


def _grey_jpeg(path: Path, width: int = 128) -> None:
    """A 96-pixel-high photo whose fine detail is grey (alike in R, G, B), as 4:2:0 JPEG keeps."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(3, 12, width // 8, generator=g)
    x = torch.nn.functional.interpolate(coarse[None], scale_factor=8, mode="bilinear")[0]
    x = (0.8 * x + 0.2 * torch.rand(1, 96, width, generator=g)).clamp(0, 1)
    pixels = (x * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(path, quality=95, subsampling=2)


def test_recolour_maps_each_channel_of_hr_and_lr_alike(tmp_path: Path) -> None:
    _grey_jpeg(tmp_path / "photo.jpg")
    plain = IRNTrainSet(tmp_path, scale=2, patch_size=16)
    always = IRNTrainSet(tmp_path, scale=2, patch_size=16, recolour=1.0)
    changed = 0
    for seed in range(20):
        (hr0, lr0), (hr1, lr1) = plain[0, seed], always[0, seed]  # the same crop and flips
        for c in range(3):  # hr1 = a + b hr0 with a = 0, b in [1/2, 1] or a = -b = |b|
            b = float(((hr1[c] - hr1[c].mean()) * (hr0[c] - hr0[c].mean())).sum()) / float(
                (hr0[c] - hr0[c].mean()).square().sum()
            )
            a = float(hr1[c].mean() - b * hr0[c].mean())
            assert 0.5 - 1e-5 <= abs(b) <= 1 + 1e-5
            assert a == pytest.approx(0.0 if b > 0 else -b, abs=1e-5)
            torch.testing.assert_close(hr1[c], a + b * hr0[c])
            torch.testing.assert_close(lr1[c], a + b * lr0[c])  # the LR reference alike
            changed += abs(b - 1) > 1e-3
        assert 0 <= float(hr1.min()) and float(hr1.max()) <= 1
    assert changed > 30  # of 60 channels: the gains and inversions are drawn, not fixed


def test_recolour_lr_is_the_bicubic_lr_of_the_recoloured_patch(tmp_path: Path) -> None:
    _grey_jpeg(tmp_path / "photo.jpg", width=96)
    whole = IRNTrainSet(tmp_path, scale=2, patch_size=96, recolour=1.0)  # patch = image
    for seed in range(6):
        hr, lr = whole[0, seed]
        torch.testing.assert_close(imresize(hr, 0.5), lr, atol=2e-6, rtol=0)


def test_recolour_turns_grey_detail_into_colour_detail(tmp_path: Path) -> None:
    _grey_jpeg(tmp_path / "photo.jpg")
    colour_detail = benchmark_script("irn_colour").detail_ratio
    ratio = {}
    for p in (0.0, 1.0):
        data = IRNTrainSet(tmp_path, scale=2, patch_size=32, recolour=p)
        ratio[p] = np.mean([colour_detail(data[0, seed][0]) for seed in range(40)])
    assert ratio[1.0] > 5 * ratio[0.0], ratio
    half = IRNTrainSet(tmp_path, scale=2, patch_size=16, recolour=0.5)
    plain = IRNTrainSet(tmp_path, scale=2, patch_size=16)
    share = np.mean([not torch.equal(half[0, s][0], plain[0, s][0]) for s in range(200)])
    assert 0.38 < share < 0.62  # about half the patches are recoloured
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"recolour must be a probability in \[0, 1\]"):
            IRNTrainSet(tmp_path, scale=2, patch_size=16, recolour=bad)


def test_noise_lr_is_the_bicubic_lr_of_the_noisy_patch(tmp_path: Path) -> None:
    _grey_jpeg(tmp_path / "photo.jpg", width=96)
    whole = IRNTrainSet(tmp_path, scale=2, patch_size=96, noise=1.0)  # patch = image
    plain = IRNTrainSet(tmp_path, scale=2, patch_size=96)
    for seed in range(6):
        hr, lr = whole[0, seed]
        torch.testing.assert_close(imresize(hr, 0.5), lr, atol=2e-6, rtol=0)
        assert not torch.equal(hr, plain[0, seed][0])
        assert 0 <= float(hr.min()) and float(hr.max()) <= 1


def test_noise_is_independent_colour_noise_up_to_its_level(tmp_path: Path) -> None:
    _grey_jpeg(tmp_path / "photo.jpg")
    plain = IRNTrainSet(tmp_path, scale=2, patch_size=32)
    noisy = IRNTrainSet(tmp_path, scale=2, patch_size=32, noise=1.0, noise_level=6.0)
    levels = []
    for seed in range(40):
        clean, hr = plain[0, seed][0], noisy[0, seed][0]  # the same crop and flips
        inside = (clean > 0.1) & (clean < 0.9)  # away from the clamp
        levels.append(float((hr - clean)[inside].std()) * 255)
        rgb = (hr - clean).flatten(1)
        assert abs(float(torch.corrcoef(rgb)[0, 1])) < 0.2  # R and G differ: colour noise
    assert max(levels) <= 6.0 * 1.1
    assert min(levels) < 2.0 < 4.0 < max(levels)  # a level drawn per patch, not a fixed one
    strong = IRNTrainSet(tmp_path, scale=2, patch_size=32, noise=1.0, noise_level=30.0)
    colour_detail = benchmark_script("irn_colour").detail_ratio
    before = np.mean([colour_detail(plain[0, s][0]) for s in range(20)])
    after = np.mean([colour_detail(strong[0, s][0]) for s in range(20)])
    assert after > 2 * before


def test_noise_zero_keeps_the_patches_and_bad_settings_are_refused(tmp_path: Path) -> None:
    _grey_jpeg(tmp_path / "photo.jpg")
    plain = IRNTrainSet(tmp_path, scale=2, patch_size=16, recolour=0.5)
    off = IRNTrainSet(tmp_path, scale=2, patch_size=16, recolour=0.5, noise=0.0)
    half = IRNTrainSet(tmp_path, scale=2, patch_size=16, recolour=0.5, noise=0.5)
    for seed in range(10):
        torch.testing.assert_close(off[0, seed], plain[0, seed], atol=0, rtol=0)
    share = np.mean([not torch.equal(half[0, s][0], plain[0, s][0]) for s in range(200)])
    assert 0.38 < share < 0.62
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"noise must be a probability in \[0, 1\]"):
            IRNTrainSet(tmp_path, scale=2, patch_size=16, noise=bad)
    for bad in (0.0, -1.0, 300.0):
        with pytest.raises(ValueError, match=r"noise_level must be .* \(0, 255\]"):
            IRNTrainSet(tmp_path, scale=2, patch_size=16, noise=0.5, noise_level=bad)


def test_dataset_searches_subfolders(tmp_path: Path) -> None:
    for sub in ["b", "a"]:
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "x.png", smooth_image(16, 16, 0))
    (tmp_path / "README.md").write_text("not an image")
    data = IRNTrainSet(tmp_path, scale=2, patch_size=8)
    assert [p.parent.name for p in data.files] == ["a", "b"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_dataset_without_images_is_an_error(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "photos"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(ValueError, match=r"photos"):
        IRNTrainSet(folder, scale=2, patch_size=8)


def test_dataset_keeps_16_bit_precision_and_notes_grey(tmp_path: Path, caplog) -> None:
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 250 + 7).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # 16-bit greyscale PNG
    with caplog.at_level(logging.WARNING, logger="flowlearn.irn.data"):
        data = IRNTrainSet(tmp_path, scale=2, patch_size=8)
    assert "deep.png" in caplog.text and "greyscale" in caplog.text
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535)
    assert torch.allclose(data.image(0)[1], expected, atol=1e-7)


def test_placement_says_where_each_patch_comes_from(folder: Path) -> None:
    data = IRNTrainSet(folder, scale=2, patch_size=16)
    seen = set()
    for seed in range(40):
        item = (seed % len(data), seed)
        i, j, flips = data.placement(item)
        hr = data.image(item[0])[:, 2 * i : 2 * i + 16, 2 * j : 2 * j + 16]
        lr = data.lr_reference(item[0])[:, i : i + 8, j : j + 8]
        for flag, op in zip(flips, FLIPS, strict=True):
            if flag:
                hr, lr = op(hr), op(lr)
        patch, reference = data[item]
        assert torch.equal(patch, hr) and torch.equal(reference, lr)
        seen.add(tuple(flips))
    assert len(seen) == 8  # every combination of the three flips occurs


def test_train_loader_batches_independent_of_workers(folder: Path) -> None:
    data = IRNTrainSet(folder, scale=2, patch_size=16)
    plain = iter(train_loader(data, 2, seed=3, start_step=5))
    hr0, lr0 = next(plain)
    assert hr0.shape == (2, 3, 16, 16) and lr0.shape == (2, 3, 8, 8)
    parallel = iter(train_loader(data, 2, seed=3, start_step=5, workers=2))
    hr1, lr1 = next(parallel)
    assert torch.equal(hr0, hr1) and torch.equal(lr0, lr1)
    fresh = iter(train_loader(data, 2, seed=3))
    for _ in range(5):
        next(fresh)
    assert torch.equal(next(fresh)[0], hr0)  # resuming at step 5 = skipping 5 batches


def test_train_loader_lowers_workers_to_the_cpus(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the shipped configurations ask for the recipe's 6 workers; a 2-core machine gets 2, and
    # one line says so (instead of DataLoader's warning about freezes)
    import flowlearn.irn.data as data_module

    data = IRNTrainSet(folder, scale=2, patch_size=16)
    monkeypatch.setattr(data_module, "usable_cpus", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="flowlearn.irn.data"):
        assert train_loader(data, 2, seed=0, workers=2).num_workers == 2
        assert caplog.text == ""
        assert train_loader(data, 2, seed=0, workers=6).num_workers == 2
    assert "data.workers is 6" in caplog.text and "on 2 CPUs" in caplog.text
    assert 1 <= data_module.usable_cpus() <= (os.cpu_count() or 1)


def test_train_loader_workers_survive_ctrl_c(folder: Path) -> None:
    # Ctrl-C goes to the whole process group; the training process stops after its step and
    # must still get batches, so the workers ignore it instead of dying with a traceback.
    import signal

    loader = train_loader(IRNTrainSet(folder, scale=2, patch_size=16), 2, seed=0, workers=1)
    batches = iter(loader)
    first = next(batches)
    workers = getattr(batches, "_workers", [])
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGINT)
    later = [next(batches) for _ in range(6)]  # more than the loader prefetches
    assert workers[0].is_alive()
    assert all(b[0].shape == first[0].shape == (2, 3, 16, 16) for b in later)
