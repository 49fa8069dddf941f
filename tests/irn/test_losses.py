"""IRN losses against the reference values of the original implementation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flowlearn.irn import IRN, IRNLosses, irn_backward, irn_losses, quantize
from tests.conftest import tiny_irn


def model_for(irn_ref: dict[str, Any]) -> IRN:
    net = IRN(irn_ref["config"]["scale"])
    net.load_state_dict({k: v for k, v in irn_ref["state_dict"].items() if "haar" not in k})
    return net


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return abs(a.item() - b.item()) <= rtol * abs(b.item())


def test_quantize_forward_values() -> None:
    x = torch.tensor([-0.3, 0.0, 0.5, 0.3, 1.0, 1.2])
    q = quantize(x)
    assert (q * 255).round().tolist() == [0.0, 0.0, 128.0, 76.0, 255.0, 255.0]
    assert torch.equal(q, torch.round(x.clamp(0, 1) * 255) / 255)


def test_quantize_straight_through_gradient() -> None:
    x = torch.tensor([-0.3, 0.5, 1.2], requires_grad=True)
    (quantize(x) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [1.0, 2.0, 3.0]  # identity, also where the clamp is active


def test_quantize_matches_fixture(irn_ref: dict[str, Any]) -> None:
    lr = irn_ref["forward_out"][:, :3]
    assert torch.equal(quantize(lr), irn_ref["loss_lr_quantized"])


def test_irn_losses_match_fixture(irn_ref: dict[str, Any]) -> None:
    net = model_for(irn_ref)
    losses = irn_losses(net, irn_ref["x"], irn_ref["lr_ref_bicubic"], z=irn_ref["z_sample"])
    assert isinstance(losses, IRNLosses)
    assert close(losses.fit, irn_ref["loss_l_forw_fit"])
    assert close(losses.distr, irn_ref["loss_l_forw_ce"])
    assert close(losses.rec, irn_ref["loss_l_back_rec"])
    assert close(losses.total, irn_ref["loss_total"])
    torch.testing.assert_close(losses.total, losses.fit + losses.rec + losses.distr)

    losses.total.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))  # type: ignore[arg-type]
    assert close(norm, irn_ref["loss_grad_norm_before_clip"], rtol=1e-4)


def test_irn_losses_reconstruction_matches_fixture(irn_ref: dict[str, Any]) -> None:
    net = model_for(irn_ref)
    with torch.no_grad():
        lr = net.split(net(irn_ref["x"])[0])[0]
        hr, _ = net.inverse(net.join(quantize(lr), irn_ref["z_sample"]))
    torch.testing.assert_close(hr, irn_ref["loss_back_recon"], atol=1e-4, rtol=0)


def test_irn_losses_default_lambda_fit_is_scale_squared() -> None:
    net = tiny_irn()
    hr = torch.rand(2, 3, 8, 8)
    lr_ref = torch.rand(2, 3, 4, 4)
    z = torch.randn(2, 9, 4, 4)
    default = irn_losses(net, hr, lr_ref, z=z)
    one = irn_losses(net, hr, lr_ref, z=z, lambda_fit=1.0, lambda_rec=2.0, lambda_ce=3.0)
    torch.testing.assert_close(default.fit, 4 * one.fit)
    torch.testing.assert_close(2 * default.rec, one.rec)
    torch.testing.assert_close(3 * default.distr, one.distr)


def test_irn_losses_per_sample_sums_batch_mean() -> None:
    net = tiny_irn()
    hr = torch.rand(2, 3, 8, 8)
    lr_ref = torch.rand(2, 3, 4, 4)
    z = torch.randn(2, 9, 4, 4)
    both = irn_losses(net, hr, lr_ref, z=z)
    first = irn_losses(net, hr[:1], lr_ref[:1], z=z[:1])
    second = irn_losses(net, hr[1:], lr_ref[1:], z=z[1:])
    for name in ("fit", "distr", "rec", "total"):
        expected = (getattr(first, name) + getattr(second, name)) / 2
        torch.testing.assert_close(getattr(both, name), expected)
    # Charbonnier: sum over pixels of sqrt(d^2 + 1e-6) >= 1e-3 per pixel, not a per-pixel mean
    assert both.rec.item() >= 3 * 8 * 8 * 1e-3


def test_irn_losses_sampled_z_uses_generator() -> None:
    net = tiny_irn()
    hr, lr_ref = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 4, 4)
    a = irn_losses(net, hr, lr_ref, generator=torch.Generator().manual_seed(1))
    b = irn_losses(net, hr, lr_ref, generator=torch.Generator().manual_seed(1))
    c = irn_losses(net, hr, lr_ref, generator=torch.Generator().manual_seed(2))
    z = torch.randn(2, 9, 4, 4, generator=torch.Generator().manual_seed(1))
    explicit = irn_losses(net, hr, lr_ref, z=z)
    assert torch.equal(a.rec, b.rec) and torch.equal(a.rec, explicit.rec)
    assert not torch.equal(a.rec, c.rec)


def test_irn_losses_reconstruction_gradient_passes_quantizer() -> None:
    # d rec / d hr has a direct term and a term through the forward pass, Q and the inverse;
    # a quantiser without the straight-through gradient would leave only the direct term
    net = tiny_irn()
    hr = torch.rand(2, 3, 8, 8, requires_grad=True)
    lr_ref, z = torch.rand(2, 3, 4, 4), torch.randn(2, 9, 4, 4)
    irn_losses(net, hr, lr_ref, z=z, lambda_fit=0.0, lambda_ce=0.0).total.backward()
    assert hr.grad is not None

    hr2 = hr.detach().clone().requires_grad_(True)
    lr = net.split(net(hr2)[0])[0]
    lr_st = lr + (torch.round(lr.clamp(0, 1) * 255) / 255 - lr).detach()  # straight-through
    rec_hr, _ = net.inverse(net.join(lr_st, z))
    rec = torch.sqrt((hr2 - rec_hr) ** 2 + 1e-6).flatten(1).sum(1).mean()
    rec.backward()
    assert hr2.grad is not None
    torch.testing.assert_close(hr.grad, hr2.grad)

    diff = hr.detach() - rec_hr.detach()
    direct_only = diff / torch.sqrt(diff**2 + 1e-6) / 2  # batch mean over B = 2
    assert (hr.grad - direct_only).abs().max() > 1e-3


def test_irn_losses_wrong_lr_ref_raises() -> None:
    net = tiny_irn()
    with pytest.raises(ValueError, match=r"expected lr_ref of shape \(2, 3, 4, 4\)"):
        irn_losses(net, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


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


def test_irn_backward_shards_a_memory_saving_irn_too() -> None:
    net = tiny_irn()
    saving = IRN(2, blocks=[1], growth=4, memory_saving=True)
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
    net = tiny_irn()
    base, lr_ref = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 4, 4)

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gain = torch.tensor(0.9, requires_grad=True)  # hr is made from it: not a leaf
        z = torch.randn(4, 9, 4, 4, generator=torch.Generator().manual_seed(2)).requires_grad_()
        return gain, base * gain, z

    gain_a, hr_a, z_a = inputs()
    _backward(irn_losses(net, hr_a, lr_ref, z=z_a))
    gain_b, hr_b, z_b = inputs()
    irn_backward(net, hr_b, lr_ref, z=z_b, shards=3)
    assert gain_a.grad is not None and gain_b.grad is not None
    assert z_a.grad is not None and z_b.grad is not None
    torch.testing.assert_close(gain_b.grad, gain_a.grad, rtol=1e-5, atol=0)
    torch.testing.assert_close(z_b.grad, z_a.grad, rtol=1e-5, atol=1e-7)
    assert float(z_a.grad.abs().max()) > 0 and float(gain_a.grad.abs()) > 0

    leaf_a = base.clone().requires_grad_()
    leaf_b = base.clone().requires_grad_()
    _backward(irn_losses(net, leaf_a, lr_ref, z=z_a.detach()))
    irn_backward(net, leaf_b, lr_ref, z=z_a.detach(), shards=2)
    assert leaf_a.grad is not None and leaf_b.grad is not None
    torch.testing.assert_close(leaf_b.grad, leaf_a.grad, rtol=1e-5, atol=1e-7)


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
    import flowlearn.irn.losses as losses_module

    batches: list[int] = []

    def counted(model: IRN, hr: torch.Tensor, *args: Any, **kwargs: Any) -> IRNLosses:
        batches.append(hr.shape[0])
        return irn_losses(model, hr, *args, **kwargs)

    monkeypatch.setattr(losses_module, "irn_losses", counted)
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
