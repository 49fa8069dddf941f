"""Speed options compute the same map: channels-last, bf16 sub-networks, torch.compile, helpers."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from flowlearn import IRN
from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.core.memory import inversion_drift
from flowlearn.irn import IRNCoupling, irn_losses
from flowlearn.irn.speed import (
    compile_available,
    compile_subnets,
    configure_backends,
    maybe_compile,
)
from flowlearn.layers.haar import HaarDownsampling
from flowlearn.layers.nets import dense_block

CL = torch.channels_last
ROOT = Path(__file__).resolve().parents[2]


def small_irn(scale: int = 4, dtype: torch.dtype = torch.float64, **options: bool) -> IRN:
    torch.manual_seed(0)
    blocks = [2] * (scale.bit_length() - 1)
    net = IRN(scale, blocks=blocks, growth=8, **options).to(dtype)
    return jitter_parameters(net, scale=0.05, seed=1)  # type: ignore[return-value]


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def grads_of(net: nn.Module, loss: Tensor) -> list[Tensor]:
    net.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


@pytest.mark.parametrize("norm", ["mean", "orthonormal"])
def test_haar_channels_last_same_values_and_layout(norm: str) -> None:
    haar = HaarDownsampling(5, normalization=norm)
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    y, logdet = haar(x)
    y_cl, logdet_cl = haar(x.contiguous(memory_format=CL))
    assert y_cl.is_contiguous(memory_format=CL) and not y_cl.is_contiguous()
    assert torch.equal(y_cl, y) and torch.equal(logdet_cl, logdet)  # same sums, same order
    x_cl, _ = haar.inverse(y_cl)
    assert x_cl.is_contiguous(memory_format=CL)
    assert torch.equal(x_cl, haar.inverse(y)[0])


def test_haar_channels_last_checker() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=CL)
    assert_bijector(HaarDownsampling(3, normalization="mean"), x)


def test_irn_channels_last_weights_layout_and_values() -> None:
    torch.manual_seed(0)
    on = IRN(4, blocks=[1, 1], growth=8)
    torch.manual_seed(0)
    off = IRN(4, blocks=[1, 1], growth=8, channels_last=False)
    w_on, w_off = on.operations[1].F.conv2.weight, off.operations[1].F.conv2.weight
    assert w_on.is_contiguous(memory_format=CL) and not w_on.is_contiguous()
    assert w_off.is_contiguous()
    for (k, a), (k2, b) in zip(on.state_dict().items(), off.state_dict().items()):
        assert k == k2 and torch.equal(a, b)  # same seeded initialisation, same keys
    on.channels_last = False  # switching converts the weights back
    assert on.operations[1].F.conv2.weight.is_contiguous() and not on.channels_last


@pytest.mark.parametrize("memory_saving", [False, True], ids=["plain", "memory_saving"])
def test_irn_channels_last_matches_contiguous(memory_saving: bool) -> None:
    ref = small_irn(channels_last=False)
    net = copy.deepcopy(ref)
    net.channels_last, net.memory_saving = True, memory_saving
    hr = rand(2, 3, 16, 16).requires_grad_(True)
    z = torch.randn(2, 45, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    results = []
    for model in (ref, net):
        y, logdet = model(hr)
        x, logdet_inv = model.inverse(model.join(y[:, :3], z))
        assert y.is_contiguous() and x.is_contiguous()  # callers get ordinary tensors back
        loss = (y**2).sum() + (x - hr).abs().sum() - logdet.sum() + logdet_inv.sum()
        results.append((y.detach(), x.detach(), logdet.detach(), grads_of(model, loss)))
    (y0, x0, ld0, g0), (y1, x1, ld1, g1) = results
    torch.testing.assert_close(y1, y0, atol=1e-12, rtol=0)
    torch.testing.assert_close(x1, x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld1, ld0, atol=1e-9, rtol=0)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, atol=1e-9 * max(1.0, float(a.abs().max())), rtol=0)


def test_irn_channels_last_float32_roundoff_only() -> None:
    ref = small_irn(dtype=torch.float32, channels_last=False)
    net = copy.deepcopy(ref)
    net.channels_last = True
    hr = rand(2, 3, 32, 32, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(net(hr)[0], ref(hr)[0], atol=1e-5, rtol=0)


def test_irn_coupling_bf16_keeps_exponent_and_logdet_in_float32() -> None:
    torch.manual_seed(0)
    block = jitter_parameters(IRNCoupling(12, dense_block(8), bf16=True), scale=0.05)
    seen: list[torch.dtype] = []
    block.H.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    x = torch.randn(2, 12, 8, 8)
    y, logdet = block(x)
    assert seen == [torch.bfloat16]  # the sub-network ran in bfloat16 ...
    assert block._shift_and_log_scale(x[:, :3])[1].dtype == torch.float32  # s: cast back
    assert y.dtype == logdet.dtype == torch.float32
    with torch.no_grad():
        x_back, logdet_inv = block.inverse(y)
    assert float((x_back - x).abs().max()) < 1e-2
    assert float((logdet + logdet_inv).abs().max()) < 1e-2 * float(logdet.abs().max()) + 1e-3


def test_irn_bf16_close_to_float32() -> None:
    ref = small_irn(dtype=torch.float32)
    net = copy.deepcopy(ref)
    net.bf16 = True
    assert all(op.bf16 for op in net.operations if isinstance(op, IRNCoupling))
    hr = rand(2, 3, 16, 16, dtype=torch.float32)
    with torch.no_grad():
        y_ref, ld_ref = ref(hr)
        y, ld = net(hr)
        hr_back = net.inverse(y)[0]
    assert y.dtype == ld.dtype == torch.float32
    assert float((y - y_ref).abs().max()) < 2e-2
    assert float((ld - ld_ref).abs().max()) < 1.0  # of |log-det| ~ 1e3 (Haar: -CHW ln 2 …)
    assert float((hr_back - hr).abs().max()) < 1e-2


def test_irn_bf16_memory_saving_recomputes_in_bf16() -> None:
    plain = small_irn(2, dtype=torch.float32, bf16=True)
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    hr = rand(2, 3, 8, 8, dtype=torch.float32)
    grads = [grads_of(m, (m(hr)[0] ** 2).sum()) for m in (plain, saving)]
    for a, b in zip(*grads):  # autocast also runs when layers are recomputed in backward
        torch.testing.assert_close(b, a, atol=2e-2 * max(1.0, float(a.abs().max())), rtol=0)


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


def _benchmark_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("irn_speed", ROOT / "benchmarks/irn_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["irn_speed"] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_plain_mode_computes_the_same_map() -> None:
    bench = _benchmark_module()
    net = small_irn(4, channels_last=False)
    plain = bench.PlainIRN(copy.deepcopy(net))
    hr = rand(2, 3, 16, 16)
    y, logdet = net(hr)
    y_plain, logdet_plain = plain(hr)
    torch.testing.assert_close(y_plain, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet_plain, logdet, atol=1e-9, rtol=0)
    x_plain, ld_inv_plain = plain.inverse(y)
    x, ld_inv = net.inverse(y)
    torch.testing.assert_close(x_plain, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld_inv_plain, ld_inv, atol=1e-9, rtol=0)
    lr_ref = torch.nn.functional.avg_pool2d(hr, 4)
    z = torch.randn(2, 45, 4, 4, dtype=torch.float64)
    loss_plain = irn_losses(plain, hr, lr_ref, z=z).total  # type: ignore[arg-type]
    torch.testing.assert_close(loss_plain, irn_losses(net, hr, lr_ref, z=z).total)


def test_benchmark_pools_processes_keeping_rounds_paired() -> None:
    bench = _benchmark_module()

    def run(plain: list[float], default: list[float]) -> dict[str, Any]:
        def mode(steps: list[float]) -> dict[str, Any]:
            return {"train_steps_s": steps, "infer_runs_s": [0.5], "train_step_s": steps[0]}

        return {"plain": mode(plain), "default": mode(default)}

    pooled = bench.pooled_time([run([1.0, 3.0], [0.5, 1.2]), run([2.0, 2.0], [1.0, 0.8])])
    assert pooled["plain"]["train_steps_s"] == [1.0, 3.0, 2.0, 2.0]  # process order
    assert pooled["default"]["train_steps_s"] == [0.5, 1.2, 1.0, 0.8]  # same rounds
    assert pooled["plain"]["train_step_s"] == 2.0  # median of all four steps
    assert pooled["default"]["train_step_min_s"] == 0.5
    assert pooled["plain"]["train_step_s_per_process"] == [1.0, 2.0]
