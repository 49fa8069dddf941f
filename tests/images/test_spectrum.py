"""Tests of flowlearn.images.spectrum: power spectra, high-frequency ratio, gradient histograms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flowlearn.images.spectrum import (
    gradient_histogram_distance,
    gradient_magnitude,
    high_frequency_ratio,
    power_spectrum,
    radial_power_spectrum,
)


def natural_like(size: int = 96, seed: int = 0) -> torch.Tensor:
    """An RGB image (3, H, W) with energy at every scale: a sum of upsampled noise octaves."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, 3, size, size)
    for k in range(1, 6):
        coarse = torch.rand(1, 3, size // 2**k + 1, size // 2**k + 1, generator=g)
        x += F.interpolate(coarse, size=(size, size), mode="bilinear") / k
    return ((x - x.min()) / (x.max() - x.min()))[0]


def blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x[None], 3, 1, 1, count_include_pad=False)[0]


def test_high_frequency_ratio_identical_is_one_blurred_below_noisy_above() -> None:
    x = natural_like()
    assert high_frequency_ratio(x, x, cutoff=0.125) == pytest.approx(1.0)
    assert high_frequency_ratio(blur(x), x, cutoff=0.125) < 0.5
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(
        0, 1
    )
    assert high_frequency_ratio(noisy, x, cutoff=0.125) > 1.1


def test_high_frequency_ratio_of_a_bicubic_round_trip_falls_with_the_scale() -> None:
    x = natural_like(128)
    ratios = []
    for s in (2, 4):
        lr = F.interpolate(x[None], scale_factor=1 / s, mode="bicubic", antialias=True)
        up = F.interpolate(lr, size=x.shape[1:], mode="bicubic")[0].clamp(0, 1)
        ratios.append(high_frequency_ratio(up, x, cutoff=0.5 / s))
    assert ratios[0] < 1 and ratios[1] < ratios[0]


def test_high_frequency_ratio_ignores_where_the_detail_is() -> None:
    x = natural_like()
    shifted = torch.roll(x, shifts=(7, 11), dims=(1, 2))  # same texture, other place
    assert high_frequency_ratio(shifted, x, cutoff=0.125, window=False) == pytest.approx(1.0)


def test_high_frequency_ratio_bad_input() -> None:
    x = natural_like(32)
    with pytest.raises(ValueError, match="differ in shape"):
        high_frequency_ratio(x[:, :16], x, cutoff=0.1)
    with pytest.raises(ValueError, match=r"cutoff must be in \[0, 0\.5\)"):
        high_frequency_ratio(x, x, cutoff=0.5)
    with pytest.raises(ValueError, match=r"expected one image \(3, H, W\)"):
        high_frequency_ratio(x[None], x[None], cutoff=0.1)


def test_power_spectrum_parseval_without_window() -> None:
    x = natural_like(32).double()
    power, radius = power_spectrum(x, window=False)
    y = 65.481 / 255 * x[0] + 128.553 / 255 * x[1] + 24.966 / 255 * x[2]
    centred = (y - y.mean()).double()
    assert float(power.sum()) == pytest.approx(float((centred**2).sum()), rel=1e-9)
    assert float(radius[0, 0]) == 0.0 and float(power[0, 0]) == pytest.approx(0.0, abs=1e-18)


def test_radial_power_spectrum_of_a_pure_frequency_peaks_in_its_ring() -> None:
    n = torch.arange(64, dtype=torch.float64)
    wave = 0.5 + 0.4 * torch.cos(2 * math.pi * 0.25 * n)[None, :].expand(64, 64)
    frequency, power = radial_power_spectrum(wave, bins=16, window=False)
    assert int(power.argmax()) == 8  # ring [0.25, 0.28125)
    assert frequency[8] == pytest.approx(0.265625)


def test_gradient_magnitude_and_histogram_distance() -> None:
    x = natural_like()
    assert gradient_magnitude(x).shape == (95, 95)
    assert gradient_histogram_distance(x, x) == 0.0
    near = gradient_histogram_distance(blur(x), x)
    far = gradient_histogram_distance(blur(blur(blur(x))), x)
    assert 0 < near < far <= 1
    with pytest.raises(ValueError, match="must be positive"):
        gradient_histogram_distance(x, x, bins=0)
