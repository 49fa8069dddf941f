r"""Backpropagation by inversion: train deep flows in memory that does not grow with depth.

Ordinary backpropagation stores every intermediate activation of the forward pass. A flow does
not need to: each layer's input can be recomputed from its output, $x_{k-1} = f_k^{-1}(x_k)$
(Gomez et al. 2017, "The Reversible Residual Network", arXiv:1707.04585, §3; Jacobsen et al.
2018, "i-RevNet", arXiv:1802.07088, §3). `run_sequence(layers, x, memory_saving=True)` runs a
chain of bijectors inside one autograd function that keeps **only the chain's output**. Its
backward pass walks the chain from the last layer to the first; at layer $k$ it

1. recomputes the input $x_{k-1} = f_k^{-1}(x_k)$ without building a graph,
2. re-runs $x_k, \ell_k = f_k(x_{k-1})$ with autograd on (one layer's activations only), and
3. backpropagates $\partial L / \partial x_k$ and $\partial L / \partial \ell_k$ into
   $\partial L / \partial x_{k-1}$ and the layer's parameter gradients, then frees that graph.

Cost: each layer runs three times instead of once for forward + backward (forward, inverse,
forward again), about 1.3–1.6× the time of a training step. Limit: the recomputed inputs carry the
round-off of each inverse; over many layers this drift grows (it is measured in
`tests/test_memory.py` and the benchmarks), so gradients match ordinary backprop to float
round-off, not bit for bit. Layers must be exact bijectors whose outputs are pure functions of
their inputs and weights — the protocol of `flowlearn.core` guarantees that. Layers with a
data-dependent initialisation (`ActNorm`) must be initialised before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowlearn.core.bijector import Bijector

__all__ = ["inversion_drift", "run_sequence"]


def _apply(layer: Bijector, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    return layer.inverse(x) if reverse else layer(x)


def _plain(layers: Sequence[Bijector], x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    logdet = x.new_zeros(x.shape[0])
    for layer in reversed(layers) if reverse else layers:
        x, ld = _apply(layer, x, reverse)
        logdet = logdet + ld
    return x, logdet


class _InvertibleChain(torch.autograd.Function):
    """Runs a chain of bijectors, storing only its output; recomputes the rest by inversion."""

    @staticmethod
    def forward(
        ctx: Any, layers: Sequence[Bijector], reverse: bool, x: Tensor, *params: Tensor
    ) -> tuple[Tensor, Tensor]:
        ctx.layers, ctx.reverse, ctx.n_params = layers, reverse, len(params)
        with torch.no_grad():
            y, logdet = _plain(layers, x, reverse)
        ctx.save_for_backward(y)
        return y, logdet

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor, grad_logdet: Tensor) -> tuple[Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        layers: Sequence[Bijector] = ctx.layers
        order = list(layers) if ctx.reverse else list(reversed(layers))
        param_grads: dict[nn.Parameter, Tensor] = {}
        grad = grad_y
        for layer in order:
            with torch.no_grad():  # 1. recompute this layer's input from its output
                x, _ = _apply(layer, y, not ctx.reverse)
            with torch.enable_grad():  # 2. local graph of this one layer
                x = x.detach().requires_grad_(True)
                out, ld = _apply(layer, x, ctx.reverse)
                params = [p for p in layer.parameters() if p.requires_grad]
                outputs = [out] + ([ld] if grad_logdet is not None and ld.requires_grad else [])
                grads_out = [grad] + ([grad_logdet] if len(outputs) == 2 else [])
                grads = torch.autograd.grad(  # 3. backpropagate through it
                    outputs, [x, *params], grads_out, allow_unused=True
                )
            grad = grads[0] if grads[0] is not None else torch.zeros_like(x)
            for p, g in zip(params, grads[1:]):
                if g is not None:
                    param_grads[p] = param_grads[p] + g if p in param_grads else g
            y = x.detach()
        all_params = [p for layer in layers for p in layer.parameters() if p.requires_grad]
        seen: set[int] = set()
        flat: list[Tensor | None] = []
        for p in all_params:  # one gradient per tensor passed to `apply`, in the same order
            flat.append(param_grads.get(p) if id(p) not in seen else None)
            seen.add(id(p))
        return (None, None, grad, *flat)


def run_sequence(
    layers: Sequence[Bijector], x: Tensor, *, reverse: bool = False, memory_saving: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Apply `layers` in order (or their inverses in reverse order) and sum the log-dets.

    Args:
        layers: the bijectors $f_1, \dots, f_K$.
        x: input batch.
        reverse: run $f_1^{-1} \circ \dots \circ f_K^{-1}$ instead.
        memory_saving: store only the output and recompute the rest by inversion in the backward
            pass (only when gradients are needed; otherwise the plain loop runs).

    Returns:
        `(output, logdet)` with `logdet` of shape `(B,)`.

    Examples:
        >>> import torch
        >>> from flowlearn import AffineCoupling, nets
        >>> from flowlearn.checks import jitter_parameters
        >>> layers = [AffineCoupling(4, nets.mlp(8), parity=i % 2) for i in range(3)]
        >>> layers = [jitter_parameters(layer) for layer in layers]
        >>> x = torch.randn(5, 4)
        >>> y, ld = run_sequence(layers, x, memory_saving=True)
        >>> y.shape, ld.shape
        (torch.Size([5, 4]), torch.Size([5]))
    """
    params = [p for layer in layers for p in layer.parameters() if p.requires_grad]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or bool(params))
    if not (memory_saving and needs_grad):
        return _plain(layers, x, reverse)
    y, logdet = _InvertibleChain.apply(list(layers), reverse, x, *params)
    return y, logdet


@torch.no_grad()
def inversion_drift(layers: Sequence[Bijector], x: Tensor) -> list[float]:
    r"""Error of the inputs recomputed by inversion, after $1, 2, \dots, K$ inverted layers.

    Runs $x_k = f_k(x_{k-1})$ through the chain and keeps every $x_k$. Then, as the
    memory-saving backward pass does, it starts from the output and recomputes
    $\hat x_{k-1} = f_k^{-1}(\hat x_k)$ from the previous *recomputed* value, $\hat x_K = x_K$.

    Returns:
        `errors[j]` $= \max|\hat x_{K-1-j} - x_{K-1-j}| / \max|x_{K-1-j}|$, the relative error
        after $j + 1$ inversions (the last entry compares the recomputed input $\hat x_0$ with
        $x$).

    Examples:
        >>> from flowlearn import AffineCoupling, nets
        >>> from flowlearn.checks import jitter_parameters
        >>> layers = [AffineCoupling(4, nets.mlp(8), parity=i % 2) for i in range(3)]
        >>> layers = [jitter_parameters(layer) for layer in layers]
        >>> errors = inversion_drift(layers, torch.randn(5, 4))
        >>> len(errors), max(errors) < 1e-5
        (3, True)
    """
    stored = [x]
    for layer in layers:
        stored.append(layer(stored[-1])[0])
    recomputed = stored[-1]
    errors: list[float] = []
    for k in range(len(layers) - 1, -1, -1):
        recomputed = layers[k].inverse(recomputed)[0]
        scale = float(stored[k].abs().max()) or 1.0
        errors.append(float((recomputed - stored[k]).abs().max()) / scale)
    return errors
