r"""Image-quality metrics of the super-resolution test protocol: PSNR, SSIM, BT.601 luma.

These follow the evaluation code that the Invertible Rescaling Net paper (and most
super-resolution papers since EDSR) reports numbers with: PSNR and MATLAB-style single-scale SSIM
on the 0–255 scale, on RGB or on the luma channel Y of ITU-R BT.601, with `border` pixels shaved
off each side. Every function takes `(C, H, W)` or `(B, C, H, W)` tensors with values in [0, 1]
and works in float64.

References:
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, 2004, "Image quality assessment: from
    error visibility to structural similarity", IEEE Trans. Image Processing 13(4), §III.B,
    Eq. 13 (SSIM) and §III.C (11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03).

    ITU-R Recommendation BT.601-7, 2011, §2.5.1–2.5.3 (Y' = 16 + 65.481 R' + 128.553 G'
    + 24.966 B' for R', G', B' in [0, 1]).

    M. Xiao et al., 2020, "Invertible Image Rescaling", arXiv:2005.05650, §4.1 (metrics on Y).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["modcrop", "psnr", "quantize_8bit", "rgb_to_y", "ssim", "to_uint8"]

# SSIM constants of Wang et al. (2004), §III.C.
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def modcrop(img: Tensor, scale: int) -> Tensor:
    r"""Crop the bottom/right of `img` so that height and width are multiples of `scale`.

    The test protocol does this to every ground-truth image before downscaling by `scale`. It is
    never done implicitly anywhere else in flowlearn; callers report when it changed an image.

    Args:
        img: Images `(..., H, W)`.
        scale: Positive integer.

    Returns:
        `img[..., :H - H % scale, :W - W % scale]` (a view).

    Examples:
        >>> modcrop(torch.zeros(3, 10, 13), 4).shape
        torch.Size([3, 8, 12])
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"modcrop: scale must be a positive integer, got {scale!r}")
    if img.ndim < 2:
        raise ValueError(f"modcrop: expected shape (..., H, W), got {tuple(img.shape)}")
    h, w = img.shape[-2], img.shape[-1]
    if h < scale or w < scale:
        raise ValueError(f"modcrop: image {h}×{w} is smaller than the scale {scale}")
    return img[..., : h - h % scale, : w - w % scale]


class _StraightThrough8bit(torch.autograd.Function):
    # Rounds to 8 bits going forward; the backward pass is the identity.

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(0, 1).mul(255).round().div(255)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def quantize_8bit(x: Tensor, *, straight_through: bool = False) -> Tensor:
    r"""Round to the nearest 8-bit level, $Q(x) = \mathrm{round}(255\,\mathrm{clamp}(x, 0, 1))/255$.

    With `straight_through=True` the backward pass is the identity, $\partial Q / \partial x := 1$,
    including where the clamp is active, as in the original IRN code: the reconstruction loss then
    trains the downscaling (forward) pass through the rounding of the LR image. Otherwise the
    gradient is that of `round` (zero almost everywhere).

    References:
        Y. Bengio, N. Léonard, A. Courville, 2013, "Estimating or Propagating Gradients Through
        Stochastic Neurons for Conditional Computation", arXiv:1308.3432 (the straight-through
        estimator). Used by M. Xiao et al., 2020, "Invertible Image Rescaling",
        arXiv:2005.05650, §3.3.

    Args:
        x: Any floating tensor, usually images `(B, C, H, W)` in [0, 1].
        straight_through: Pass the incoming gradient through unchanged.

    Returns:
        Same shape, dtype and device; values in $\{0, 1/255, \dots, 1\}$.

    Examples:
        >>> quantize_8bit(torch.tensor([-0.2, 0.5, 0.999, 1.7])) * 255
        tensor([  0., 128., 255., 255.])
        >>> x = torch.tensor([-0.2, 0.5, 1.7], requires_grad=True)
        >>> quantize_8bit(x, straight_through=True).sum().backward()
        >>> x.grad
        tensor([1., 1., 1.])
    """
    if straight_through:
        out = _StraightThrough8bit.apply(x)
        assert isinstance(out, Tensor)
        return out
    return x.clamp(0, 1).mul(255).round().div(255)


def to_uint8(x: Tensor) -> Tensor:
    r"""8-bit pixel values $\mathrm{round}(255\,\mathrm{clamp}(v, 0, 1))$ as `torch.uint8`.

    This is the protocol's `tensor2img`: values outside [0, 1] are clamped (by definition of the
    protocol, not as a repair), ties round half to even.

    Args:
        x: Floating tensor with values nominally in [0, 1].

    Returns:
        `torch.uint8` tensor of the same shape and device.

    Raises:
        ValueError: If `x` holds NaN.

    Examples:
        >>> to_uint8(torch.tensor([0.0, 0.2, 1.0, 3.0]))
        tensor([  0,  51, 255, 255], dtype=torch.uint8)
    """
    if not x.is_floating_point():
        raise ValueError(f"to_uint8: expected a floating-point tensor, got dtype {x.dtype}")
    if torch.isnan(x).any():
        raise ValueError("to_uint8: the image holds NaN values")
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def rgb_to_y(x: Tensor) -> Tensor:
    r"""Luma Y of ITU-R BT.601 ("studio swing"), on the [0, 1] scale, not rounded.

    $$
    Y = \frac{65.481\,R + 128.553\,G + 24.966\,B + 16}{255} \in \Bigl[\frac{16}{255},
    \frac{235}{255}\Bigr]
    $$

    Args:
        x: RGB images `(..., 3, H, W)` in [0, 1].

    Returns:
        `(..., 1, H, W)`, dtype and device of `x`.

    Examples:
        >>> rgb_to_y(torch.ones(3, 1, 1)) * 255
        tensor([[[235.]]])
    """
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y: expected RGB images (..., 3, H, W), got {tuple(x.shape)}")
    r, g, b = x[..., 0:1, :, :], x[..., 1:2, :, :], x[..., 2:3, :, :]
    return (65.481 * r + 128.553 * g + 24.966 * b) / 255 + 16 / 255


def _pair(a: Tensor, b: Tensor, border: int, name: str) -> tuple[Tensor, Tensor, bool]:
    # Validates the pair, shaves the border, returns float64 (B, C, H, W) tensors.
    if a.shape != b.shape:
        raise ValueError(f"{name}: images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"{name}: expected (C, H, W) or (B, C, H, W), got {tuple(a.shape)}")
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(f"{name}: border must be a non-negative integer, got {border!r}")
    batched = a.ndim == 4
    h, w = a.shape[-2], a.shape[-1]
    if 2 * border >= h or 2 * border >= w:
        raise ValueError(f"{name}: border {border} leaves nothing of a {h}×{w} image")
    a = a if batched else a.unsqueeze(0)  # (B, C, H, W)
    b = b if batched else b.unsqueeze(0)
    crop = (..., slice(border, h - border), slice(border, w - border))
    return a[crop].to(torch.float64), b[crop].to(torch.float64), batched


def psnr(a: Tensor, b: Tensor, *, border: int = 0, data_range: float = 1.0) -> Tensor:
    r"""Peak signal-to-noise ratio over all channels, in dB, computed in float64.

    $$
    \mathrm{PSNR} = 20 \log_{10} \frac{\text{data\_range}}{\sqrt{\mathrm{MSE}}}
    $$

    with the MSE over every channel and pixel left after shaving `border` pixels off each side.
    Identical images give `inf`.

    Args:
        a: Images `(C, H, W)` or `(B, C, H, W)`.
        b: Images of the same shape.
        border: Pixels removed from each side before comparing.
        data_range: Peak value (1 for [0, 1] images).

    Returns:
        float64 tensor: shape `()` for one image, `(B,)` per image of a batch.

    Examples:
        >>> a = torch.zeros(3, 4, 4)
        >>> psnr(a, a + 0.1)
        tensor(20., dtype=torch.float64)
    """
    a, b, batched = _pair(a, b, border, "psnr")
    mse = (a - b).square().flatten(1).mean(dim=1)  # (B,)
    out = 20 * torch.log10(data_range / mse.sqrt())
    return out if batched else out[0]


def _gaussian_window() -> list[float]:
    # MATLAB's fspecial('gaussian', 11, 1.5) is the outer product of this normalised 1-D window.
    g = [
        math.exp(-((k - _SSIM_WINDOW // 2) ** 2) / (2 * _SSIM_SIGMA**2))
        for k in range(_SSIM_WINDOW)
    ]
    total = sum(g)
    return [v / total for v in g]


def _filter_valid(m: Tensor, g: list[float]) -> Tensor:
    # 'valid' correlation of (..., H, W) with the separable window g ⊗ g: rows, then columns,
    # as sums of shifted slices (faster on the CPU than a float64 convolution).
    k = len(g)
    w_out = m.shape[-1] - k + 1
    rows = m[..., :, 0:w_out] * g[0]  # (..., H, W - 10)
    for i in range(1, k):
        rows.add_(m[..., :, i : i + w_out], alpha=g[i])
    h_out = m.shape[-2] - k + 1
    out = rows[..., 0:h_out, :] * g[0]  # (..., H - 10, W - 10)
    for i in range(1, k):
        out.add_(rows[..., i : i + h_out, :], alpha=g[i])
    return out


def ssim(a: Tensor, b: Tensor, *, border: int = 0, data_range: float = 1.0) -> Tensor:
    r"""MATLAB-style single-scale SSIM (Wang et al. 2004, Eq. 13), averaged over channels.

    Each channel is rescaled to 0–255, filtered with an 11×11 Gaussian window ($\sigma = 1.5$)
    in 'valid' mode (no padding: the map is 10 pixels smaller in each direction), and

    $$
    \mathrm{SSIM} = \operatorname{mean}\,
    \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
         {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},
    \qquad C_1 = (0.01 \cdot 255)^2,\; C_2 = (0.03 \cdot 255)^2,
    $$

    with (biased) local moments. The channel means are then averaged.

    Args:
        a: Images `(C, H, W)` or `(B, C, H, W)` in [0, data_range].
        b: Images of the same shape.
        border: Pixels removed from each side first; at least 11×11 must remain.
        data_range: Peak value of the inputs (they are mapped to 0–255).

    Returns:
        float64 tensor: shape `()` for one image, `(B,)` per image of a batch.

    Examples:
        >>> a = torch.rand(3, 16, 16)
        >>> ssim(a, a)
        tensor(1., dtype=torch.float64)
    """
    a, b, batched = _pair(a, b, border, "ssim")
    h, w = a.shape[-2], a.shape[-1]
    if h < _SSIM_WINDOW or w < _SSIM_WINDOW:
        raise ValueError(f"ssim: needs at least 11×11 pixels after the border, got {h}×{w}")
    x = a * (255 / data_range)  # (B, C, H, W) on 0–255
    y = b * (255 / data_range)
    moments = torch.stack([x, y, x * x, y * y, x * y])  # (5, B, C, H, W)
    moments = _filter_valid(moments, _gaussian_window())  # local means, (5, B, C, H-10, W-10)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.unbind(dim=0)
    var_x, var_y = e_xx - mu_x**2, e_yy - mu_y**2
    cov_xy = e_xy - mu_x * mu_y
    c1, c2 = (_SSIM_K1 * 255) ** 2, (_SSIM_K2 * 255) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    out = ssim_map.flatten(2).mean(dim=2).mean(dim=1)  # channel means, then their mean: (B,)
    return out if batched else out[0]
