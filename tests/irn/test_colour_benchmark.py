"""The LR colour benchmark (`benchmarks/irn_colour.py`): its measures, the model card tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowlearn.irn.evaluate import bicubic_downscale
from tests.conftest import ROOT, benchmark_script


def test_colour_detail_ratio_sees_only_colour() -> None:
    bench = benchmark_script("irn_colour")
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 32, 32, generator=g).expand(3, 32, 32)
    assert bench.detail_ratio(grey) < 1e-10  # fine detail in luma only: no colour detail
    colour = torch.rand(3, 32, 32, generator=g)
    assert bench.detail_ratio(colour) > 0.2
    blocks = torch.nn.functional.interpolate(colour[None], scale_factor=2, mode="nearest")[0]
    fine_grey = blocks + 0.1 * torch.rand(1, 64, 64, generator=g)  # the same in R, G and B
    assert bench.detail_ratio(fine_grey) < 1e-10  # colour constant on 2x2 blocks


def test_without_detail_halves_the_resolution_of_colour_or_of_luma_only() -> None:
    bench = benchmark_script("irn_colour")
    g = torch.Generator().manual_seed(1)
    x = 0.25 + 0.5 * torch.rand(3, 32, 34, generator=g)  # away from 0 and 1: no clamping
    y, cb, cr = bench.ycbcr(x)
    torch.testing.assert_close(bench.from_ycbcr(y, cb, cr), x)  # the exact inverse
    colour = bench.without_detail(x, "colour")
    grey = bench.without_detail(x, "grey")
    y_c, _, _ = bench.ycbcr(colour)
    _, cb_g, _ = bench.ycbcr(grey)
    torch.testing.assert_close(y_c, y)  # the luma is kept ...
    assert bench.detail_ratio(colour) < 0.2 * bench.detail_ratio(x)  # ... the colour detail not
    torch.testing.assert_close(cb_g, cb)  # and the other way round
    assert bench.detail_ratio(grey) > 2 * bench.detail_ratio(x)


def test_model_card_shows_the_stored_colour_measurements() -> None:
    bench = benchmark_script("irn_colour")
    data = json.loads((ROOT / "benchmarks/results/irn_colour_cpu.json").read_text())
    card = (ROOT / "docs" / "model-card.md").read_text()
    for line in bench.tables(data).splitlines():
        assert line in card, line
    assert {"shipped x2", "shipped x4"} <= set(data["x2"]) | set(data["x4"])


def test_crops_figure_shows_a_bicubic_crop_then_each_model(tmp_path: Path) -> None:
    from PIL import Image

    from flowlearn import IRN
    from flowlearn.images.metrics import quantize_8bit
    from flowlearn.irn.evaluate import bicubic_downscale

    bench = benchmark_script("irn_colour")
    torch.manual_seed(0)
    models = {"a": IRN(4, blocks=[1, 1], growth=4).eval(), "b": IRN(4, blocks=[1, 1], growth=4)}
    path = tmp_path / "crops_x4.png"
    bench.crops_figure(models, 4, path, size=16)
    pixels = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
    assert pixels.shape == (3, 4 * 16, 4 * 16 * 3)  # bicubic, a, b; each 16² LR pixels, 4×
    hr = bench.hr_images("demo", 4)[0][1]
    ref = quantize_8bit(bicubic_downscale(hr, 4))
    panel = pixels[:, ::4, : 4 * 16 : 4]  # the first panel, one pixel per LR pixel
    matches = [
        (i, j)
        for i in range(ref.shape[1] - 15)
        for j in range(ref.shape[2] - 15)
        if torch.equal(ref[:, i : i + 16, j : j + 16], panel)
    ]
    assert matches  # the first panel is a crop of the bicubic LR
    with pytest.raises(SystemExit, match="do not fit the demo photo's 64×64 LR at ×4"):
        bench.crops_figure(models, 4, path, size=65)


def test_noisy_crops_figure_shows_a_row_per_noise_level(tmp_path: Path) -> None:
    from PIL import Image

    from flowlearn import IRN
    from flowlearn.images.metrics import quantize_8bit

    bench = benchmark_script("irn_colour")
    torch.manual_seed(0)
    models = {"a": IRN(4, blocks=[1, 1], growth=4).eval(), "b": IRN(4, blocks=[1, 1], growth=4)}
    path = tmp_path / "noisy_x4.png"
    bench.noisy_crops_figure(models, 4, path, image="bird.png", size=8)
    pixels = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
    assert pixels.shape == (3, 2 * 4 * 8, 3 * 4 * 8)  # sigma 5 and 10; bicubic, a, b
    names = [name for name, _ in bench.hr_images("set5", 4)]
    seed, hr = names.index("bird.png"), dict(bench.hr_images("set5", 4))["bird.png"]
    for row, level in enumerate((5.0, 10.0)):  # each row: the bicubic LR of the noisy image
        ref = quantize_8bit(bicubic_downscale(bench.noisy(hr, level, seed), 4))
        panel = pixels[:, 32 * row : 32 * (row + 1) : 4, :32:4]
        windows = ref.unfold(1, 8, 1).unfold(2, 8, 1)  # (3, H - 7, W - 7, 8, 8)
        assert (windows == panel[:, None, None]).all(0).all(-1).all(-1).any(), level
    with pytest.raises(SystemExit, match=r"no image 'cat\.png' in Set5"):
        bench.noisy_crops_figure(models, 4, path, image="cat.png")


def test_merge_keeps_what_a_run_does_not_measure() -> None:
    bench = benchmark_script("irn_colour")
    stored = {
        "data": {"set5": 0.17},
        "threads": 2,
        "x2": {"shipped x2": {"set5": {"lr_psnr_rgb": 34.8}, "cause": {"set5": {"as_is": 34.8}}}},
        "x4": {"shipped x4": {"set5": {"lr_psnr_rgb": 32.0}}},
    }
    new = {"threads": 1, "x2": {"shipped x2": {"set5": {"lr_psnr_rgb": 35.0}}, "b.pt": {"x": 1}}}
    out = bench.merged(stored, new)
    assert out["data"] == {"set5": 0.17} and out["threads"] == 1  # the run's settings win
    assert out["x2"]["shipped x2"] == {  # measured again, its stored cause kept
        "set5": {"lr_psnr_rgb": 35.0},
        "cause": {"set5": {"as_is": 34.8}},
    }
    assert out["x2"]["b.pt"] == {"x": 1} and out["x4"] == stored["x4"]
    assert stored["x2"]["shipped x2"]["set5"] == {"lr_psnr_rgb": 34.8}  # the input is not changed


def test_noise_part_adds_seeded_colour_noise_and_tabulates_it() -> None:
    bench = benchmark_script("irn_colour")
    x = torch.full((3, 64, 64), 0.5)
    y = bench.noisy(x, 5.0, seed=3)
    assert torch.equal(y, bench.noisy(x, 5.0, seed=3))  # seeded: the same image every run
    assert not torch.equal(y, bench.noisy(x, 5.0, seed=4))
    assert torch.equal((y * 255).round(), y * 255)  # 8-bit, as an image file would be
    assert float((y - x).std()) * 255 == pytest.approx(5.0, rel=0.1)
    assert abs(float(torch.corrcoef((y - x).flatten(1))[0, 1])) < 0.1  # R, G independent
    data = {"x2": {"m": {"noise": {"set5": {"as_is": 40.0, "2": 39.0, "5": 35.0, "10": 30.0}}}}}
    table = bench.tables(data)
    assert "| scale | model | images | LR RGB PSNR (dB) as they are | noise σ = 2 |" in table
    assert "| ×2 | m | Set5 | 40.00 | 39.00 | 35.00 | 30.00 |" in table
    assert "LR pixels > 30 levels off" not in table  # a result from before the count
    counts = {"far": {"as_is": 0, "2": 1, "5": 3, "10": 52}, "far_worst": {"10": ["baby.png", 50]}}
    data["x2"]["m"]["noise"]["set5"].update(counts)
    table = bench.tables(data)
    assert "| ×2 | m | Set5 | 0 | 1 | 3 | 52 | baby.png (50) |" in table


def test_lr_colour_counts_the_pixels_far_off_in_colour() -> None:
    bench = benchmark_script("irn_colour")
    hr = 0.25 + 0.5 * torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))

    class Shifted(torch.nn.Module):  # the bicubic LR with a blotch of 3 pixels
        def downscale(self, x: torch.Tensor) -> torch.Tensor:
            lr = bicubic_downscale(x[0], 4)[None].clone()
            lr[0, 1, 2, 3:6] += 40 / 255  # green: 40 levels off
            lr[0, 0, 5, 5] += 20 / 255  # 20 levels: not far off
            return lr

    scores = bench.lr_colour(Shifted(), hr, 4, sr=False)
    assert scores["lr_far"] == 3 and scores["lr_psnr_rgb"] < 40


def test_no_shipped_measures_only_the_given_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowlearn.irn.checkpoint import save
    from tests.conftest import tiny_irn

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its neighbours
    bench = benchmark_script("irn_colour")
    with pytest.raises(SystemExit):  # nothing left to measure at x4
        bench.main(["--no-shipped", "--scales", "2", "4", "--model", "x2=a.pt"])
    save(tiny_irn(2), tmp_path / "tiny.pt")
    out = tmp_path / "colour.json"
    skip = ["--no-data", "--no-cause", "--no-noise", "--no-scores"]
    argv = ["--no-shipped", "--scales", "2", "--model", f"x2={tmp_path / 'tiny.pt'}", *skip]
    assert bench.main([*argv, "--threads", "1", "--out", str(out)]) == 0
    entries = json.loads(out.read_text())["x2"]
    assert list(entries) == ["tiny.pt"]  # no "shipped x2"
    assert entries["tiny.pt"]["machine"]["threads"] == 1 and entries["tiny.pt"]["machine"]["cpus"]
