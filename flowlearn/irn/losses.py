r"""Training objective of the Invertible Rescaling Net and its straight-through 8-bit quantiser."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flowlearn.images.metrics import quantize_8bit

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = ["IRNLosses", "irn_backward", "irn_losses", "quantize"]

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
    if lambda_fit is None:
        lambda_fit = float(model.scale**2)
    y, _ = model(hr)
    lr, z_fwd = model.split(y)  # (B, 3, h, w), (B, 3(s²-1), h, w)
    if lr_ref.shape != lr.shape:
        raise ValueError(
            f"irn_losses: expected lr_ref of shape {tuple(lr.shape)}, received shape "
            f"{tuple(lr_ref.shape)}"
        )
    fit = lambda_fit * _sum_per_sample((lr - lr_ref.detach()) ** 2)
    distr = lambda_ce * _sum_per_sample(z_fwd**2)

    if z is None:
        z = torch.randn(z_fwd.shape, generator=generator, device=hr.device, dtype=hr.dtype)
    hr_rec, _ = model.inverse(model.join(quantize(lr), z))
    rec = lambda_rec * _sum_per_sample(torch.sqrt((hr - hr_rec) ** 2 + CHARBONNIER_EPS))
    return IRNLosses(fit=fit, distr=distr, rec=rec, total=fit + rec + distr)


def irn_backward(
    model: IRN,
    hr: Tensor,
    lr_ref: Tensor,
    *,
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
    lambda_fit: float | None = None,
    lambda_rec: float = 1.0,
    lambda_ce: float = 1.0,
    shards: int | None = None,
) -> IRNLosses:
    r"""`irn_losses` and its gradients, added to `.grad` as `irn_losses(...).total.backward()` does.

    On a CPU the batch is cut into `shards` parts that run forward and backward at the same
    time, one per thread, each with `torch.get_num_threads() // shards` threads of its own.
    The objective averages over the batch, so with shard $i$ holding $B_i$ of the $B$ samples
    and $L_i$ its `irn_losses`,

    $$
    L = \sum_i \tfrac{B_i}{B} L_i, \qquad \nabla L = \sum_i \tfrac{B_i}{B} \nabla L_i ,
    $$

    which is the gradient of the whole batch up to float round-off (the order of the sums). The
    latent of the reconstruction is drawn once for the whole batch, as `irn_losses` draws it,
    and the gradients are added in shard order, so a run is reproducible. It pays where one
    sample's convolutions are too small to keep several threads busy (IRN's 64² training
    patches on a few cores; see the performance page); on CUDA there is one shard.

    Args:
        model: the `IRN`.
        hr: HR batch `(B, 3, H, W)`, as in `irn_losses`.
        lr_ref: reference LR `(B, 3, H/s, W/s)`.
        z: latent for the reconstruction, drawn with `generator` when `None`.
        generator: random generator for z.
        lambda_fit: weight of $L_\text{fit}$; `None` means $s^2$.
        lambda_rec: weight of $L_\text{rec}$.
        lambda_ce: weight of $L_\text{distr}$.
        shards: how many parts to cut the batch into; `None` means one per CPU thread
            (`torch.get_num_threads()`, at most the batch size) on a CPU and 1 on other devices.

    Returns:
        The losses of the whole batch (`IRNLosses`, detached when `shards > 1`).

    Examples:
        >>> import torch
        >>> from flowlearn import IRN
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> hr = torch.rand(4, 3, 8, 8)
        >>> lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
        >>> z = torch.randn(4, 9, 4, 4)
        >>> whole = irn_backward(net, hr, lr_ref, z=z, shards=1)
        >>> grads = [p.grad.clone() for p in net.parameters()]
        >>> net.zero_grad()
        >>> halves = irn_backward(net, hr, lr_ref, z=z, shards=2)
        >>> all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(net.parameters(), grads))
        True
        >>> abs(float(halves.total - whole.total)) < 1e-4
        True
    """
    batch = hr.shape[0] if hr.dim() > 0 else 0
    if shards is None:
        shards = torch.get_num_threads() if hr.device.type == "cpu" else 1
        shards = max(1, min(shards, batch))
    if shards < 1:
        raise ValueError(f"irn_backward: shards must be a positive integer, got {shards}")
    objective = partial(
        irn_losses, model, lambda_fit=lambda_fit, lambda_rec=lambda_rec, lambda_ce=lambda_ce
    )
    if shards == 1:
        losses = objective(hr, lr_ref, z=z, generator=generator)
        losses.total.backward()
        return losses
    if hr.dim() != 4 or lr_ref.dim() != 4 or lr_ref.shape[0] != batch or batch < shards:
        raise ValueError(
            f"irn_backward: expected an HR batch (B, 3, H, W) and its LR reference "
            f"(B, 3, H/s, W/s) with B >= shards = {shards}, received HR of shape "
            f"{tuple(hr.shape)} and LR of shape {tuple(lr_ref.shape)}"
        )
    if z is None:  # the draws irn_losses would make for the whole batch
        height, width = hr.shape[2] // model.scale, hr.shape[3] // model.scale
        shape = (batch, model.latent_channels, height, width)
        z = torch.randn(shape, generator=generator, device=hr.device, dtype=hr.dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    inputs = [t for t in (hr, z) if t.requires_grad]  # their gradients go on as backward's do
    parts = list(zip(hr.tensor_split(shards), lr_ref.tensor_split(shards), z.tensor_split(shards)))

    def run(part: tuple[Tensor, Tensor, Tensor]) -> tuple[IRNLosses, tuple[Tensor | None, ...]]:
        hr_i, lr_i, z_i = part
        losses = objective(hr_i, lr_i, z=z_i)
        share = hr_i.shape[0] / batch
        wrt = params + [t for t in (hr_i, z_i) if t.requires_grad]
        grads = torch.autograd.grad(share * losses.total, wrt, allow_unused=True)
        return losses, grads

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // shards))
    try:
        futures = [_pool(shards - 1).submit(run, part) for part in parts[1:]]
        try:
            first = run(parts[0])
        finally:  # every shard has finished before anything is raised or returned
            wait(futures)
        results = [first] + [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        for k, p in enumerate(params):
            total = None
            for _, grads in results:  # in shard order: reproducible
                g = grads[k]
                if g is not None:
                    total = g if total is None else total.add_(g)
            if total is not None:
                p.grad = total if p.grad is None else p.grad.add_(total)
        sums = {
            name: sum(
                part[0].shape[0] / batch * getattr(losses, name).detach()
                for part, (losses, _) in zip(parts, results)
            )
            for name in (f.name for f in fields(IRNLosses))
        }
    onward: list[tuple[Tensor, Tensor]] = []
    for j, t in enumerate(inputs):  # the shards' input gradients, joined along the batch
        pieces = [grads[len(params) + j] for _, grads in results]
        shapes = t.tensor_split(shards)
        grad = torch.cat([torch.zeros_like(x) if g is None else g for g, x in zip(pieces, shapes)])
        if t.is_leaf:
            t.grad = grad if t.grad is None else t.grad + grad
        else:
            onward.append((t, grad))
    if onward:  # on into the graph that made them, as backward would go
        torch.autograd.backward([t for t, _ in onward], [g for _, g in onward])
    return IRNLosses(**sums)


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The thread pool of `workers` threads, made at the first call and kept for later ones."""
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="irn-shard")
        return _POOLS[workers]
