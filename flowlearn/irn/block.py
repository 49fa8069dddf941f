r"""The coupling layer of the Invertible Rescaling Net ("InvBlock" in the paper)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowlearn.core import Bijector, SubnetFactory, check_channels, check_rank

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
    log-determinant here is returned per sample and nothing is kept between calls.
    `forward` and `inverse` are the equations above, line by line; `flowlearn.irn.fast` runs the
    same arithmetic arranged for speed.

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
        self, channels: int, subnet: SubnetFactory, *, split: int = 3, clamp: float = 1.0
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
        # creation order F, G, H as in the original code (bit-exact initialisation)
        self.F = subnet(channels - split, split)  # phi: x2 -> additive update of x1
        self.G = subnet(split, channels - split)  # eta: y1 -> shift of x2
        self.H = subnet(split, channels - split)  # rho: y1 -> log-scale of x2 (before bound)

    def extra_repr(self) -> str:
        return f"{self.channels}, split={self.split}, clamp={self.clamp}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Couple `(B, C, H, W) -> (B, C, H, W)`; log-det $\sum s$ per sample."""
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.F(x2)  # Eq. 1: y1 = x1 + phi(x2)
        s = self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)  # bounded rho(y1)
        y2 = x2 * torch.exp(s) + self.G(y1)  # Eq. 2: y2 = x2 * exp(s) + eta(y1)
        return torch.cat((y1, y2), dim=1), s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Undo the coupling, `(B, C, H, W) -> (B, C, H, W)`; log-det $-\sum s$ per sample."""
        check_rank(self, y, (2, 4))
        check_channels(self, y, self.channels)
        y1, y2 = y[:, : self.split], y[:, self.split :]
        s = self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)  # bounded rho(y1)
        x2 = (y2 - self.G(y1)) / torch.exp(s)  # inverse of Eq. 2
        x1 = y1 - self.F(x2)  # inverse of Eq. 1
        return torch.cat((x1, x2), dim=1), -s.flatten(1).sum(1)
