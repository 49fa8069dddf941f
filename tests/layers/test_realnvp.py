from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import Tensor, nn

from flowlearn import FlowSequential
from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.layers.nets import conv_net, dense_block, mlp
from flowlearn.layers.realnvp import AffineCoupling, soft_clamp
from tests.layers.conftest import make_coupling, sample

DTYPES = (torch.float32, torch.float64)


make = functools.partial(make_coupling, AffineCoupling)  # a coupling with a jittered subnet


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("shape", [(2, 4), (1, 5), (3, 2), (2, 3, 4, 6), (1, 5, 3, 2)])
def test_affine_coupling_channel_mask_bijector(
    shape: tuple[int, ...], parity: int, dtype: torch.dtype
) -> None:
    layer = make(shape[1], "channel", parity, len(shape) == 4, dtype)
    x = sample(shape, dtype)
    report = assert_bijector(layer, x)
    assert max(abs(v) for v in report.logdet) > 1e-3  # the check is not about an identity
    if dtype == torch.float64:
        assert report.logdet_error is not None and report.logdet_error <= 1e-8
        assert report.roundtrip_error <= 1e-10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 1, 3, 5), (2, 2, 5, 2)])
def test_affine_coupling_checkerboard_bijector(
    shape: tuple[int, ...], parity: int, dtype: torch.dtype
) -> None:
    layer = make(shape[1], "checkerboard", parity, True, dtype)
    report = assert_bijector(layer, sample(shape, dtype))
    assert max(abs(v) for v in report.logdet) > 1e-3


def test_affine_coupling_with_dense_block_bijector() -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(5, dense_block(growth=4), mask="channel", parity=1)
    jitter_parameters(layer, scale=0.05, seed=3).double()
    assert_bijector(layer, sample((2, 5, 4, 4), torch.float64))


def test_affine_coupling_identity_at_init() -> None:
    layer = AffineCoupling(4, mlp(hidden=8))
    x = sample((3, 4), torch.float32)
    y, logdet = layer(x)
    assert torch.equal(y, x)
    assert torch.equal(logdet, torch.zeros(3))


class Fixed(nn.Module):
    """A subnet with a known output: s~ = a * x1.sum, t = b * x1.sum, per output channel."""

    def __init__(self, c_out: int) -> None:
        super().__init__()
        self.c_out = c_out

    def forward(self, x1: Tensor) -> Tensor:
        total = x1.sum(dim=1, keepdim=True)
        c = self.c_out // 2
        return torch.cat((0.5 * total.expand(-1, c), -1.0 * total.expand(-1, c)), dim=1)


def test_affine_coupling_channel_mask_formula() -> None:
    layer = AffineCoupling(5, lambda c_in, c_out: Fixed(c_out), clamp=None)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=torch.float64)
    y, logdet = layer(x)
    # parity 0: x1 = (1, 2) is kept, x2 = (3, 4, 5) is transformed; s = 0.5*3, t = -3
    s, t = 1.5, -3.0
    expected = [1.0, 2.0, 3 * math.exp(s) + t, 4 * math.exp(s) + t, 5 * math.exp(s) + t]
    torch.testing.assert_close(y, torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(logdet, torch.tensor([3 * s], dtype=torch.float64))
    # parity 1 swaps the roles: x1 = (3, 4, 5) is kept, (1, 2) is transformed with s = 6
    layer = AffineCoupling(5, lambda c_in, c_out: Fixed(c_out), parity=1, clamp=None)
    y, logdet = layer(x)
    s, t = 6.0, -12.0
    expected = [1 * math.exp(s) + t, 2 * math.exp(s) + t, 3.0, 4.0, 5.0]
    torch.testing.assert_close(y, torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(logdet, torch.tensor([2 * s], dtype=torch.float64))


def test_affine_coupling_clamp_bounds_the_log_scale() -> None:
    layer = AffineCoupling(4, lambda c_in, c_out: Fixed(c_out), clamp=2.0)
    x = torch.full((1, 4), 100.0, dtype=torch.float64)  # s~ = 0.5 * 200 = 100
    y, logdet = layer(x)
    assert torch.isfinite(y).all()
    assert 2 * 1.999 < logdet.item() <= 2 * 2.0  # two transformed features, each s <= 2


@pytest.mark.parametrize("parity", [0, 1])
def test_affine_coupling_channel_mask_keeps_conditioning_part(parity: int) -> None:
    layer = make(5, "channel", parity, True, torch.float64)
    x = sample((2, 5, 3, 3), torch.float64)
    y, _ = layer(x)
    kept = slice(0, 2) if parity == 0 else slice(2, 5)
    moved = slice(2, 5) if parity == 0 else slice(0, 2)
    assert torch.equal(y[:, kept], x[:, kept])
    assert not torch.allclose(y[:, moved], x[:, moved])


@pytest.mark.parametrize("parity", [0, 1])
def test_affine_coupling_checkerboard_pattern(parity: int) -> None:
    layer = make(2, "checkerboard", parity, True, torch.float64)
    x = sample((1, 2, 4, 5), torch.float64)
    y, _ = layer(x)
    h, w = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    kept = (h + w + parity) % 2 == 1  # m = 1: passed through, seen by the subnet
    assert torch.equal(y[..., kept], x[..., kept])
    assert not torch.allclose(y[..., ~kept], x[..., ~kept])
    # a transformed pixel is invisible to the subnet: changing it changes only itself
    i, j = (0, 0) if parity == 0 else (0, 1)
    x2 = x.clone()
    x2[0, 1, i, j] += 1.0
    diff = (layer(x2)[0] - y).abs() > 0
    assert diff.sum() == 1 and diff[0, 1, i, j]


def test_affine_coupling_in_flow_sequential() -> None:
    torch.manual_seed(0)
    flow = FlowSequential(*(AffineCoupling(3, mlp(hidden=8), parity=k % 2) for k in range(4)))
    jitter_parameters(flow, scale=0.3).double()
    assert_bijector(flow, sample((2, 3), torch.float64))


def test_affine_coupling_bad_input_raises() -> None:
    vec = AffineCoupling(4, mlp(hidden=8))
    with pytest.raises(ValueError, match=r"AffineCoupling: expected 4 channels.*\(2, 3\)"):
        vec(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"AffineCoupling: expected input of shape"):
        vec(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"AffineCoupling: expected 4 channels"):
        vec.inverse(torch.randn(2, 5))
    board = AffineCoupling(4, conv_net(hidden=4), mask="checkerboard")
    with pytest.raises(ValueError, match=r"checkerboard mask needs images.*\(2, 4\)"):
        board(torch.randn(2, 4))


def test_affine_coupling_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mask must be"):
        AffineCoupling(4, mlp(), mask="stripes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        AffineCoupling(4, mlp(), parity=2)
    with pytest.raises(ValueError, match="at least 2 channels"):
        AffineCoupling(1, mlp())
    with pytest.raises(ValueError, match="clamp must be positive"):
        AffineCoupling(4, mlp(), clamp=0.0)


def test_affine_coupling_wrong_subnet_output_raises() -> None:
    layer = AffineCoupling(4, lambda c_in, c_out: nn.Linear(c_in, c_out + 1))
    with pytest.raises(ValueError, match=r"subnet returned shape \(3, 5\), expected \(3, 4\)"):
        layer(torch.randn(3, 4))


def test_affine_coupling_subnet_sizes() -> None:
    sizes: list[tuple[int, int]] = []

    def subnet(c_in: int, c_out: int) -> nn.Module:
        sizes.append((c_in, c_out))
        return nn.Linear(c_in, c_out)

    AffineCoupling(5, subnet, parity=0)
    AffineCoupling(5, subnet, parity=1)
    AffineCoupling(5, subnet, mask="checkerboard")
    assert sizes == [(2, 6), (3, 4), (5, 10)]


def test_soft_clamp_values_and_slope() -> None:
    s = torch.tensor([-1e6, -3.0, 0.0, 0.01, 3.0, 1e6], dtype=torch.float64, requires_grad=True)
    out = soft_clamp(s, 2.0)
    assert out.abs().max() <= 2.0
    assert out[2] == 0 and abs(out[3].item() - 0.01) < 1e-6
    torch.testing.assert_close(out, 2.0 * torch.tanh(s / 2.0))
    (grad,) = torch.autograd.grad(out[2], s)
    assert grad[2].item() == pytest.approx(1.0)
