r"""How much fine detail an image has: its power spectrum and its gradient magnitudes.

PSNR and SSIM reward the *mean* of the plausible HR images, which is blurred; they cannot say
whether an upscaled image has as much fine detail as the original. Two measures that can,
computed on the luma $Y$ (`flowlearn.images.metrics.rgb_to_y`) of an image pair:

* **High-frequency energy ratio** (`high_frequency_ratio`): the power of the upscaled image's
  spectrum above a cut-off frequency, divided by that of the original. 1.0 means as much fine
  detail (whatever its phase), below 1 a blurred image, above 1 added noise or ringing. At scale
  $s$ the natural cut-off is the LR image's Nyquist frequency $1/(2s)$ cycles per pixel:
  everything above it was thrown away by downscaling and had to be invented by the upscaler.
* **Gradient-magnitude histogram distance** (`gradient_histogram_distance`): the total
  variation distance between the histograms of $|\nabla Y|$ of the two images; 0 means the same
  distribution of edge strengths, 1 disjoint ones.

`radial_power_spectrum` gives the spectrum averaged over rings of equal frequency, the curve
that shows where an upscaler loses (or invents) energy.

References:
    A. van der Schaaf, J. H. van Hateren, 1996. "Modelling the Power Spectra of Natural
    Images: Statistics and Information." Vision Research 36(17) (radially averaged spectra of
    natural images, their $1/f^2$ fall-off).
    Y. Blau, T. Michaeli, 2018. "The Perception-Distortion Tradeoff." CVPR 2018,
    arXiv:1711.06077, §3 (why a lower distortion forces a less natural output distribution).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowlearn.images.metrics import rgb_to_y

__all__ = [
    "gradient_histogram_distance",
    "gradient_magnitude",
    "high_frequency_ratio",
    "power_spectrum",
    "radial_power_spectrum",
]


def _luma(image: Tensor, name: str) -> Tensor:
    r"""`(3, H, W)` RGB or `(H, W)` / `(1, H, W)` grey in [0, 1] → `(H, W)` float64 luma."""
    if image.ndim == 3 and image.shape[0] == 3:
        return rgb_to_y(image.double())[0]
    if image.ndim == 3 and image.shape[0] == 1:
        return image[0].double()
    if image.ndim == 2:
        return image.double()
    raise ValueError(
        f"{name}: expected one image (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}"
    )


def _frequencies(height: int, width: int, device: torch.device) -> Tensor:
    r"""$\sqrt{f_y^2 + f_x^2}$ in cycles per pixel for every coefficient of an $H\times W$ FFT."""
    fy = torch.fft.fftfreq(height, device=device, dtype=torch.float64)
    fx = torch.fft.fftfreq(width, device=device, dtype=torch.float64)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)  # (H, W)


def power_spectrum(image: Tensor, *, window: bool = True) -> tuple[Tensor, Tensor]:
    r"""The power spectrum of an image's luma and the radial frequency of every coefficient.

    $$
    P(k) = \frac{1}{HW}\Bigl|\sum_{m,n} w_{mn}\,(Y_{mn} - \bar Y)\,
    e^{-2\pi i (k_y m / H + k_x n / W)}\Bigr|^2,
    $$

    with the mean luma $\bar Y$ removed and, by default, a separable Hann window $w$ that stops
    the image's borders from leaking as false high-frequency energy (the FFT treats the image as
    periodic).

    Args:
        image: `(3, H, W)` RGB or `(H, W)` grey in [0, 1].
        window: multiply by a 2-D Hann window first.

    Returns:
        `(power, radius)`, both `(H, W)` float64: the power of each coefficient and its
        frequency $\sqrt{f_y^2 + f_x^2}$ in cycles per pixel (0 to $\sqrt{2}/2$).

    Examples:
        >>> import torch
        >>> power, radius = power_spectrum(torch.rand(3, 32, 32))
        >>> power.shape, round(float(radius.max()), 4)  # the corner: (1/2, 1/2)
        (torch.Size([32, 32]), 0.7071)
    """
    y = _luma(image, "power_spectrum")
    height, width = y.shape
    y = y - y.mean()
    if window:
        wy = torch.hann_window(height, periodic=False, dtype=y.dtype, device=y.device)
        wx = torch.hann_window(width, periodic=False, dtype=y.dtype, device=y.device)
        y = y * wy[:, None] * wx[None, :]
    power = torch.fft.fft2(y).abs() ** 2 / (height * width)
    return power, _frequencies(height, width, y.device)


def radial_power_spectrum(
    image: Tensor, *, bins: int = 64, window: bool = True
) -> tuple[Tensor, Tensor]:
    r"""The power spectrum averaged over rings of equal frequency, from 0 to 0.5 cycles/pixel.

    Args:
        image: `(3, H, W)` RGB or `(H, W)` grey in [0, 1].
        bins: number of rings of equal width between 0 and the Nyquist frequency 0.5 (the
            corners beyond 0.5, seen only along diagonals, are left out).
        window: Hann window (see `power_spectrum`).

    Returns:
        `(frequency, power)`, both `(bins,)`: the centre of each ring and the mean power of the
        coefficients in it (NaN for a ring with none, which only happens for tiny images).

    Examples:
        >>> import torch
        >>> f, p = radial_power_spectrum(torch.rand(1, 64, 64), bins=8)
        >>> f.tolist()[:2], p.shape
        ([0.03125, 0.09375], torch.Size([8]))
    """
    if bins < 1:
        raise ValueError(f"radial_power_spectrum: bins must be positive, got {bins}")
    power, radius = power_spectrum(image, window=window)
    ring = torch.floor(radius / 0.5 * bins).long().flatten()
    inside = ring < bins
    ring, values = ring[inside], power.flatten()[inside]
    sums = torch.zeros(bins, dtype=power.dtype).index_add_(0, ring, values)
    counts = torch.zeros(bins, dtype=power.dtype).index_add_(0, ring, torch.ones_like(values))
    frequency = (torch.arange(bins, dtype=power.dtype) + 0.5) * 0.5 / bins
    return frequency, sums / counts


def high_frequency_ratio(
    upscaled: Tensor, original: Tensor, *, cutoff: float, window: bool = True
) -> float:
    r"""Power above `cutoff` cycles/pixel in `upscaled` relative to `original` (1 = as much).

    $$
    R = \frac{\sum_{f_c < |k| \le 1/2} P_\text{upscaled}(k)}
             {\sum_{f_c < |k| \le 1/2} P_\text{original}(k)} .
    $$

    Blurring lowers $R$ below 1; noise, ringing or over-sharpening raise it above 1. $R$ says
    nothing about where the energy is (two images with the same texture in different places have
    the same $R$); PSNR says that. Together they separate "accurate but blurred" from "sharp".

    Args:
        upscaled: the image to judge, `(3, H, W)` or `(H, W)` in [0, 1].
        original: the reference, same shape.
        cutoff: $f_c$ in cycles per pixel, between 0 and 0.5; $1/(2s)$ for scale $s$.
        window: Hann window (see `power_spectrum`).

    Examples:
        >>> import torch
        >>> x = torch.rand(3, 64, 64)
        >>> high_frequency_ratio(x, x, cutoff=0.125)
        1.0
        >>> blurred = torch.nn.functional.avg_pool2d(x[None], 3, 1, 1, count_include_pad=False)[0]
        >>> high_frequency_ratio(blurred, x, cutoff=0.125) < 0.5
        True
    """
    if upscaled.shape != original.shape:
        raise ValueError(
            f"high_frequency_ratio: images differ in shape: {tuple(upscaled.shape)} vs "
            f"{tuple(original.shape)}"
        )
    if not 0 <= cutoff < 0.5:
        raise ValueError(f"high_frequency_ratio: cutoff must be in [0, 0.5), got {cutoff}")
    p_up, radius = power_spectrum(upscaled, window=window)
    p_ref, _ = power_spectrum(original, window=window)
    band = (radius > cutoff) & (radius <= 0.5)
    reference = float(p_ref[band].sum())
    if reference == 0:
        raise ValueError("high_frequency_ratio: the original has no energy above the cut-off")
    return float(p_up[band].sum()) / reference


def gradient_magnitude(image: Tensor) -> Tensor:
    r"""$|\nabla Y| = \sqrt{(Y_{m,n+1} - Y_{m,n})^2 + (Y_{m+1,n} - Y_{m,n})^2}$ (forward steps).

    Args:
        image: `(3, H, W)` RGB or `(H, W)` grey in [0, 1].

    Returns:
        `(H - 1, W - 1)` float64.

    Examples:
        >>> import torch
        >>> ramp = torch.arange(4.0).repeat(4, 1) / 10  # rises 0.1 per column
        >>> gradient_magnitude(ramp)[0].tolist()
        [0.1, 0.1, 0.1]
    """
    y = _luma(image, "gradient_magnitude")
    dx = y[:-1, 1:] - y[:-1, :-1]
    dy = y[1:, :-1] - y[:-1, :-1]
    return torch.sqrt(dx**2 + dy**2)


def gradient_histogram_distance(
    upscaled: Tensor, original: Tensor, *, bins: int = 64, max_magnitude: float = 0.5
) -> float:
    r"""Total variation distance between the gradient-magnitude histograms of two images.

    $$
    d = \tfrac12 \textstyle\sum_j |p_j - q_j| \in [0, 1],
    $$

    $p$ and $q$ the normalised histograms of $|\nabla Y|$ (`gradient_magnitude`) in `bins`
    equal bins over $[0, m]$, magnitudes above $m$ counted in the last bin. A blurred image has
    too many weak gradients and too few strong ones; an image with the right *amount* of edges
    and texture, wherever they are, has $d$ near 0.

    Args:
        upscaled: the image to judge, `(3, H, W)` or `(H, W)` in [0, 1].
        original: the reference (any size: only the distribution is compared).
        bins: histogram bins.
        max_magnitude: $m$, the upper end of the last bin.

    Examples:
        >>> import torch
        >>> x = torch.rand(3, 32, 32)
        >>> gradient_histogram_distance(x, x)
        0.0
        >>> gradient_histogram_distance(torch.zeros(32, 32), x) > 0.9  # flat: all in bin 0
        True
    """
    if bins < 1 or not max_magnitude > 0:
        raise ValueError(
            f"gradient_histogram_distance: bins and max_magnitude must be positive, got {bins} "
            f"and {max_magnitude}"
        )

    def histogram(image: Tensor) -> Tensor:
        g = gradient_magnitude(image).flatten()
        index = torch.clamp(torch.floor(g / max_magnitude * bins), max=bins - 1).long()
        counts = torch.bincount(index, minlength=bins).double()
        return counts / counts.sum()

    distance = 0.5 * float((histogram(upscaled) - histogram(original)).abs().sum())
    return 0.0 if math.isclose(distance, 0.0, abs_tol=1e-15) else distance
