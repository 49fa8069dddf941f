from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlearn.images.io import ImageError, read_image, write_image
from flowlearn.images.metrics import quantize_8bit
from flowlearn.irn.evaluate import (
    METRICS,
    bicubic_downscale,
    bicubic_rescale,
    evaluate_folder,
    evaluate_pair,
    format_table,
)
from tests.conftest import shared_path

# "Bicubic & Bicubic" Y-PSNR / Y-SSIM on Set5, Xiao et al. 2020, Table 1.
PAPER_SET5 = {2: (33.66, 0.9299), 4: (28.42, 0.8104)}


class FakeRescaler(nn.Module):
    """Box-mean downscaling, nearest upscaling plus temperature-scaled noise; records its calls."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("anchor", torch.zeros(1))
        self.calls: list[tuple[str, int | None, float | None, bool, bool]] = []

    def downscale(self, hr: Tensor) -> Tensor:
        self.calls.append(("down", None, None, torch.is_inference_mode_enabled(), self.training))
        return quantize_8bit(F.avg_pool2d(hr, self.scale))

    def upscale(
        self, lr: Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        assert generator is not None
        seed = generator.initial_seed()
        self.calls.append(
            ("up", seed, temperature, torch.is_inference_mode_enabled(), self.training)
        )
        sr = F.interpolate(lr, scale_factor=self.scale, mode="nearest")
        noise = torch.randn(sr.shape, generator=generator, dtype=sr.dtype, device=sr.device)
        return sr + 0.02 * temperature * noise


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 6, 7, generator=g), size=(24, 28), mode="bilinear")
    write_image(tmp_path / "data" / "b_smooth.png", smooth[0])
    write_image(tmp_path / "data" / "a_odd.png", torch.rand(3, 27, 30, generator=g))
    return tmp_path / "data"


@pytest.mark.parametrize("scale", [2, 4])
def test_evaluate_folder_bicubic_matches_paper_on_set5(scale: int) -> None:
    set5 = shared_path("datasets", "set5")
    result = evaluate_folder(None, set5, scale, progress=False)
    psnr_y, ssim_y = PAPER_SET5[scale]
    assert result["method"] == "bicubic" and result["num_images"] == 5
    assert result["mean"]["psnr_y"] == pytest.approx(psnr_y, abs=0.03)
    assert result["mean"]["ssim_y"] == pytest.approx(ssim_y, abs=0.002)
    # docs/benchmarks.md: 33.68 / 28.43 dB for exactly this protocol (Table 1: 33.66 / 28.42).
    assert result["mean"]["psnr_y"] == pytest.approx({2: 33.68, 4: 28.43}[scale], abs=0.006)
    assert result["mean"]["psnr_rgb"] < result["mean"]["psnr_y"]
    assert result["modcropped"] == []  # every Set5 side is a multiple of 4


def test_evaluate_folder_draws_bookkeeping_and_json(folder: Path) -> None:
    model = FakeRescaler(2)
    model.train()
    result = evaluate_folder(model, folder, 2, draws=3, seed=10, temperature=0.5, progress=False)
    assert model.training  # the caller's mode is restored
    ups = [c for c in model.calls if c[0] == "up"]
    assert [c[1] for c in ups] == [10, 11, 12, 10, 11, 12]  # draw d seeded seed + d, per image
    assert all(c[2] == 0.5 and c[3] and not c[4] for c in ups)  # inference mode, eval mode
    assert sum(c[0] == "down" for c in model.calls) == 2

    assert json.loads(json.dumps(result)) == result
    assert result["method"] == "irn" and result["draws"] == 3 and result["scale"] == 2
    assert [r["name"] for r in result["images"]] == ["a_odd.png", "b_smooth.png"]
    assert result["modcropped"] == ["a_odd.png"]
    assert result["images"][0]["hr_size"] == [27, 30] and result["images"][0]["size"] == [26, 30]

    hr, _ = read_image(folder / "b_smooth.png")
    lr = quantize_8bit(F.avg_pool2d(hr[None], 2))
    for d in range(3):
        sr = model.upscale(lr, temperature=0.5, generator=torch.Generator().manual_seed(10 + d))
        expected = evaluate_pair(hr, sr, 2)
        for m in METRICS:
            assert result["images"][1][f"{m}_draws"][d] == pytest.approx(expected[m], abs=1e-12)

    for m in METRICS:
        per_image = [r[m] for r in result["images"]]
        for r in result["images"]:
            assert r[m] == pytest.approx(statistics.fmean(r[f"{m}_draws"]))
        draw_means = result["per_draw_mean"][m]
        assert draw_means == pytest.approx(
            [statistics.fmean(r[f"{m}_draws"][d] for r in result["images"]) for d in range(3)]
        )
        assert result["mean"][m] == pytest.approx(statistics.fmean(per_image))
        assert result["mean"][f"{m}_std_over_draws"] == pytest.approx(statistics.stdev(draw_means))
    assert result["mean"]["psnr_y_std_over_draws"] > 0
    assert {"lr_psnr_rgb", "lr_psnr_y"} <= result["mean"].keys()


def test_evaluate_folder_is_reproducible_and_seed_dependent(folder: Path) -> None:
    run = lambda seed, t: evaluate_folder(  # noqa: E731
        FakeRescaler(2), folder, 2, draws=2, seed=seed, temperature=t, progress=False
    )
    assert run(0, 1.0) == run(0, 1.0)
    assert run(0, 1.0)["mean"]["psnr_y"] != run(5, 1.0)["mean"]["psnr_y"]
    assert run(0, 0.0)["mean"]["psnr_y_std_over_draws"] == 0.0


def test_evaluate_folder_rejects_bad_arguments(folder: Path) -> None:
    with pytest.raises(ValueError, match="rescales by 2"):
        evaluate_folder(FakeRescaler(2), folder, 4, progress=False)
    with pytest.raises(ValueError, match="draws"):
        evaluate_folder(FakeRescaler(2), folder, 2, draws=0, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        evaluate_folder(FakeRescaler(2), folder, 2, temperature=-1.0, progress=False)
    with pytest.raises(ImageError, match="does not exist"):
        evaluate_folder(None, folder / "missing", 2, progress=False)
    broken = FakeRescaler(2)
    broken.downscale = lambda hr: hr  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"model\.downscale gave"):
        evaluate_folder(broken, folder, 2, progress=False)


def test_evaluate_folder_saves_images_and_reports_notes(folder: Path, tmp_path: Path) -> None:
    write_image(folder / "c_grey.png", torch.full((3, 24, 24), 0.4))
    from PIL import Image

    Image.open(folder / "c_grey.png").convert("L").save(folder / "c_grey.png")
    out = tmp_path / "out"
    result = evaluate_folder(None, folder, 2, save_images=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "a_odd_LR.png", "a_odd_SR.png", "b_smooth_LR.png", "b_smooth_SR.png",
        "c_grey_LR.png", "c_grey_SR.png",
    ]  # fmt: skip
    sr, _ = read_image(out / "a_odd_SR.png")
    hr, _ = read_image(folder / "a_odd.png")
    assert torch.equal(sr, bicubic_rescale(hr[:, :26], 2))
    assert list(result["notes"]) == ["c_grey.png"] and "greyscale" in result["notes"]["c_grey.png"]
    table = format_table(result)
    for name in ("a_odd.png", "b_smooth.png", "c_grey.png", "mean", "27×30 → 26×30", "greyscale"):
        assert name in table
    assert f"{result['mean']['psnr_y']:.2f}" in table


def test_format_table_shows_spread_for_several_draws(folder: Path) -> None:
    result = evaluate_folder(FakeRescaler(2), folder, 2, draws=2, progress=False)
    table = format_table(result)
    assert "std over draws" in table and "IRN ×2" in table and "2 draw(s)" in table
    assert "std over draws" not in format_table(evaluate_folder(None, folder, 2, progress=False))


def test_evaluate_pair_rounds_to_8bit_and_shaves_the_border() -> None:
    hr = quantize_8bit(torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(2)))
    sr = hr + 0.4 / 255  # rounds back to hr
    sr[:, :2, :] = 1 - hr[:, :2, :]  # damage inside the 2-pixel border only
    scores = evaluate_pair(hr, sr, 2)
    assert scores["psnr_y"] == float("inf") and scores["psnr_rgb"] == float("inf")
    assert scores["ssim_y"] == pytest.approx(1.0) and scores["ssim_rgb"] == pytest.approx(1.0)
    assert evaluate_pair(hr, sr, 2, border=1)["psnr_rgb"] < 30
    with pytest.raises(ValueError, match="differ"):
        evaluate_pair(hr, hr[:, :18], 2)


def test_bicubic_rescale_needs_a_modcropped_image() -> None:
    hr = torch.rand(3, 33, 32)
    with pytest.raises(ValueError, match="modcrop"):
        bicubic_rescale(hr, 2)
    sr = bicubic_rescale(hr[:, :32], 4)
    assert sr.shape == (3, 32, 32)
    assert torch.equal(sr, quantize_8bit(sr))
    lr = bicubic_downscale(hr[:, :32], 4)
    assert lr.shape == (3, 8, 8) and torch.equal(lr, quantize_8bit(lr))
