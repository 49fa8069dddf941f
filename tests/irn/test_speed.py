"""Speed settings: backends, torch.compile of the sub-networks, inversion drift."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from flowlearn import IRN
from flowlearn.checks import jitter_parameters
from flowlearn.core.memory import inversion_drift
from flowlearn.irn import irn_losses
from flowlearn.irn.speed import (
    compile_available,
    compile_subnets,
    configure_backends,
    maybe_compile,
)

CL = torch.channels_last


def small_irn(scale: int = 4, dtype: torch.dtype = torch.float64) -> IRN:
    torch.manual_seed(0)
    blocks = [2] * (scale.bit_length() - 1)
    net = IRN(scale, blocks=blocks, growth=8).to(dtype)
    return jitter_parameters(net, scale=0.05, seed=1)  # type: ignore[return-value]


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def grads_of(net: nn.Module, loss: Tensor) -> list[Tensor]:
    net.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def test_configure_backends_returns_previous_values() -> None:
    threads, bench = torch.get_num_threads(), torch.backends.cudnn.benchmark
    previous = configure_backends(threads=1, cudnn_benchmark=not bench, flush_denormal=True)
    try:
        assert torch.get_num_threads() == 1
        assert torch.backends.cudnn.benchmark is (not bench)
        assert previous == {"threads": threads, "cudnn_benchmark": bench, "flush_denormal": False}
        assert torch.tensor([1e-40]).mul(1.0).item() == 0.0  # denormals flushed
    finally:
        configure_backends(**previous)
    assert torch.get_num_threads() == threads and torch.backends.cudnn.benchmark is bench
    assert torch.tensor([1e-40]).mul(1.0).item() != 0.0


def test_configure_backends_bad_threads_raises() -> None:
    with pytest.raises(ValueError, match="threads must be positive"):
        configure_backends(threads=0)


def test_maybe_compile_falls_back_without_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert "C++ compiler" in str(compile_available("cpu"))
    net = nn.Linear(3, 2)
    with pytest.warns(RuntimeWarning, match="without torch.compile"):
        assert maybe_compile(net) is False
    with pytest.warns(RuntimeWarning, match="without torch.compile"):
        assert compile_subnets(small_irn(2)) == 0
    assert net(torch.ones(1, 3)).shape == (1, 2)  # still an ordinary module


def test_compile_subnets_eager_backend_same_map() -> None:
    ref = small_irn(2, dtype=torch.float32)
    net = copy.deepcopy(ref)
    assert compile_subnets(net, backend="eager") == 6  # F, G, H of 2 couplings
    assert list(net.state_dict()) == list(ref.state_dict())  # compiled in place
    hr = rand(1, 3, 8, 8, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(net(hr)[0], ref(hr)[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(net.inverse(ref(hr)[0])[0], hr, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(compile_available("cpu") is not None, reason="no C++ compiler")
def test_compile_subnets_inductor_cpu_trains() -> None:
    ref = small_irn(2, dtype=torch.float32)
    net = copy.deepcopy(ref)
    compile_subnets(net)
    hr = rand(2, 3, 8, 8, dtype=torch.float32)
    lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
    z = torch.randn(2, 9, 4, 4, generator=torch.Generator().manual_seed(0))
    g_ref = grads_of(ref, irn_losses(ref, hr, lr_ref, z=z).total)
    g = grads_of(net, irn_losses(net, hr, lr_ref, z=z).total)
    for a, b in zip(g_ref, g):
        torch.testing.assert_close(b, a, atol=1e-4 * max(1.0, float(a.abs().max())), rtol=0)


def test_inversion_drift_is_roundoff() -> None:
    net = small_irn(4)
    ops = list(net.operations)
    errors64 = inversion_drift(ops, rand(2, 3, 16, 16).contiguous(memory_format=CL))
    assert len(errors64) == len(ops) == 6
    assert max(errors64) < 1e-13
    errors32 = inversion_drift([op.float() for op in ops], rand(2, 3, 16, 16).float())
    assert 0 < max(errors32) < 1e-5
