from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

from flowlearn.checks import assert_bijector
from flowlearn.layers.haar import HaarDownsampling, haar_kernel

NORMS = ("orthonormal", "mean")
BLOCK = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])  # a=1, b=2, c=3, d=5


def test_haar_golden_block_mean() -> None:
    y, logdet = HaarDownsampling(1, normalization="mean")(BLOCK)
    # (a+b+c+d)/4, (a-b+c-d)/4, (a+b-c-d)/4, (a-b-c+d)/4
    assert y.flatten().tolist() == [2.75, -0.75, -1.25, 0.25]
    assert logdet.tolist() == pytest.approx([-4 * math.log(2)])


def test_haar_golden_block_orthonormal() -> None:
    y, logdet = HaarDownsampling(1, normalization="orthonormal")(BLOCK)
    assert y.flatten().tolist() == [5.5, -1.5, -2.5, 0.5]
    assert logdet.tolist() == [0.0]


def test_haar_channel_order_band_major() -> None:
    # channel c holds the constant block c * [[1, 0], [0, 0]]: every band equals c * k
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    y, _ = HaarDownsampling(3, normalization="mean")(x)
    expected = torch.tensor([1.0, 2.0, 3.0]).repeat(4) / 4  # [LL(c0..c2), B1(c0..c2), ...]
    assert torch.equal(y.flatten(), expected)
    # the first C channels are the 2x2 box means of the image
    x = torch.rand(2, 3, 6, 4)
    y, _ = HaarDownsampling(3, normalization="mean")(x)
    box = torch.nn.functional.avg_pool2d(x, 2)
    torch.testing.assert_close(y[:, :3], box)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 4, 6), (3, 2, 8, 4)])
def test_haar_matches_pywavelets(norm: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, _ = HaarDownsampling(shape[1], normalization=norm)(x)
    bands = y.reshape(shape[0], 4, shape[1], shape[2] // 2, shape[3] // 2)  # (B, 4, C, h, w)
    c_a, (c_h, c_v, c_d) = pywt.dwt2(x.numpy(), "haar")  # over the last two axes
    to_ours = 1.0 if norm == "orthonormal" else 0.5  # "mean" bands are half of pywt's
    # LL = cA, B1 (left - right) = cV, B2 (top - bottom) = cH, B3 (diagonal) = cD
    for band, ref in enumerate((c_a, c_v, c_h, c_d)):
        np.testing.assert_allclose(bands[:, band].numpy(), to_ours * ref, atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(2, 1, 2, 2), (2, 3, 4, 2), (3, 2, 4, 4)])
def test_haar_checker(norm: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    assert_bijector(HaarDownsampling(shape[1], normalization=norm), x)


@pytest.mark.parametrize("norm", NORMS)
def test_haar_is_the_convolution_with_haar_kernel(norm: str) -> None:
    """The original code's form: a stride-2 grouped convolution with the ±1 filters, times k."""
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    layer = HaarDownsampling(5, normalization=norm)
    y, _ = layer(x)
    kernel = haar_kernel(5, dtype=torch.float64)  # (4C, 1, 2, 2): entry 4c + band
    bands = torch.nn.functional.conv2d(x, kernel, stride=2, groups=5) * layer.k
    band_major = bands.reshape(2, 5, 4, 4, 3).transpose(1, 2).reshape(2, 20, 4, 3)
    torch.testing.assert_close(y, band_major, atol=1e-14, rtol=0)
    x_back = torch.nn.functional.conv_transpose2d(bands, kernel, stride=2, groups=5)
    torch.testing.assert_close(layer.inverse(y)[0], x_back / (4 * layer.k), atol=1e-14, rtol=0)


def test_haar_mean_logdet_formula() -> None:
    x = torch.randn(3, 2, 6, 4)
    _, logdet = HaarDownsampling(2, normalization="mean")(x)
    assert logdet.shape == (3,)
    torch.testing.assert_close(logdet, torch.full((3,), -2 * 6 * 4 * math.log(2)))


def test_haar_has_no_state() -> None:
    layer = HaarDownsampling(3)
    assert list(layer.state_dict()) == [] and list(layer.buffers()) == []


def test_haar_kernel_pattern() -> None:
    k = haar_kernel(2)
    assert k.shape == (8, 1, 2, 2)
    assert k[5, 0].tolist() == [[1.0, -1.0], [1.0, -1.0]]  # channel 1, band 1: left - right
    assert k[7, 0].tolist() == [[1.0, -1.0], [-1.0, 1.0]]  # channel 1, band 3: diagonal


def test_haar_odd_size_raises() -> None:
    with pytest.raises(ValueError, match="divisible by 2"):
        HaarDownsampling(3)(torch.zeros(1, 3, 5, 4))


def test_haar_wrong_channels_raises() -> None:
    with pytest.raises(ValueError, match="expected 3 channels"):
        HaarDownsampling(3)(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="expected 12 channels"):
        HaarDownsampling(3).inverse(torch.zeros(1, 3, 4, 4))


def test_haar_wrong_rank_raises() -> None:
    with pytest.raises(ValueError, match=r"HaarDownsampling: expected input of shape"):
        HaarDownsampling(3)(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"HaarDownsampling: expected input of shape"):
        HaarDownsampling(3).inverse(torch.zeros(12, 4, 4))


def test_haar_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="normalization"):
        HaarDownsampling(3, normalization="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels must be positive"):
        HaarDownsampling(0)


def test_haar_input_not_modified() -> None:
    x = torch.randn(2, 3, 4, 4)
    x0 = x.clone()
    layer = HaarDownsampling(3, normalization="mean")
    y, _ = layer(x)
    y0 = y.clone()
    layer.inverse(y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
