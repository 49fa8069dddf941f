"""IRN losses against the reference values of the original implementation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flowlearn.irn import IRN, IRNLosses, irn_losses, quantize
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
