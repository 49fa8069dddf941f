"""Backpropagation by inversion gives ordinary backprop's gradients and stores far less."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from flowlearn import (
    AffineCoupling,
    FlowSequential,
    HaarDownsampling,
    InvertibleConv1x1,
    Squeeze,
    nets,
)
from flowlearn.checks import jitter_parameters
from flowlearn.core.memory import run_sequence
from flowlearn.irn import IRN


def _realnvp() -> FlowSequential:
    torch.manual_seed(0)
    conv = nets.conv_net(hidden=8)
    flow = FlowSequential(
        AffineCoupling(3, conv, mask="checkerboard", parity=0),
        AffineCoupling(3, conv, mask="checkerboard", parity=1),
        Squeeze(),
        AffineCoupling(12, conv, parity=0),
        InvertibleConv1x1(12),
        AffineCoupling(12, conv, parity=1),
        HaarDownsampling(12),
    )
    return jitter_parameters(flow, scale=0.1)


def _loss(y: Tensor, logdet: Tensor) -> Tensor:
    return (y**2).sum() * 0.5 - logdet.sum() + (y[:, :1] ** 3).sum()


def _grads(flow: FlowSequential, x: Tensor, reverse: bool) -> list[Tensor]:
    flow.zero_grad()
    x = x.clone().requires_grad_(True)
    y, logdet = flow.inverse(x) if reverse else flow(x)
    _loss(y, logdet).backward()
    assert x.grad is not None
    return [x.grad] + [p.grad for p in flow.parameters() if p.grad is not None]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_memory_saving_realnvp_gradients_equal(dtype: torch.dtype, tol: float, reverse: bool):
    plain = _realnvp().to(dtype)
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    shape = (2, 48, 2, 2) if reverse else (2, 3, 8, 8)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    g_plain, g_saving = _grads(plain, x, reverse), _grads(saving, x, reverse)
    assert len(g_plain) == len(g_saving) == 1 + sum(1 for _ in plain.parameters())
    for a, b in zip(g_plain, g_saving):
        scale = max(1.0, float(a.abs().max()))
        assert float((a - b).abs().max()) <= tol * scale


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_memory_saving_irn_gradients_equal(dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    plain = jitter_parameters(IRN(4, blocks=[2, 2], growth=8), scale=0.02).to(dtype)
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=dtype)
    z = torch.randn(2, 45, 4, 4, generator=torch.Generator().manual_seed(3), dtype=dtype)
    grads = []
    for model in (plain, saving):
        model.zero_grad()
        y, _ = model(hr)
        lr, _ = model.split(y)
        rec, _ = model.inverse(model.join(lr, z))
        ((y[:, 3:] ** 2).sum() + (rec - hr).abs().sum() + (lr**2).sum()).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert float((a - b).abs().max()) <= tol * max(1.0, float(a.abs().max()))


def _saved_bytes(flow: FlowSequential, x: Tensor) -> int:
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(*flow(x))  # what the forward pass keeps for the backward pass
    loss.backward()
    return total


def test_memory_saving_stores_less_and_does_not_grow_with_depth() -> None:
    x = torch.randn(2, 12, 16, 16)

    def deep(depth: int, saving: bool) -> FlowSequential:
        torch.manual_seed(0)
        layers = [AffineCoupling(12, nets.conv_net(16), parity=i % 2) for i in range(depth)]
        return FlowSequential(*layers, memory_saving=saving)

    plain4, plain8 = _saved_bytes(deep(4, False), x), _saved_bytes(deep(8, False), x)
    saving4, saving8 = _saved_bytes(deep(4, True), x), _saved_bytes(deep(8, True), x)
    assert plain8 > 1.8 * plain4  # ordinary backprop stores activations of every layer
    assert saving8 == saving4  # by inversion: only the chain's output
    assert saving8 < 0.1 * plain8


def test_run_sequence_without_grad_is_plain() -> None:
    flow = _realnvp()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y1, ld1 = run_sequence(list(flow), x, memory_saving=True)
    y2, ld2 = flow(x)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(ld1, ld2)
