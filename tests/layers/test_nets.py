from __future__ import annotations

import pytest
import torch
from torch import nn

from flowlearn.layers.nets import (
    MLP,
    ConvNet,
    DenseBlock,
    conv_net,
    dense_block,
    mlp,
)
from tests.conftest import shared_path


def dense_block_param_count(c_in: int, c_out: int, g: int = 32) -> int:
    """DenseBlock of the original codes/models/modules/Subnet_constructor.py: 5 convs 3×3.

    sum_{i=0..3} ((c_in + g i) 9 g + g) + ((c_in + 4g) 9 c_out + c_out).
    """
    inner = sum((c_in + g * i) * 9 * g + g for i in range(4))
    return inner + (c_in + 4 * g) * 9 * c_out + c_out


@pytest.mark.parametrize(
    ("c_in", "c_out", "expected"),
    [(9, 3, 69_494), (3, 9, 69_500), (45, 3, 111_938), (3, 45, 111_980), (189, 3, 281_714)],
)
def test_dense_block_param_count(c_in: int, c_out: int, expected: int) -> None:
    block = DenseBlock(c_in, c_out)
    n = sum(p.numel() for p in block.parameters() if p.requires_grad)
    assert n == expected == dense_block_param_count(c_in, c_out)


@pytest.mark.parametrize("growth", [4, 32])
def test_dense_block_param_count_growth(growth: int) -> None:
    block = DenseBlock(5, 7, growth=growth)
    assert sum(p.numel() for p in block.parameters()) == dense_block_param_count(5, 7, growth)


def test_dense_block_state_dict_keys_and_shapes() -> None:
    sd = DenseBlock(9, 3).state_dict()
    assert list(sd) == [f"conv{k}.{p}" for k in range(1, 6) for p in ("weight", "bias")]
    assert [tuple(sd[f"conv{k}.weight"].shape) for k in range(1, 6)] == [
        (32, 9, 3, 3),
        (32, 41, 3, 3),
        (32, 73, 3, 3),
        (32, 105, 3, 3),
        (3, 137, 3, 3),
    ]


def test_dense_block_zero_at_init() -> None:
    block = DenseBlock(6, 4)
    assert torch.count_nonzero(block.conv5.weight) == 0
    assert block.conv5.bias is not None and torch.count_nonzero(block.conv5.bias) == 0
    out = block(torch.randn(2, 6, 5, 7))
    assert out.shape == (2, 4, 5, 7)
    assert torch.count_nonzero(out) == 0
    # conv1..conv4 are not zero and their biases are
    for k in range(1, 5):
        conv = getattr(block, f"conv{k}")
        assert torch.count_nonzero(conv.weight) == conv.weight.numel()
        assert torch.count_nonzero(conv.bias) == 0


def test_dense_block_init_rng_order() -> None:
    # the documented order of random draws, written out independently of the class
    torch.manual_seed(123)
    convs = [nn.Conv2d(5 + 8 * k, 8, 3, padding=1) for k in range(4)]
    convs.append(nn.Conv2d(5 + 32, 2, 3, padding=1))
    with torch.no_grad():
        for conv in convs[:4]:
            nn.init.xavier_normal_(conv.weight)
            conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        nn.init.kaiming_normal_(convs[4].weight, a=0, mode="fan_in")
        convs[4].weight.mul_(0.0)
        nn.init.zeros_(convs[4].bias)  # type: ignore[arg-type]
    next_draw = torch.rand(3)

    torch.manual_seed(123)
    block = DenseBlock(5, 2, growth=8)
    for k, conv in enumerate(convs, start=1):
        assert torch.equal(getattr(block, f"conv{k}").weight, conv.weight)
        assert torch.equal(getattr(block, f"conv{k}").bias, conv.bias)  # type: ignore[arg-type]
    # the global random state ends where the original construction leaves it
    assert torch.equal(torch.rand(3), next_draw)


def test_dense_block_matches_irn_reference_init() -> None:
    # the fixture's conv1..conv4 are the official seed-0 initialisation; F, G, H of the first
    # coupling (12 channels, split 3/9) are built right after torch.manual_seed(0)
    path = shared_path("fixtures", "irn_reference", "irn_x4_seed0.pt")
    sd = torch.load(path, weights_only=True)["state_dict"]
    torch.manual_seed(0)
    blocks = {"F": DenseBlock(9, 3), "G": DenseBlock(3, 9), "H": DenseBlock(3, 9)}
    for name, block in blocks.items():
        for key, value in block.state_dict().items():
            ref = sd[f"operations.1.{name}.{key}"]
            if key.startswith("conv5."):
                assert torch.count_nonzero(value) == 0  # the fixture perturbs conv5 only
                assert value.shape == ref.shape
            else:
                assert torch.equal(value, ref), f"{name}.{key}"


def test_dense_block_does_not_modify_input() -> None:
    block = DenseBlock(3, 3)
    nn.init.normal_(block.conv5.weight, std=0.1)
    x = torch.randn(2, 3, 4, 4)
    x_before = x.clone()
    out = block(x)
    assert torch.equal(x, x_before)
    assert torch.count_nonzero(out) > 0


def dense_block_formula(block: DenseBlock, x: torch.Tensor) -> torch.Tensor:
    """The dense block as written in its docstring: concatenate, then convolve, five times."""
    feats = [x]
    for k in range(1, 6):
        conv = getattr(block, f"conv{k}")
        out = nn.functional.conv2d(torch.cat(feats, 1), conv.weight, conv.bias, padding=1)
        feats.append(nn.functional.leaky_relu(out, 0.2) if k < 5 else out)
    return feats[-1]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_dense_block_is_the_formula_with_gradients(layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    block = DenseBlock(3, 9, growth=8).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))  # conv5 starts at zero: make every term act
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(True)
    out, ref = block(x), dense_block_formula(block, x)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert float(ref.detach().abs().max()) > 0.1
    w = torch.randn_like(ref)
    wrt = [x, *block.parameters()]
    grads = torch.autograd.grad((out * w).sum(), wrt)
    for grad, grad_ref in zip(grads, torch.autograd.grad((ref * w).sum(), wrt), strict=True):
        torch.testing.assert_close(grad, grad_ref, atol=1e-12, rtol=0)
    slope = nn.functional.leaky_relu(torch.tensor([-1.0]), block.lrelu.negative_slope)
    assert slope.item() == pytest.approx(-0.2)  # the docstring's lrelu(v) = max(v, 0.2 v)


def test_dense_block_gradients_flow_to_input() -> None:
    block = DenseBlock(3, 2, growth=4)
    nn.init.normal_(block.conv5.weight, std=0.1)
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    block(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("net", "x"),
    [
        (MLP(3, 5), torch.randn(4, 3)),
        (MLP(3, 5, depth=1, hidden=7), torch.randn(1, 3)),
        (ConvNet(3, 6), torch.randn(2, 3, 5, 4)),
        (ConvNet(1, 2, kernel_size=5), torch.randn(1, 1, 6, 3)),
    ],
)
def test_subnet_zero_init_outputs_zero(net: nn.Module, x: torch.Tensor) -> None:
    out = net(x)
    assert out.shape == (x.shape[0], net.c_out, *x.shape[2:])
    assert torch.count_nonzero(out) == 0


def test_mlp_depth_and_hidden() -> None:
    net = MLP(3, 5, hidden=7, depth=3, zero_init=False)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 7), (7, 7), (7, 7), (7, 5)]
    assert torch.count_nonzero(net(torch.randn(2, 3))) > 0


def test_convnet_not_zero_without_zero_init() -> None:
    net = ConvNet(2, 3, hidden=4, zero_init=False)
    assert torch.count_nonzero(net(torch.randn(1, 2, 3, 3))) > 0


def test_factories_build_the_right_modules() -> None:
    m = mlp(hidden=8, depth=3)(4, 6)
    assert isinstance(m, MLP) and (m.c_in, m.c_out) == (4, 6)
    assert len([x for x in m.modules() if isinstance(x, nn.Linear)]) == 4
    c = conv_net(hidden=8)(3, 6)
    assert isinstance(c, ConvNet) and c.net[0].out_channels == 8
    d = dense_block(growth=16)(3, 9)
    assert isinstance(d, DenseBlock) and d.conv1.out_channels == 16
    assert d.conv5.in_channels == 3 + 4 * 16


@pytest.mark.parametrize(
    ("net", "x", "match"),
    [
        (MLP(3, 2), torch.randn(2, 3, 4, 4), r"MLP: expected input of shape \(B, D\)"),
        (MLP(3, 2), torch.randn(2, 4), r"MLP: expected 3 channels.*received shape \(2, 4\)"),
        (ConvNet(3, 2), torch.randn(2, 3), r"ConvNet: expected input of shape \(B, C, H, W\)"),
        (DenseBlock(3, 2), torch.randn(1, 2, 4, 4), r"DenseBlock: expected 3 channels"),
    ],
)
def test_subnet_bad_input_raises(net: nn.Module, x: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        net(x)


def test_subnet_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvNet(2, 2, kernel_size=2)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        mlp(depth=0)
    with pytest.raises(ValueError, match="growth"):
        DenseBlock(3, 3, growth=0)
