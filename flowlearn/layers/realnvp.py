r"""RealNVP: the affine coupling layer (Dinh, Sohl-Dickstein, Bengio 2016).

An affine coupling scales and shifts half of its input by functions of the other half. Its
Jacobian is triangular, so the log-determinant is the sum of the log-scales; unlike NICE's
additive coupling it can change volume ("non-volume preserving").
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowlearn.core import Bijector, SubnetFactory
from flowlearn.layers.masks import (
    MaskType,
    check_coupling_input,
    check_mask_args,
    check_subnet_output,
    checkerboard,
    coupling_subnet,
    merge_channels,
    split_channels,
)

__all__ = ["AffineCoupling", "soft_clamp"]


def soft_clamp(s: Tensor, bound: float) -> Tensor:
    r"""Bound a log-scale smoothly to $(-\text{bound}, \text{bound})$: $\text{bound} \cdot
    \tanh(s / \text{bound})$.

    Why: the scale of an affine coupling is $e^{s}$. An unbounded $s$ can grow during training
    until $e^{s}$ overflows or a stack of layers multiplies scales into huge values, and
    training explodes. With the soft clamp each layer scales by at most $e^{\pm\text{bound}}$,
    and for $|s| \ll \text{bound}$ it is almost the identity ($\tanh u \approx u$), with
    gradient 1 at 0. It is smooth, so the log-determinant stays differentiable everywhere.

    Args:
        s: raw log-scales, any shape.
        bound: the bound, positive.

    Examples:
        >>> import torch
        >>> soft_clamp(torch.tensor([-100.0, 0.0, 0.1, 100.0]), 2.0)
        tensor([-2.0000,  0.0000,  0.0999,  2.0000])
    """
    return bound * torch.tanh(s / bound)


class AffineCoupling(Bijector):
    r"""RealNVP affine coupling: scale and shift one part of the input by functions of the other.

    With the conditioning part $x_1$, the transformed part $x_2$ (see `mask`) and
    $(\tilde s, t) = \text{subnet}(x_1)$, $s = \text{soft\_clamp}(\tilde s, \text{clamp})$:

    $$
    y_1 = x_1,\quad y_2 = x_2 \odot e^{s(x_1)} + t(x_1)
    \qquad\Longleftrightarrow\qquad
    x_1 = y_1,\quad x_2 = (y_2 - t(y_1)) \odot e^{-s(y_1)},
    $$

    $$
    \log|\det J| = \sum_j s(x_1)_j \quad\text{(per sample, over the transformed part)}.
    $$

    With `mask="checkerboard"` and mask $b_{hw} = (h + w + \text{parity}) \bmod 2$ (RealNVP
    Eq. 9), the subnet sees $b \odot x$ and
    $y = b \odot x + (1 - b) \odot (x \odot e^{s(b \odot x)} + t(b \odot x))$, with
    $\log|\det J| = \sum (1 - b) \odot s$.

    The subnet outputs $2c$ channels, $c$ = channels of $x_2$ (or $C$ for the checkerboard):
    the first $c$ are $\tilde s$, the last $c$ are $t$.

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016. "Density estimation using Real NVP."
        arXiv:1605.08803, §3.2–3.3 (affine coupling layer, Eq. 4–5; Jacobian Eq. 6; inverse
        Eq. 7–8) and §3.4 (masked convolution, checkerboard and channel-wise masks, Eq. 9).

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.
        subnet: factory `subnet(c_in, c_out)`, called once. `"channel"` mask: `c_in` = size of
            $x_1$, `c_out` = 2 × size of $x_2$ (see `flowlearn.layers.masks`); `"checkerboard"`:
            `c_in = C`, `c_out = 2C`.
        mask: `"channel"` (first $\lfloor C/2 \rfloor$ channels vs. the rest) or
            `"checkerboard"` (images only).
        parity: 0 or 1; 1 swaps which part is transformed.
        clamp: bound of the log-scale, see `soft_clamp`; `None` leaves it unbounded.

    Examples:
        >>> import torch
        >>> from flowlearn import AffineCoupling, conv_net
        >>> layer = AffineCoupling(3, conv_net(hidden=8), mask="checkerboard", parity=1)
        >>> x = torch.randn(2, 3, 4, 6)
        >>> y, logdet = layer(x)  # a fresh layer is the identity
        >>> torch.equal(y, x), logdet.tolist()
        (True, [0.0, 0.0])
        >>> torch.equal(layer.inverse(y)[0], x)
        True
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetFactory,
        *,
        mask: MaskType = "channel",
        parity: int = 0,
        clamp: float | None = 2.0,
    ) -> None:
        super().__init__()
        check_mask_args("AffineCoupling", channels, mask, parity)
        if clamp is not None and not clamp > 0:
            raise ValueError(f"AffineCoupling: clamp must be positive or None, got {clamp}")
        self.channels, self.mask, self.parity, self.clamp = channels, mask, parity, clamp
        self.subnet = coupling_subnet(subnet, channels, mask, parity, per_value=2)

    def extra_repr(self) -> str:
        return f"{self.channels}, mask={self.mask!r}, parity={self.parity}, clamp={self.clamp}"

    def _st(self, x1: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """Log-scale $s$ (clamped) and shift $t$ from the subnet, each shaped like `like`."""
        c = like.shape[1]
        out = self.subnet(x1)
        check_subnet_output(self, out, (like.shape[0], 2 * c, *like.shape[2:]))
        s, t = out[:, :c], out[:, c:]
        if self.clamp is not None:
            s = soft_clamp(s, self.clamp)
        return s, t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""$y_2 = x_2 \odot e^{s(x_1)} + t(x_1)$, log-det $\sum s$."""
        check_coupling_input(self, x, self.channels, self.mask)
        if self.mask == "channel":
            x1, x2 = split_channels(x, self.parity)
            s, t = self._st(x1, x2)
            y2 = x2 * torch.exp(s) + t  # Eq. 5
            y = merge_channels(x1, y2, self.parity)
        else:
            b = checkerboard(x, self.parity)  # (1, 1, H, W)
            s, t = self._st(b * x, x)
            s = (1 - b) * s  # only the transformed pixels contribute to the log-det
            y = b * x + (1 - b) * (x * torch.exp(s) + t)  # Eq. 9
        return y, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""$x_2 = (y_2 - t(y_1)) \odot e^{-s(y_1)}$, log-det $-\sum s$."""
        check_coupling_input(self, y, self.channels, self.mask)
        if self.mask == "channel":
            y1, y2 = split_channels(y, self.parity)
            s, t = self._st(y1, y2)
            x2 = (y2 - t) * torch.exp(-s)  # Eq. 8
            x = merge_channels(y1, x2, self.parity)
        else:
            b = checkerboard(y, self.parity)  # (1, 1, H, W)
            s, t = self._st(b * y, y)
            s = (1 - b) * s
            x = b * y + (1 - b) * ((y - t) * torch.exp(-s))
        return x, -s.flatten(1).sum(1)
