r"""The coupling layer of the Invertible Rescaling Net ("InvBlock" in the paper)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeGuard

import torch
from torch import Tensor, nn

from flowlearn.core import Bijector, SubnetFactory, check_channels, check_rank
from flowlearn.layers.nets import DenseBlock, dense_blocks_on_one_input

__all__ = ["IRNCoupling"]


class IRNCoupling(Bijector):
    r"""IRN coupling: an additive update of the first channels, then a bounded affine update.

    The input is split along the channels into $x_1$ (the first `split` channels: the
    low-frequency / LR branch) and $x_2$ (the rest: the high-frequency branch). With the
    bounded scale $s = \text{clamp}\cdot\bigl(2\,\sigma(\rho(y_1)) - 1\bigr) \in
    (-\text{clamp}, \text{clamp})$,

    $$
    y_1 = x_1 + \phi(x_2), \qquad y_2 = x_2 \odot \exp(s) + \eta(y_1),
    $$

    $$
    x_2 = \bigl(y_2 - \eta(y_1)\bigr) \oslash \exp(s), \qquad x_1 = y_1 - \phi(x_2),
    \qquad \log|\det J| = \sum_{c,h,w} s .
    $$

    The LR branch is purely additive (no scaling), so only $x_2$ contributes to the
    log-determinant. $2\sigma(u) - 1 = \tanh(u/2)$ bounds the exponent, which keeps stacked
    blocks from exploding in training.

    Sub-network names follow the original code so that checkpoints load unchanged:
    `F` is $\phi$ (C−split → split), `G` is $\eta$ (split → C−split) and `H` is $\rho$
    (split → C−split). They are created in the order F, G, H, which fixes how the random
    initialisation consumes the generator.

    Unlike the original code, which stores $s$ on the module and returns its batch mean, the
    log-determinant here is returned per sample and nothing is kept between calls. $\rho$ and
    $\eta$ read the same $y_1$; dense-block sub-networks then run together
    (`flowlearn.layers.nets.dense_blocks_on_one_input`: one first convolution for both, and grouped
    convolutions on small maps), which gives the same values up to float round-off in fewer
    convolution calls.

    With `bf16=True` only the sub-networks run under `torch.autocast` in bfloat16 (their
    convolutions are where the time goes). Everything after them stays in the dtype of the
    input: $\rho$'s output is cast back before the bound, so $s$, $\exp(s)$, the updates of
    $x_1, x_2$ and the log-determinant are float32. The exponent matters most: an error
    $\delta$ in $s$ is a relative error $\delta$ of $x_2$ in every block, and bfloat16 keeps
    about 3 significant digits; the log-determinant sums $\sim 10^5$ terms per sample, far
    beyond bfloat16's precision. The additive branches keep the main stream in float32, so the
    inverse stays exact up to float32 round-off of the stream given the same sub-network
    outputs.

    References:
        M. Xiao, S. Zheng, C. Liu, Y. Wang, D. He, G. Ke, J. Bian, Z. Lin, T.-Y. Liu, 2020.
        "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §3.2 ("InvBlock"),
        Eq. 1–2 ($\phi$, $\rho$, $\eta$); the bound on $s$ is from the authors' code.

        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016. "Density estimation using Real NVP."
        arXiv:1605.08803, §3.2, Eq. 4–5 (affine coupling).

    Args:
        channels: total channels $C$ of the input `(B, C, H, W)` (or `(B, C)` with
            fully-connected sub-networks).
        subnet: factory `subnet(c_in, c_out) -> nn.Module`, called for F, G, H in that order.
        split: number of channels of $x_1$ (3 in IRN: the RGB low-pass).
        clamp: bound of the exponent $s$.
        bf16: run $\phi$, $\rho$, $\eta$ under bfloat16 autocast on the input's device
            (faster on GPUs and on CPUs with bfloat16 units; not bit-compatible with float32).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from flowlearn.irn import IRNCoupling
        >>> block = IRNCoupling(12, lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3, padding=1))
        >>> x = torch.randn(2, 12, 4, 4)
        >>> y, logdet = block(x)
        >>> y.shape, logdet.shape
        (torch.Size([2, 12, 4, 4]), torch.Size([2]))
        >>> x_rec, logdet_inv = block.inverse(y)
        >>> torch.allclose(x_rec, x, atol=1e-5), torch.allclose(logdet + logdet_inv, 0 * logdet)
        (True, True)
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetFactory,
        *,
        split: int = 3,
        clamp: float = 1.0,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < split < channels:
            raise ValueError(
                f"IRNCoupling: split must be between 1 and channels - 1 = {channels - 1}, "
                f"got split={split}"
            )
        if clamp <= 0:
            raise ValueError(f"IRNCoupling: clamp must be positive, got {clamp}")
        self.channels = channels
        self.split = split
        self.clamp = clamp
        self.bf16 = bf16
        # creation order F, G, H as in the original code (bit-exact initialisation)
        self.F = subnet(channels - split, split)  # phi: x2 -> additive update of x1
        self.G = subnet(split, channels - split)  # eta: y1 -> shift of x2
        self.H = subnet(split, channels - split)  # rho: y1 -> log-scale of x2 (before bound)

    def extra_repr(self) -> str:
        bf16 = ", bf16=True" if self.bf16 else ""
        return f"{self.channels}, split={self.split}, clamp={self.clamp}{bf16}"

    def _autocast(self, v: Tensor) -> AbstractContextManager[Any]:
        """bfloat16 autocast on `v`'s device when `bf16` is set, else no change.

        Without `bf16`, an outer autocast, if any, stays in force.
        """
        if not self.bf16:
            return nullcontext()
        return torch.autocast(v.device.type, dtype=torch.bfloat16)

    def _run(self, net: nn.Module, v: Tensor) -> Tensor:
        """Apply a sub-network, under bfloat16 autocast when `bf16` is set."""
        with self._autocast(v):
            return net(v)

    def _shift_and_log_scale(self, y1: Tensor) -> tuple[Tensor, Tensor]:
        r"""$\eta(y_1)$ and the bounded exponent $s = \text{clamp}\,(2\sigma(\rho(y_1)) - 1)$.

        Both sub-networks read $y_1$; plain dense blocks (no hooks, not compiled) then run
        together (`flowlearn.layers.nets.dense_blocks_on_one_input`). $s$ is in `y1`'s dtype: under
        bfloat16 autocast $\rho$'s output is cast back first, since $s$ feeds $\exp(s)$.
        """
        G, H = self.G, self.H
        with self._autocast(y1):
            if _fusable(G) and _fusable(H):
                shift, h = dense_blocks_on_one_input([G, H], y1)
            else:
                shift, h = G(y1), H(y1)
        h = h.to(y1.dtype)
        return shift, self.clamp * (torch.sigmoid(h) * 2 - 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Couple `(B, C, H, W) -> (B, C, H, W)`; log-det $\sum s$ per sample."""
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self._run(self.F, x2)  # Eq. 1: y1 = x1 + phi(x2)
        shift, s = self._shift_and_log_scale(y1)
        y2 = x2 * torch.exp(s) + shift  # Eq. 2: y2 = x2 * exp(rho(y1)) + eta(y1)
        return torch.cat((y1, y2), dim=1), _sum_per_sample(s)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Undo the coupling, `(B, C, H, W) -> (B, C, H, W)`; log-det $-\sum s$ per sample."""
        check_rank(self, y, (2, 4))
        check_channels(self, y, self.channels)
        y1, y2 = y[:, : self.split], y[:, self.split :]
        shift, s = self._shift_and_log_scale(y1)
        x2 = (y2 - shift) / torch.exp(s)  # inverse of Eq. 2
        x1 = y1 - self._run(self.F, x2)  # inverse of Eq. 1
        return torch.cat((x1, x2), dim=1), -_sum_per_sample(s)


def _fusable(net: nn.Module) -> TypeGuard[DenseBlock]:
    """Whether `net` is a `DenseBlock` whose call does nothing beyond its `forward`.

    Forward hooks (its own or global ones) and `torch.compile` act only on calls of the module
    itself, so such a block is called on its own.
    """
    global_hooks = getattr(nn.modules.module, "_global_forward_hooks", None) or getattr(
        nn.modules.module, "_global_forward_pre_hooks", None
    )
    return (
        isinstance(net, DenseBlock)
        and not (net._forward_hooks or net._forward_pre_hooks or global_hooks)
        and getattr(net, "_compiled_call_impl", None) is None
    )


def _sum_per_sample(s: Tensor) -> Tensor:
    """Sum over all but the batch dimension (no copy for channels-last `s`, unlike flatten)."""
    return s.sum(dim=tuple(range(1, s.dim())))
