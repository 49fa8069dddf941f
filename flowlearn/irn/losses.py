r"""Training objective of the Invertible Rescaling Net and its straight-through 8-bit quantiser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flowlearn.images.metrics import quantize_8bit

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = ["IRNLosses", "irn_losses", "quantize"]

CHARBONNIER_EPS = 1e-6
r"""$\epsilon$ inside the square root of the Charbonnier reconstruction loss (original value)."""


def quantize(x: Tensor) -> Tensor:
    r"""The quantiser $Q$ of the IRN objective: `quantize_8bit(x, straight_through=True)`.

    $Q(y) = \mathrm{round}(255\,\mathrm{clip}(y, 0, 1)) / 255$ going forward, the identity
    going back (see `flowlearn.images.metrics.quantize_8bit`), so that the reconstruction loss
    trains the downscaling pass through the rounding of the LR image (Xiao et al. 2020,
    arXiv:2005.05650, §3.3).

    Examples:
        >>> x = torch.tensor([-0.2, 0.5, 1.7], requires_grad=True)
        >>> quantize(x).sum().backward()
        >>> x.grad
        tensor([1., 1., 1.])
    """
    return quantize_8bit(x, straight_through=True)


@dataclass
class IRNLosses:
    r"""The three terms of the IRN objective and their sum (0-d tensors, weights applied).

    Attributes:
        fit: LR guidance $\lambda_\text{fit}\,\frac1B\sum_b\|y_b - y^\text{ref}_b\|_2^2$.
        distr: latent term $\lambda_\text{ce}\,\frac1B\sum_b\|z_b\|_2^2$.
        rec: HR reconstruction $\lambda_\text{rec}\,\frac1B\sum_b\sum_i
            \sqrt{(x_{b,i} - \hat x_{b,i})^2 + \epsilon}$.
        total: `fit + rec + distr`, the quantity that is differentiated.
    """

    fit: Tensor
    distr: Tensor
    rec: Tensor
    total: Tensor


def _sum_per_sample(t: Tensor) -> Tensor:
    """Sum over every dimension but the batch, then average over the batch."""
    return t.flatten(1).sum(1).mean()


def irn_losses(
    model: IRN,
    hr: Tensor,
    lr_ref: Tensor,
    *,
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
    lambda_fit: float | None = None,
    lambda_rec: float = 1.0,
    lambda_ce: float = 1.0,
) -> IRNLosses:
    r"""The IRN training objective (pre-training stage) for one batch.

    With $[y, z] = f(x)$ for the HR batch $x$, the bicubic reference $y^\text{ref}$, the
    straight-through quantiser $Q$ and a fresh latent $\tilde z \sim \mathcal{N}(0, I)$,

    $$
    \begin{aligned}
    L_\text{fit} &= \lambda_\text{fit}\,\tfrac1B \textstyle\sum_b \|y_b - y^\text{ref}_b\|_2^2,
    \qquad
    L_\text{distr} = \lambda_\text{ce}\,\tfrac1B \textstyle\sum_b \|z_b\|_2^2, \\
    L_\text{rec} &= \lambda_\text{rec}\,\tfrac1B \textstyle\sum_b \sum_i
    \sqrt{\bigl(x_{b,i} - f^{-1}([Q(y), \tilde z])_{b,i}\bigr)^2 + \epsilon},
    \end{aligned}
    $$

    sums over pixels and averages over the batch (not per-pixel means), $\epsilon = 10^{-6}$.
    $L_\text{distr}$ is the paper's surrogate $L'_\text{distr}$ (twice the Gaussian negative
    log-likelihood of $z$ up to a constant). Gradients reach the forward pass both directly and,
    through $Q$, via the reconstruction.

    References:
        M. Xiao et al., 2020. "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §3.3
        (LR guidance, HR reconstruction, distribution matching and its pre-training surrogate).

    Args:
        model: the `IRN`.
        hr: HR batch `(B, 3, H, W)` in [0, 1].
        lr_ref: reference LR `(B, 3, H/s, W/s)` (bicubic downscale of `hr`; detached here).
        z: latent for the reconstruction `(B, 3(s²-1), H/s, W/s)`; drawn from
            $\mathcal{N}(0, I)$ with `generator` when `None`.
        generator: random generator for z.
        lambda_fit: weight of $L_\text{fit}$; `None` means $s^2$ (the original setting).
        lambda_rec: weight of $L_\text{rec}$.
        lambda_ce: weight of $L_\text{distr}$.

    Returns:
        An `IRNLosses` with `fit`, `distr`, `rec` and `total`.

    Examples:
        >>> import torch
        >>> from flowlearn import IRN
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> hr = torch.rand(2, 3, 8, 8)
        >>> lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
        >>> losses = irn_losses(net, hr, lr_ref, generator=torch.Generator().manual_seed(0))
        >>> losses.fit.item() < 1e-10  # a fresh IRN's LR is the 2x2 box mean
        True
        >>> losses.total.backward()
    """
    fit, distr, rec, _ = _rescaling_terms(
        "irn_losses", model, hr, lr_ref, z, generator, lambda_fit, lambda_rec, lambda_ce
    )
    return IRNLosses(fit=fit, distr=distr, rec=rec, total=fit + rec + distr)


def _rescaling_terms(
    caller: str,
    model: IRN,
    hr: Tensor,
    lr_ref: Tensor,
    z: Tensor | None,
    generator: torch.Generator | None,
    lambda_fit: float | None,
    lambda_rec: float,
    lambda_ce: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The terms $L_\text{fit}, L_\text{distr}, L_\text{rec}$ and the reconstruction $\hat x$.

    As in `irn_losses`, with $\hat x = f^{-1}([Q(y), \tilde z])$; shared with IRN+'s
    `irn_plus_losses`. `caller` names the function in errors. $L_\text{distr}$ is an exact zero
    (no graph) when `lambda_ce` is 0.
    """
    if lambda_fit is None:
        lambda_fit = float(model.scale**2)
    y, _ = model(hr)
    lr, z_fwd = model.split(y)  # (B, 3, h, w), (B, 3(s²-1), h, w)
    if lr_ref.shape != lr.shape:
        raise ValueError(
            f"{caller}: expected lr_ref of shape {tuple(lr.shape)}, received shape "
            f"{tuple(lr_ref.shape)}"
        )
    fit = lambda_fit * _sum_per_sample((lr - lr_ref.detach()) ** 2)
    distr = lambda_ce * _sum_per_sample(z_fwd**2) if lambda_ce else fit.new_zeros(())

    if z is None:
        z = torch.randn(z_fwd.shape, generator=generator, device=hr.device, dtype=hr.dtype)
    hr_rec, _ = model.inverse(model.join(quantize(lr), z))  # x̂ = f⁻¹([Q(y), z̃])
    rec = lambda_rec * _sum_per_sample(torch.sqrt((hr - hr_rec) ** 2 + CHARBONNIER_EPS))
    return fit, distr, rec, hr_rec
