from __future__ import annotations

import pytest
import torch
from torch import nn

from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.irn.block import IRNCoupling
from flowlearn.layers.nets import dense_block


def conv_subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 3, padding=1)
    )


def zero_subnet(c_in: int, c_out: int) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def make_block(channels: int = 6, split: int = 2, clamp: float = 1.0) -> IRNCoupling:
    torch.manual_seed(0)
    return IRNCoupling(channels, conv_subnet, split=split, clamp=clamp).double()


def test_irn_coupling_checker_float64() -> None:
    block = make_block()
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    report = assert_bijector(block, x)
    assert max(abs(v) for v in report.logdet) > 1e-2  # the coupling is not a volume-preserving map


def test_irn_coupling_checker_dense_vectors() -> None:
    torch.manual_seed(0)
    block = IRNCoupling(5, lambda i, o: nn.Sequential(nn.Linear(i, 7), nn.Tanh(), nn.Linear(7, o)))
    x = torch.randn(3, 5, dtype=torch.float64)
    assert_bijector(block.double(), x)


def test_irn_coupling_equations() -> None:
    block = make_block(channels=7, split=3, clamp=0.7)
    x = torch.randn(2, 7, 4, 4, dtype=torch.float64)
    y, logdet = block(x)
    x1, x2 = x[:, :3], x[:, 3:]
    y1 = x1 + block.F(x2)
    s = 0.7 * torch.tanh(block.H(y1) / 2)  # 2 sigmoid(u) - 1 = tanh(u / 2)
    y2 = x2 * torch.exp(s) + block.G(y1)
    torch.testing.assert_close(y, torch.cat((y1, y2), dim=1))
    torch.testing.assert_close(logdet, s.sum(dim=(1, 2, 3)))  # per sample, not a batch mean


def test_irn_coupling_scale_bounded_by_clamp() -> None:
    block = IRNCoupling(4, zero_subnet, split=1, clamp=0.5)
    with torch.no_grad():
        block.H.bias.fill_(100.0)  # sigmoid saturates: s -> clamp
    x = torch.randn(1, 4, 2, 2)
    y, logdet = block(x)
    assert torch.all(logdet <= 0.5 * 3 * 2 * 2)
    torch.testing.assert_close(y[:, 1:], x[:, 1:] * torch.exp(torch.tensor(0.5)))


def test_irn_coupling_zero_subnets_identity() -> None:
    block = IRNCoupling(12, zero_subnet)
    x = torch.randn(2, 12, 4, 4)
    y, logdet = block(x)
    assert torch.equal(y, x)
    assert torch.equal(logdet, torch.zeros(2))


def test_irn_coupling_subnet_names_and_order() -> None:
    calls: list[tuple[int, int]] = []

    def recording(c_in: int, c_out: int) -> nn.Module:
        calls.append((c_in, c_out))
        return zero_subnet(c_in, c_out)

    block = IRNCoupling(12, recording, split=3)
    assert calls == [(9, 3), (3, 9), (3, 9)]  # F: phi, G: eta, H: rho
    assert list(block.state_dict()) == [
        "F.weight",
        "F.bias",
        "G.weight",
        "G.bias",
        "H.weight",
        "H.bias",
    ]
    assert block.F.weight.shape[:2] == (3, 9) and block.H.weight.shape[:2] == (9, 3)


def test_irn_coupling_is_stateless() -> None:
    block = make_block()
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    y_a, ld_a = block(x)
    block(torch.randn(5, 6, 4, 4, dtype=torch.float64))
    y_b, ld_b = block(x)
    assert torch.equal(y_a, y_b) and torch.equal(ld_a, ld_b)


def test_irn_coupling_float32_checker_jittered() -> None:
    torch.manual_seed(1)
    block = jitter_parameters(IRNCoupling(6, zero_subnet, split=3), scale=0.3)
    assert isinstance(block, IRNCoupling)
    assert_bijector(block, torch.randn(2, 6, 2, 2))


def test_irn_coupling_bad_split_raises() -> None:
    with pytest.raises(ValueError, match="split must be between 1 and channels - 1"):
        IRNCoupling(3, zero_subnet, split=3)
    with pytest.raises(ValueError, match="clamp must be positive"):
        IRNCoupling(6, zero_subnet, clamp=0.0)


def test_irn_coupling_wrong_channels_raises() -> None:
    block = IRNCoupling(12, zero_subnet)
    with pytest.raises(ValueError, match="IRNCoupling: expected 12 channels"):
        block(torch.zeros(1, 11, 4, 4))
    with pytest.raises(ValueError, match="IRNCoupling: expected 12 channels"):
        block.inverse(torch.zeros(1, 13, 4, 4))
    with pytest.raises(ValueError, match="IRNCoupling: expected input of shape"):
        block(torch.zeros(12, 4, 4))


def test_irn_coupling_checker_dense_block_subnets() -> None:
    torch.manual_seed(0)
    block = IRNCoupling(12, dense_block(growth=4)).double()
    jitter_parameters(block, scale=0.1)  # conv5 starts at zero
    x = torch.randn(2, 12, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    report = assert_bijector(block, x)
    assert min(abs(v) for v in report.logdet) > 1e-3
