"""IRN against reference outputs of the original implementation (shared/fixtures/irn_reference)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from flowlearn import IRN
from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.core import FlowSequential
from flowlearn.irn import IRNCoupling
from flowlearn.layers.haar import HaarDownsampling


def trainable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith("haar_weights")}


def model_for(irn_ref: dict[str, Any], dtype: torch.dtype = torch.float32) -> IRN:
    net = IRN(irn_ref["config"]["scale"])
    net.load_state_dict(trainable(irn_ref["state_dict"]))
    return net.to(dtype)


def test_irn_init_matches_original_seed0(irn_ref: dict[str, Any]) -> None:
    torch.manual_seed(0)
    net = IRN(irn_ref["config"]["scale"])
    official_init = {
        k: torch.zeros_like(v) if ".conv5." in k else v
        for k, v in trainable(irn_ref["state_dict"]).items()
    }
    state = net.state_dict()
    assert list(state) == list(official_init)  # same keys, same order, no Haar filters
    for key, value in official_init.items():
        assert torch.equal(state[key], value), key


def test_irn_forward_matches_fixture_float32(irn_ref: dict[str, Any]) -> None:
    net = model_for(irn_ref)
    with torch.no_grad():
        y, logdet, outputs = net.forward_with_intermediates(irn_ref["x"])
    torch.testing.assert_close(y, irn_ref["forward_out"], atol=1e-5, rtol=0)
    assert len(outputs) == len(irn_ref["forward_intermediates"]) == len(net.operations)
    for i, (mine, theirs) in enumerate(zip(outputs, irn_ref["forward_intermediates"])):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0, msg=f"operation {i}")
    assert logdet.shape == (2,)
    assert abs(logdet.mean().item() - irn_ref["forward_logdet"].item()) < 1e-2


def test_irn_inverse_matches_fixture_float32(irn_ref: dict[str, Any]) -> None:
    net = model_for(irn_ref)
    with torch.no_grad():
        x, logdet = net.inverse(irn_ref["inverse_in"])
    torch.testing.assert_close(x, irn_ref["inverse_out"], atol=1e-4, rtol=0)
    assert abs(logdet.mean().item() - irn_ref["inverse_logdet"].item()) < 1e-2


def test_irn_matches_fixture_float64(irn_ref: dict[str, Any]) -> None:
    net = model_for(irn_ref, torch.float64)
    with torch.no_grad():
        y, logdet = net(irn_ref["x"].double())
        x, logdet_inv = net.inverse(irn_ref["inverse_in"].double())
    torch.testing.assert_close(y, irn_ref["forward_out_f64"], atol=1e-10, rtol=0)
    torch.testing.assert_close(x, irn_ref["inverse_out_f64"], atol=1e-10, rtol=0)
    assert abs(logdet.mean().item() - irn_ref["forward_logdet_f64"].item()) < 1e-8
    assert abs(logdet_inv.mean().item() - irn_ref["inverse_logdet_f64"].item()) < 1e-8


def test_irn_init_outputs_match_fixture(irn_ref: dict[str, Any]) -> None:
    torch.manual_seed(0)
    net = IRN(irn_ref["config"]["scale"])  # the exact original initialisation: only Haar acts
    with torch.no_grad():
        y, logdet = net(irn_ref["x"])
        x, _ = net.inverse(irn_ref["inverse_in"])
    torch.testing.assert_close(y, irn_ref["init_forward_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(x, irn_ref["init_inverse_out"], atol=1e-4, rtol=0)
    assert abs(logdet.mean().item() - irn_ref["init_forward_logdet"].item()) < 1e-2
    # Haar part alone: -C H W ln 2 per level, C H W the input of the level = 3 * 32 * 32
    levels = int(math.log2(irn_ref["config"]["scale"]))
    assert logdet[0].item() == pytest.approx(-levels * 3 * 32 * 32 * math.log(2))


def test_irn_parameter_count(irn_ref: dict[str, Any]) -> None:
    net = model_for(irn_ref)
    expected = {2: 1_667_952, 4: 4_355_136}[irn_ref["config"]["scale"]]  # Table 1: 1.66M, 4.35M
    assert sum(p.numel() for p in net.parameters()) == expected
    assert all(p.requires_grad for p in net.parameters())


def small_irn(scale: int = 2, blocks: list[int] | None = None) -> IRN:
    torch.manual_seed(0)
    net = IRN(scale, blocks=blocks or [2], growth=8).double()
    jitter_parameters(net, scale=0.05, seed=1)  # conv5 starts at zero: make couplings act
    return net


def test_irn_logdet_per_sample() -> None:
    net = small_irn()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, logdet = net(x)
        _, first = net(x[:1])
        _, second = net(x[1:])
    torch.testing.assert_close(logdet, torch.cat((first, second)), atol=1e-10, rtol=0)
    assert abs(logdet[0] - logdet[1]) > 1e-4  # a batch mean would make them equal


def test_irn_checker_small_x2() -> None:
    net = small_irn()
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = assert_bijector(net, x)
    haar_only = -3 * 4 * 4 * math.log(2)
    assert abs(report.logdet[0] - haar_only) > 1e-3  # the couplings contribute


def test_irn_checker_small_x4() -> None:
    net = small_irn(4, [1, 1])
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_bijector(net, x)


def test_irn_operations_layout() -> None:
    net = IRN(4, blocks=[2, 1], growth=4)
    kinds = [type(op).__name__ for op in net.operations]
    assert kinds == [
        "HaarDownsampling",
        "IRNCoupling",
        "IRNCoupling",
        "HaarDownsampling",
        "IRNCoupling",
    ]
    haar = net.operations[3]
    assert isinstance(haar, HaarDownsampling) and haar.channels == 12
    assert haar.normalization == "mean"
    block = net.operations[4]
    assert isinstance(block, IRNCoupling) and (block.channels, block.split) == (48, 3)


def test_irn_default_blocks_and_config() -> None:
    net = IRN(4, growth=2)
    assert net.config == {"scale": 4, "blocks": [8, 8], "clamp": 1.0, "growth": 2, "channels": 3}
    assert len(net.operations) == 18
    twin = IRN(**net.config)
    assert [v.shape for v in twin.state_dict().values()] == [
        v.shape for v in net.state_dict().values()
    ]


def test_irn_bad_scale_raises() -> None:
    with pytest.raises(ValueError, match="scale must be one of 2, 4, 8, got 3"):
        IRN(3)


def test_irn_bad_blocks_raise() -> None:
    with pytest.raises(ValueError, match="blocks must list 2 non-negative"):
        IRN(4, blocks=[8])
    with pytest.raises(ValueError, match="blocks must list 1 non-negative"):
        IRN(2, blocks=[-1])


def test_irn_bad_input_raises() -> None:
    net = IRN(4, blocks=[1, 1], growth=4)
    with pytest.raises(ValueError, match="IRN: expected height and width divisible by 4"):
        net(torch.zeros(1, 3, 36, 30))
    with pytest.raises(ValueError, match="IRN: expected 3 channels"):
        net(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="IRN: expected input of shape"):
        net(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="IRN: expected 48 channels"):
        net.inverse(torch.zeros(1, 12, 2, 2))


def test_irn_split_join_latent_shape() -> None:
    net = IRN(4, blocks=[1, 1], growth=4)
    y = torch.randn(2, 48, 3, 5)
    lr, z = net.split(y)
    assert lr.shape == (2, 3, 3, 5) and z.shape == (2, 45, 3, 5)
    assert torch.equal(net.join(lr, z), y)
    assert net.latent_shape(lr.shape) == (2, 45, 3, 5)
    assert net.latent_shape((3, 7, 7)) == (45, 7, 7)
    with pytest.raises(ValueError, match="expected z of shape"):
        net.join(lr, z[:, :9])
    with pytest.raises(ValueError, match="expected an LR shape"):
        net.latent_shape((2, 4, 3, 5))


def test_irn_downscale_is_8bit() -> None:
    net = small_irn().float()
    lr = net.downscale(torch.rand(2, 3, 8, 8))
    assert lr.shape == (2, 3, 4, 4)
    assert lr.min() >= 0 and lr.max() <= 1
    torch.testing.assert_close(lr * 255, (lr * 255).round(), atol=1e-4, rtol=0)


def test_irn_upscale_sampling() -> None:
    net = small_irn().float()
    lr = torch.rand(2, 3, 4, 4)
    a = net.upscale(lr, generator=torch.Generator().manual_seed(5))
    b = net.upscale(lr, generator=torch.Generator().manual_seed(5))
    c = net.upscale(lr, generator=torch.Generator().manual_seed(6))
    assert a.shape == (2, 3, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    mode = net.upscale(lr, temperature=0.0)
    expected, _ = net.inverse(torch.cat((lr, torch.zeros(2, 9, 4, 4)), dim=1))
    torch.testing.assert_close(mode, expected)


def test_irn_roundtrip_through_split_join() -> None:
    net = small_irn()
    hr = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    lr, z = net.split(net(hr)[0])
    hr_rec, _ = net.inverse(net.join(lr, z))
    torch.testing.assert_close(hr_rec, hr, atol=1e-12, rtol=0)


def test_irn_inverse_intermediates_mirror_forward() -> None:
    net = small_irn(4, [1, 1])
    hr = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    y, _, forward = net.forward_with_intermediates(hr)
    _, _, backward = net.inverse_with_intermediates(y)
    # inverting operation i gives the input of operation i = the output of operation i - 1
    for i, out in enumerate(backward[:-1]):
        torch.testing.assert_close(out, forward[len(forward) - 2 - i], atol=1e-12, rtol=0)
    torch.testing.assert_close(backward[-1], hr, atol=1e-12, rtol=0)


def test_bijectors_are_the_operations_in_order_as_a_fresh_list() -> None:
    net = IRN(4, blocks=[1, 2], growth=4)
    ops = net.bijectors
    assert [type(op).__name__ for op in ops] == [
        "HaarDownsampling",
        "IRNCoupling",
        "HaarDownsampling",
        "IRNCoupling",
        "IRNCoupling",
    ]
    assert all(a is b for a, b in zip(ops, net.operations)) and len(ops) == len(net.operations)
    ops.clear()  # a copy: the model keeps its operations
    assert len(net.bijectors) == 5


def test_irn_is_a_flow_sequential_named_operations() -> None:
    net = small_irn(4, [1, 1])
    assert isinstance(net, FlowSequential)
    assert list(net) == list(net.operations) and len(net) == 4
    assert all(name.startswith("operations.") for name, _ in net.named_parameters())
    assert not hasattr(net, "layers")  # one container, under the original code's name
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    chain = FlowSequential(*net.operations)  # the same layers in the plain container
    y, logdet = net(x)
    y_chain, logdet_chain = chain(x)
    assert torch.equal(y, y_chain) and torch.equal(logdet, logdet_chain)
    assert [k.replace("layers.", "operations.", 1) for k in chain.state_dict()] == list(
        net.state_dict()
    )


def test_flow_sequential_name_prefixes_the_state_dict() -> None:
    torch.manual_seed(0)
    flow = FlowSequential(IRNCoupling(6, lambda i, o: torch.nn.Conv2d(i, o, 1)), name="steps")
    assert list(flow.state_dict())[:2] == ["steps.0.F.weight", "steps.0.F.bias"]
    assert flow[0] is flow.steps[0]


def test_irn_memory_saving_same_gradients() -> None:
    net = small_irn(4, [1, 1])
    saving = IRN(4, blocks=[1, 1], growth=8, memory_saving=True).double()
    saving.load_state_dict(net.state_dict())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    grads = []
    for model in (net, saving):
        y, logdet = model(x)
        grads.append(torch.autograd.grad((y**2).sum() + logdet.sum(), list(model.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


def test_irn_has_no_weight_io() -> None:
    """Loading and saving are `flowlearn.irn.checkpoint.load` / `save`, outside the model."""
    for name in ("from_official", "to_official", "save", "load", "pretrained"):
        assert not hasattr(IRN, name), name
