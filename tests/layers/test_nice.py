from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import Tensor, nn

from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.layers.nets import conv_net, mlp
from flowlearn.layers.nice import AdditiveCoupling, DiagonalScaling
from tests.layers.conftest import make_coupling, sample

DTYPES = (torch.float32, torch.float64)


make = functools.partial(make_coupling, AdditiveCoupling)  # a coupling with a jittered subnet


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("shape", [(2, 4), (1, 5), (2, 3, 4, 6), (1, 2, 3, 1)])
def test_additive_coupling_channel_mask_bijector(
    shape: tuple[int, ...], parity: int, dtype: torch.dtype
) -> None:
    layer = make(shape[1], "channel", parity, len(shape) == 4, dtype)
    x = sample(shape, dtype)
    report = assert_bijector(layer, x)
    assert report.logdet == [0.0] * shape[0]
    assert not torch.allclose(layer(x)[0], x)  # the check is not about an identity


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 1, 3, 5)])
def test_additive_coupling_checkerboard_bijector(
    shape: tuple[int, ...], parity: int, dtype: torch.dtype
) -> None:
    layer = make(shape[1], "checkerboard", parity, True, dtype)
    x = sample(shape, dtype)
    assert_bijector(layer, x)
    assert not torch.allclose(layer(x)[0], x)


def test_additive_coupling_formula() -> None:
    class Shift(nn.Module):  # m(x1) = sum(x1) in every output feature
        def __init__(self, c_out: int) -> None:
            super().__init__()
            self.c_out = c_out

        def forward(self, x1: Tensor) -> Tensor:
            return x1.sum(dim=1, keepdim=True).expand(-1, self.c_out)

    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    y, logdet = AdditiveCoupling(5, lambda c_in, c_out: Shift(c_out))(x)
    assert y.tolist() == [[1.0, 2.0, 6.0, 7.0, 8.0]]  # y2 = x2 + (1 + 2)
    assert logdet.tolist() == [0.0]
    y, _ = AdditiveCoupling(5, lambda c_in, c_out: Shift(c_out), parity=1)(x)
    assert y.tolist() == [[13.0, 14.0, 3.0, 4.0, 5.0]]  # x1 = (3, 4, 5) conditions (1, 2)


@pytest.mark.parametrize("parity", [0, 1])
def test_additive_coupling_checkerboard_keeps_masked_pixels(parity: int) -> None:
    layer = make(3, "checkerboard", parity, True, torch.float64)
    x = sample((2, 3, 3, 4), torch.float64)
    y, _ = layer(x)
    h, w = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    kept = (h + w + parity) % 2 == 1
    assert torch.equal(y[..., kept], x[..., kept])
    assert not torch.allclose(y[..., ~kept], x[..., ~kept])


def test_additive_coupling_identity_at_init() -> None:
    layer = AdditiveCoupling(6, conv_net(hidden=4))
    x = sample((2, 6, 3, 3), torch.float32)
    assert torch.equal(layer(x)[0], x)


def test_additive_coupling_bad_input_raises() -> None:
    layer = AdditiveCoupling(4, mlp(hidden=8))
    with pytest.raises(ValueError, match=r"AdditiveCoupling: expected 4 channels.*\(2, 3\)"):
        layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"AdditiveCoupling: expected input of shape"):
        layer.inverse(torch.randn(4))
    board = AdditiveCoupling(4, conv_net(hidden=4), mask="checkerboard")
    with pytest.raises(ValueError, match=r"checkerboard mask needs images"):
        board(torch.randn(2, 4))
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        AdditiveCoupling(4, mlp(), parity=-1)
    with pytest.raises(ValueError, match="at least 2 channels"):
        AdditiveCoupling(1, mlp())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3), (1, 1), (2, 3, 4, 5), (1, 2, 1, 3)])
def test_diagonal_scaling_bijector(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    layer = jitter_parameters(DiagonalScaling(shape[1]), scale=0.5, seed=2).to(dtype)
    report = assert_bijector(layer, sample(shape, dtype))  # type: ignore[arg-type]
    pixels = shape[2] * shape[3] if len(shape) == 4 else 1
    expected = pixels * layer.s.sum().item()  # type: ignore[operator]
    assert report.logdet == pytest.approx([expected] * shape[0], rel=1e-6)
    assert abs(expected) > 1e-3


def test_diagonal_scaling_values() -> None:
    layer = DiagonalScaling(2)
    with torch.no_grad():
        layer.s.copy_(torch.tensor([math.log(2.0), math.log(0.5)]))
    y, logdet = layer(torch.ones(1, 2, 2, 3))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([2.0, 0.5]))
    assert logdet.item() == pytest.approx(0.0, abs=1e-6)  # ln 2 - ln 2
    assert torch.equal(DiagonalScaling(3)(torch.ones(2, 3))[0], torch.ones(2, 3))  # s = 0 at init


def test_diagonal_scaling_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"DiagonalScaling: expected 3 channels.*\(2, 4\)"):
        DiagonalScaling(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"DiagonalScaling: expected input of shape"):
        DiagonalScaling(3).inverse(torch.randn(2, 3, 4))
