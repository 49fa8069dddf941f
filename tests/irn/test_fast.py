"""The fast arrangements compute the paper form's map: values, log-dets and gradients."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from flowlearn import IRN
from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.irn import IRNLosses, irn_losses
from flowlearn.irn.block import IRNCoupling
from flowlearn.irn.checkpoint import load, save
from flowlearn.irn.fast import (
    GROUPED_PIXELS,
    FastDenseBlock,
    FastHaarDownsampling,
    FastIRN,
    FastIRNCoupling,
    accelerate,
    dense_blocks_on_one_input,
    irn_backward,
    is_accelerated,
    paper_form,
)
from flowlearn.layers.haar import HaarDownsampling
from flowlearn.layers.nets import DenseBlock, dense_block
from tests.conftest import irn_reference, tiny_irn

CL = torch.channels_last


def small_irn(
    scale: int = 4, dtype: torch.dtype = torch.float64, growth: int = 8, **options: Any
) -> IRN:
    torch.manual_seed(0)
    blocks = [2] * (scale.bit_length() - 1)
    net = IRN(scale, blocks=blocks, growth=growth, **options).to(dtype)
    return jitter_parameters(net, scale=0.05, seed=1)  # type: ignore[return-value]


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def grads_of(net: nn.Module, loss: Tensor) -> list[Tensor]:
    net.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def both_directions(net: IRN, hr: Tensor, z: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Forward and inverse outputs and log-dets, and the parameter gradients of a loss of all."""
    y, logdet = net(hr)
    x, logdet_inv = net.inverse(net.join(y[:, : net.channels], z))
    loss = (y**2).sum() + ((x - hr) ** 2).sum() - logdet.sum() + logdet_inv.sum()
    grads = grads_of(net, loss)
    return [t.detach() for t in (y, x, logdet, logdet_inv)], grads


def assert_same_map(
    paper: IRN,
    fast: IRN,
    hr: Tensor,
    z: Tensor,
    atol: float,
    grad_rtol: float,
    per_tensor: bool = True,
) -> None:
    (y0, x0, ld0, li0), g0 = both_directions(paper, hr, z)
    (y1, x1, ld1, li1), g1 = both_directions(fast, hr, z)
    assert y1.is_contiguous() and x1.is_contiguous()  # callers get ordinary tensors back
    torch.testing.assert_close(y1, y0, atol=atol, rtol=0)
    torch.testing.assert_close(x1, x0, atol=atol, rtol=0)
    scale = max(1.0, float(ld0.abs().max()))  # the log-det sums CHW terms per sample
    torch.testing.assert_close(ld1, ld0, atol=atol * scale, rtol=0)
    torch.testing.assert_close(li1, li0, atol=atol * scale, rtol=0)
    assert len(g0) == len(g1) == len(list(paper.parameters()))
    if per_tensor:
        for a, b in zip(g0, g1):
            scale = max(1.0, float(a.abs().max()))
            torch.testing.assert_close(b, a, atol=grad_rtol * scale, rtol=0)
    else:  # relative 2-norm of the whole gradient
        error = sum(float(((b - a) ** 2).sum()) for a, b in zip(g0, g1)) ** 0.5
        assert error <= grad_rtol * sum(float((a**2).sum()) for a in g0) ** 0.5


# ------------------------------------------------------------------------------- the switch


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("scale", [2, 4], ids=["x2", "x4"])
@pytest.mark.parametrize(
    ("dtype", "atol", "grad_rtol"),
    [(torch.float64, 1e-12, 1e-10), (torch.float32, 2e-5, 2e-4)],
    ids=["float64", "float32"],
)
def test_accelerate_equals_paper_form_with_gradients(
    channels_last: bool, scale: int, dtype: torch.dtype, atol: float, grad_rtol: float
) -> None:
    paper = small_irn(scale, dtype)
    fast = accelerate(copy.deepcopy(paper), channels_last=channels_last)
    hr = rand(2, 3, 16, 16, dtype=dtype)
    z = torch.randn(2, paper.latent_channels, 16 // scale, 16 // scale, dtype=dtype)
    assert_same_map(paper, fast, hr, z, atol, grad_rtol)


def test_accelerate_equals_paper_form_full_size_x2() -> None:
    """Full size, float32. The gradient is compared as a whole: among the ~10^6 LeakyReLU inputs
    one may lie within float32 round-off of the kink, where the two arrangements can take
    different slopes (0.2 or 1), a local difference much larger than round-off elsewhere."""
    torch.manual_seed(0)
    paper = jitter_parameters(IRN(2), scale=0.02, seed=2)  # 8 couplings, growth 32
    fast = accelerate(copy.deepcopy(paper))  # type: ignore[arg-type]
    hr = rand(2, 3, 32, 32, dtype=torch.float32)
    z = torch.randn(2, 9, 16, 16)
    assert_same_map(paper, fast, hr, z, atol=5e-5, grad_rtol=1e-4, per_tensor=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("memory_saving", [False, True], ids=["plain", "memory_saving"])
def test_accelerate_with_memory_saving_equals_paper_form(memory_saving: bool) -> None:
    paper = small_irn(4)
    fast = accelerate(copy.deepcopy(paper))
    fast.memory_saving = memory_saving
    hr = rand(2, 3, 16, 16)
    z = torch.randn(2, 45, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert_same_map(paper, fast, hr, z, atol=1e-12, grad_rtol=1e-9)


def test_accelerate_swaps_classes_keeping_parameters_and_keys() -> None:
    net = small_irn(4)
    params = dict(net.named_parameters())
    keys = list(net.state_dict())
    assert not is_accelerated(net)
    assert accelerate(net) is net and is_accelerated(net)
    assert type(net) is FastIRN
    kinds = {type(m) for m in net.modules()}
    assert {FastHaarDownsampling, FastIRNCoupling, FastDenseBlock} <= kinds
    assert not kinds & {HaarDownsampling, IRNCoupling, DenseBlock}  # exact classes all swapped
    assert all(params[name] is p for name, p in net.named_parameters())  # the same objects
    assert list(net.state_dict()) == keys and keys[0] == "operations.1.F.conv1.weight"
    weight = net.operations[1].F.conv2.weight
    assert weight.is_contiguous(memory_format=CL) and not weight.is_contiguous()
    assert paper_form(net) is net and not is_accelerated(net)
    assert type(net) is IRN and type(net.operations[1].F) is DenseBlock
    assert net.operations[1].F.conv2.weight.is_contiguous()
    assert not any(hasattr(m, "bf16") for m in net.modules())  # no setting left behind
    assert all(params[name] is p for name, p in net.named_parameters())


def test_accelerate_settings_and_enabled_false() -> None:
    net = accelerate(small_irn(2), channels_last=False, bf16=True)
    assert isinstance(net, FastIRN) and not net.channels_last and net.bf16
    assert all(op.bf16 for op in net.operations if isinstance(op, FastIRNCoupling))
    assert net.operations[1].F.conv2.weight.is_contiguous()
    accelerate(net)  # again: the defaults
    assert net.channels_last and not net.bf16
    assert not any(op.bf16 for op in net.operations if isinstance(op, FastIRNCoupling))
    assert accelerate(net, enabled=False) is net and not is_accelerated(net)


def test_accelerate_leaves_other_modules_alone() -> None:
    class MyBlock(DenseBlock):
        pass

    mine = MyBlock(3, 4)
    model = nn.Sequential(mine, nn.Conv2d(4, 4, 3), DenseBlock(4, 2))
    accelerate(model, channels_last=False)
    assert type(mine) is MyBlock and type(model[2]) is FastDenseBlock
    assert is_accelerated(model)


def test_accelerated_irn_passes_the_checker() -> None:
    net = accelerate(small_irn(4))
    report = assert_bijector(net, rand(2, 3, 8, 8))
    assert max(abs(v) for v in report.logdet) > 0


def test_accelerated_irn_matches_the_original_fixture() -> None:
    ref = irn_reference(4)
    net = IRN(4)
    net.load_state_dict({k: v for k, v in ref["state_dict"].items() if "haar" not in k})
    accelerate(net)
    with torch.no_grad():
        y, _ = net(ref["x"])
        x, _ = net.inverse(ref["inverse_in"])
    torch.testing.assert_close(y, ref["forward_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(x, ref["inverse_out"], atol=1e-4, rtol=0)


def test_accelerated_intermediates_equal_the_paper_forms_in_the_ordinary_layout() -> None:
    paper = small_irn(4)
    fast = accelerate(copy.deepcopy(paper))
    hr = rand(2, 3, 8, 8)
    y, logdet, outs = paper.forward_with_intermediates(hr)
    hr_cl = hr.contiguous(memory_format=CL)
    y_fast, logdet_fast, outs_fast = fast.forward_with_intermediates(hr_cl)
    _, _, back = paper.inverse_with_intermediates(y)
    x_fast, _, back_fast = fast.inverse_with_intermediates(y)
    for mine, theirs in zip([y_fast, x_fast, *outs_fast, *back_fast], [y, hr, *outs, *back]):
        assert mine.is_contiguous()  # what the paper form returns, whatever the layers ran on
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet_fast, logdet, atol=1e-9, rtol=0)
    assert len(outs_fast) == len(outs) and len(back_fast) == len(back)


def test_command_line_models_are_accelerated(tmp_path: Path) -> None:
    from flowlearn.irn.cli import _model

    save(small_irn(2, torch.float32), tmp_path / "m.pt")
    args = argparse.Namespace(model=str(tmp_path / "m.pt"), scale=None, device="cpu")
    assert is_accelerated(_model(args))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_accelerated_model_saves_and_loads_like_the_paper_form(tmp_path: Path, suffix: str) -> None:
    paper = small_irn(2, torch.float32)
    fast = accelerate(copy.deepcopy(paper), bf16=True)
    save(fast, tmp_path / f"fast{suffix}")
    back = load(tmp_path / f"fast{suffix}")
    assert type(back) is IRN  # loading gives the paper form
    for (key, a), (key_back, b) in zip(paper.state_dict().items(), back.state_dict().items()):
        assert key == key_back and torch.equal(a, b)


# ------------------------------------------------------------------------------- Haar


@pytest.mark.parametrize("norm", ["mean", "orthonormal"])
def test_fast_haar_channels_last_same_values_and_layout(norm: str) -> None:
    paper = HaarDownsampling(5, normalization=norm)
    fast = accelerate(HaarDownsampling(5, normalization=norm))
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    y, logdet = paper(x)
    y_cl, logdet_cl = fast(x.contiguous(memory_format=CL))
    assert y_cl.is_contiguous(memory_format=CL) and not y_cl.is_contiguous()
    assert torch.equal(y_cl, y) and torch.equal(logdet_cl, logdet)  # same sums, same order
    x_cl, logdet_inv = fast.inverse(y_cl)
    assert x_cl.is_contiguous(memory_format=CL)
    assert torch.equal(x_cl, paper.inverse(y)[0]) and torch.equal(logdet_inv, -logdet)
    assert torch.equal(fast(x)[0], y)  # an ordinary input takes the paper form's path


def test_fast_haar_checker_and_errors() -> None:
    fast = accelerate(HaarDownsampling(3, normalization="mean"))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=CL)
    assert_bijector(fast, x)
    with pytest.raises(ValueError, match="FastHaarDownsampling: expected 3 channels"):
        fast(torch.zeros(1, 4, 4, 4).contiguous(memory_format=CL))


# ------------------------------------------------------------------------------- dense blocks


def dense_block_formula(block: DenseBlock, x: Tensor) -> Tensor:
    """The five convolutions written out with `F.conv2d`, independently of the module."""
    feats = [x]
    for k in range(1, 6):
        conv = getattr(block, f"conv{k}")
        out = nn.functional.conv2d(torch.cat(feats, 1), conv.weight, conv.bias, padding=1)
        feats.append(nn.functional.leaky_relu(out, 0.2) if k < 5 else out)
    return feats[-1]


def _jittered(c_in: int, c_out: int, seed: int) -> DenseBlock:
    torch.manual_seed(seed)
    block = DenseBlock(c_in, c_out, growth=8).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("shapes", [[(3, 9)], [(3, 9), (3, 9)], [(3, 9), (3, 5), (3, 9)]])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("size", [(6, 5), (40, 30)], ids=["grouped", "separate"])
def test_dense_blocks_on_one_input_equal_the_formula_with_gradients(
    shapes: list[tuple[int, int]], layout: torch.memory_format, size: tuple[int, int]
) -> None:
    assert 2 * size[0] * size[1] > GROUPED_PIXELS or size == (6, 5)
    blocks = [_jittered(c_in, c_out, seed) for seed, (c_in, c_out) in enumerate(shapes)]
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(True)
    outs = dense_blocks_on_one_input(blocks, x)
    refs = [dense_block_formula(block, x) for block in blocks]
    for out, ref in zip(outs, refs, strict=True):
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    params = [p for block in blocks for p in block.parameters()]
    weights = [torch.randn_like(ref) for ref in refs]
    grads = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), [x, *params])
    grads_ref = torch.autograd.grad(sum((r * w).sum() for r, w in zip(refs, weights)), [x, *params])
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, atol=1e-12, rtol=0)


def test_fast_dense_block_equals_paper_form() -> None:
    paper = _jittered(5, 7, 0)
    fast = accelerate(copy.deepcopy(paper), channels_last=False)
    assert type(fast) is FastDenseBlock
    x = torch.randn(2, 5, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(fast(x), paper(x), atol=1e-12, rtol=0)


def test_dense_blocks_on_one_input_keeps_each_blocks_slope() -> None:
    a, b = _jittered(3, 9, 0), _jittered(3, 9, 1)
    b.lrelu.negative_slope = 0.1  # no longer the shape of `a`: nothing is shared
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    ya, yb = dense_blocks_on_one_input([a, b], x)
    torch.testing.assert_close(ya, dense_block_formula(a, x), atol=1e-12, rtol=0)
    assert not torch.allclose(yb, dense_block_formula(b, x))  # the formula there uses 0.2
    torch.testing.assert_close(yb, b(x), atol=1e-12, rtol=0)


def test_dense_blocks_on_one_input_rejects_no_blocks_and_wrong_channels() -> None:
    with pytest.raises(ValueError, match="at least one DenseBlock"):
        dense_blocks_on_one_input([], torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        dense_blocks_on_one_input([DenseBlock(3, 9), DenseBlock(4, 9)], torch.randn(1, 3, 4, 4))


# ------------------------------------------------------------------------------- coupling


def test_fast_coupling_dense_blocks_run_together_or_apart_alike() -> None:
    """rho and eta run as one grouped computation unless a hook needs their own calls."""
    torch.manual_seed(0)
    paper = jitter_parameters(IRNCoupling(12, dense_block(growth=4)).double(), scale=0.1)
    block = accelerate(copy.deepcopy(paper), channels_last=False)
    x = torch.randn(2, 12, 4, 4, dtype=torch.float64)
    y_together, logdet_together = block(x)
    torch.testing.assert_close(y_together, paper(x)[0], atol=1e-12, rtol=0)
    x_together = block.inverse(y_together)[0]
    calls: list[str] = []
    block.G.register_forward_hook(lambda m, i, out: calls.append("G"))
    block.H.register_forward_pre_hook(lambda m, i: calls.append("H"))
    y_apart, logdet_apart = block(x)
    assert calls == ["G", "H"]  # hooks fire: the sub-networks were called
    torch.testing.assert_close(y_apart, y_together, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet_apart, logdet_together, atol=1e-12, rtol=0)
    torch.testing.assert_close(block.inverse(y_apart)[0], x_together, atol=1e-12, rtol=0)


def test_fast_coupling_checker_with_other_subnets() -> None:
    torch.manual_seed(0)
    conv = lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1)  # noqa: E731
    block = accelerate(IRNCoupling(6, conv, split=2).double(), channels_last=False)
    assert type(block) is FastIRNCoupling
    assert_bijector(block, torch.randn(2, 6, 4, 4, dtype=torch.float64))


# ------------------------------------------------------------------------------- bfloat16


def test_bf16_coupling_keeps_exponent_and_logdet_in_float32() -> None:
    torch.manual_seed(0)
    paper = jitter_parameters(IRNCoupling(12, dense_block(8)), scale=0.05)
    block = accelerate(copy.deepcopy(paper), bf16=True, channels_last=False)
    seen: list[torch.dtype] = []
    block.H.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    x = torch.randn(2, 12, 8, 8)
    with torch.no_grad():
        y, logdet = block(x)
        y_ref, _ = paper(x)
    assert seen == [torch.bfloat16]  # the sub-network ran in bfloat16 ...
    assert block._shift_and_log_scale(x[:, :3])[1].dtype == torch.float32  # s: cast back
    assert y.dtype == logdet.dtype == torch.float32
    assert 0 < float((y - y_ref).abs().max()) < 2e-2  # rounded, within bfloat16's precision
    with torch.no_grad():
        x_back, logdet_inv = block.inverse(y)
    assert float((x_back - x).abs().max()) < 1e-2
    assert float((logdet + logdet_inv).abs().max()) < 1e-2 * float(logdet.abs().max()) + 1e-3


def test_bf16_irn_close_to_float32() -> None:
    """Stated tolerance: outputs within 2e-2, log-dets within 1 of about 1e3 (float32 paper)."""
    paper = small_irn(dtype=torch.float32)
    net = accelerate(copy.deepcopy(paper), bf16=True)
    hr = rand(2, 3, 16, 16, dtype=torch.float32)
    with torch.no_grad():
        y_ref, ld_ref = paper(hr)
        y, ld = net(hr)
        hr_back = net.inverse(y)[0]
    assert y.dtype == ld.dtype == torch.float32
    assert 0 < float((y - y_ref).abs().max()) < 2e-2
    assert float((ld - ld_ref).abs().max()) < 1.0  # of |log-det| ~ 1e3 (Haar: -CHW ln 2 …)
    assert float((hr_back - hr).abs().max()) < 1e-2


def test_bf16_memory_saving_recomputes_in_bf16() -> None:
    plain = accelerate(small_irn(2, dtype=torch.float32), bf16=True)
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    hr = rand(2, 3, 8, 8, dtype=torch.float32)
    grads = [grads_of(m, (m(hr)[0] ** 2).sum()) for m in (plain, saving)]
    for a, b in zip(*grads):  # autocast also runs when layers are recomputed in backward
        torch.testing.assert_close(b, a, atol=2e-2 * max(1.0, float(a.abs().max())), rtol=0)


# ------------------------------------------------------------------------------- irn_backward


def _gradients(net: IRN, run: Any) -> tuple[IRNLosses, list[torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    losses = run()
    return losses, [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_irn_backward_shards_give_the_gradient_of_the_whole_batch(
    shards: int, dtype: torch.dtype
) -> None:
    net = tiny_irn().to(dtype)
    gen = torch.Generator().manual_seed(5)
    hr, lr_ref = (
        torch.rand(5, 3, 8, 8, generator=gen, dtype=dtype),
        torch.rand(5, 3, 4, 4, dtype=dtype),
    )
    z = torch.randn(5, 9, 4, 4, generator=gen, dtype=dtype)  # 5 samples: shards of unequal size
    whole, expected = _gradients(net, lambda: _backward(irn_losses(net, hr, lr_ref, z=z)))
    parts, grads = _gradients(net, lambda: irn_backward(net, hr, lr_ref, z=z, shards=shards))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for name in ("fit", "distr", "rec", "total"):
        torch.testing.assert_close(
            getattr(parts, name), getattr(whole, name).detach(), rtol=tol, atol=0
        )
    assert max(float((g - e).abs().max() / e.abs().max()) for g, e in zip(grads, expected)) < tol
    assert any(float(e.abs().max()) > 0 for e in expected)


def _backward(losses: IRNLosses) -> IRNLosses:
    losses.total.backward()
    return losses


def test_irn_backward_shards_an_accelerated_memory_saving_irn_too() -> None:
    net = tiny_irn()
    saving = accelerate(IRN(2, blocks=[1], growth=4, memory_saving=True))
    saving.load_state_dict(net.state_dict())
    hr, lr_ref, z = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 4, 4), torch.randn(4, 9, 4, 4)
    _, expected = _gradients(net, lambda: _backward(irn_losses(net, hr, lr_ref, z=z)))
    _, grads = _gradients(saving, lambda: irn_backward(saving, hr, lr_ref, z=z, shards=2))
    assert max(float((g - e).abs().max() / e.abs().max()) for g, e in zip(grads, expected)) < 1e-5


def test_irn_backward_draws_the_latent_irn_losses_would_draw() -> None:
    net = tiny_irn()
    hr, lr_ref = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 4, 4)
    seeded = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    whole, expected = _gradients(
        net, lambda: _backward(irn_losses(net, hr, lr_ref, generator=seeded()))
    )
    parts, grads = _gradients(
        net, lambda: irn_backward(net, hr, lr_ref, generator=seeded(), shards=2)
    )
    torch.testing.assert_close(parts.rec, whole.rec.detach(), rtol=1e-5, atol=0)
    other, _ = _gradients(
        net,
        lambda: irn_backward(net, hr, lr_ref, generator=torch.Generator().manual_seed(8), shards=2),
    )
    assert not torch.equal(other.rec, parts.rec)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_irn_backward_is_reproducible_and_accumulates_like_backward() -> None:
    net = tiny_irn()
    hr, lr_ref, z = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 4, 4), torch.randn(4, 9, 4, 4)
    _, first = _gradients(net, lambda: irn_backward(net, hr, lr_ref, z=z, shards=2))
    _, again = _gradients(net, lambda: irn_backward(net, hr, lr_ref, z=z, shards=2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    irn_backward(net, hr, lr_ref, z=z, shards=2)  # .grad holds one batch's gradient: now two
    for p, g in zip(net.parameters(), first):
        torch.testing.assert_close(p.grad, 2 * g)


def test_irn_backward_gives_the_inputs_their_gradients_as_backward_does() -> None:
    """In float64: the Charbonnier term's slope changes fast where HR and reconstruction nearly
    agree, so float32 round-off of the shards alone can move these gradients by ~1e-5."""
    f64 = torch.float64
    net = tiny_irn(dtype=f64)
    base, lr_ref = torch.rand(4, 3, 8, 8, dtype=f64), torch.rand(4, 3, 4, 4, dtype=f64)

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gain = torch.tensor(0.9, dtype=f64, requires_grad=True)  # hr is made from it: not a leaf
        z = torch.randn(4, 9, 4, 4, generator=torch.Generator().manual_seed(2), dtype=f64)
        z.requires_grad_()
        return gain, base * gain, z

    gain_a, hr_a, z_a = inputs()
    _backward(irn_losses(net, hr_a, lr_ref, z=z_a))
    gain_b, hr_b, z_b = inputs()
    irn_backward(net, hr_b, lr_ref, z=z_b, shards=3)
    assert gain_a.grad is not None and gain_b.grad is not None
    assert z_a.grad is not None and z_b.grad is not None
    torch.testing.assert_close(gain_b.grad, gain_a.grad, rtol=1e-10, atol=0)
    torch.testing.assert_close(z_b.grad, z_a.grad, rtol=1e-10, atol=1e-12)
    assert float(z_a.grad.abs().max()) > 0 and float(gain_a.grad.abs()) > 0

    leaf_a = base.clone().requires_grad_()
    leaf_b = base.clone().requires_grad_()
    _backward(irn_losses(net, leaf_a, lr_ref, z=z_a.detach()))
    irn_backward(net, leaf_b, lr_ref, z=z_a.detach(), shards=2)
    assert leaf_a.grad is not None and leaf_b.grad is not None
    torch.testing.assert_close(leaf_b.grad, leaf_a.grad, rtol=1e-10, atol=1e-12)


def test_irn_backward_restores_the_thread_count_even_when_a_shard_fails() -> None:
    net = tiny_irn()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        irn_backward(net, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 4, 4), shards=2)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="expected lr_ref of shape"):  # each shard raises
            irn_backward(net, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), shards=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_irn_backward_leaves_no_shard_thread_behind() -> None:
    # a shard thread that outlived the call would keep its OpenMP team, which slows every later
    # parallel region of the process (the optimiser's step, other models' training steps)
    import threading

    def shard_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("irn-shard")]

    net = tiny_irn()
    irn_backward(net, torch.rand(3, 3, 8, 8), torch.rand(3, 3, 4, 4), shards=3)
    assert shard_threads() == []
    with pytest.raises(ValueError, match="expected lr_ref of shape"):  # raised in the shards
        irn_backward(net, torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8), shards=3)
    assert shard_threads() == []


@pytest.mark.parametrize(
    ("hr", "lr_ref", "shards", "match"),
    [
        ((2, 3, 8, 8), (2, 3, 4, 4), 0, "shards must be a positive integer, got 0"),
        ((2, 3, 8, 8), (2, 3, 4, 4), 3, r"B >= shards = 3, received HR of shape \(2, 3, 8, 8\)"),
        ((2, 3, 8, 8), (3, 3, 4, 4), 2, r"LR of shape \(3, 3, 4, 4\)"),
    ],
)
def test_irn_backward_rejects_bad_shards_and_batches(
    hr: tuple[int, ...], lr_ref: tuple[int, ...], shards: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        irn_backward(tiny_irn(), torch.rand(hr), torch.rand(lr_ref), shards=shards)


def test_irn_backward_default_is_one_shard_per_cpu_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flowlearn.irn.fast as fast_module

    batches: list[int] = []

    def counted(model: IRN, hr: torch.Tensor, *args: Any, **kwargs: Any) -> IRNLosses:
        batches.append(hr.shape[0])
        return irn_losses(model, hr, *args, **kwargs)

    monkeypatch.setattr(fast_module, "irn_losses", counted)
    net = tiny_irn()
    threads = torch.get_num_threads()
    seen = {}
    try:
        for n_threads, batch in ((2, 4), (1, 4), (2, 1), (3, 2)):
            torch.set_num_threads(n_threads)
            batches.clear()
            irn_backward(net, torch.rand(batch, 3, 8, 8), torch.rand(batch, 3, 4, 4))
            seen[n_threads, batch] = sorted(batches)
    finally:
        torch.set_num_threads(threads)
    assert seen == {(2, 4): [2, 2], (1, 4): [4], (2, 1): [1], (3, 2): [1, 1]}
