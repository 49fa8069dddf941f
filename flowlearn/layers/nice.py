r"""NICE: the additive coupling layer and the diagonal scaling layer (Dinh et al. 2014).

An additive coupling leaves half of its input unchanged and shifts the other half by a
function of the first half. Its Jacobian is triangular with ones on the diagonal, so it
preserves volume (log-determinant 0); `DiagonalScaling` adds the volume change NICE needs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlearn.core import Bijector, SubnetFactory, check_channels, check_rank
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

__all__ = ["AdditiveCoupling", "DiagonalScaling"]


class AdditiveCoupling(Bijector):
    r"""NICE additive coupling: one part of the input is shifted by a function of the other.

    With the conditioning part $x_1$ and the transformed part $x_2$ (see `mask`), and the
    subnet $m$:

    $$
    y_1 = x_1,\quad y_2 = x_2 + m(x_1) \qquad\Longleftrightarrow\qquad
    x_1 = y_1,\quad x_2 = y_2 - m(y_1), \qquad \log|\det J| = 0 .
    $$

    With `mask="checkerboard"` and mask $m_{hw}$ (written $b$ here to keep $m$ for the subnet),
    $y = x + (1 - b) \odot m(b \odot x)$ and $x = y - (1 - b) \odot m(b \odot y)$.

    References:
        L. Dinh, D. Krueger, Y. Bengio, 2014. "NICE: Non-linear Independent Components
        Estimation." arXiv:1410.8516, §3.2 (additive coupling layer, Eq. 5–6).

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.
        subnet: factory `subnet(c_in, c_out)`, called once. `"channel"` mask: `c_in` = size of
            $x_1$, `c_out` = size of $x_2$ (see `flowlearn.layers.masks`); `"checkerboard"`:
            `c_in = c_out = C`.
        mask: `"channel"` (first $\lfloor C/2 \rfloor$ channels vs. the rest) or
            `"checkerboard"` (images only, $b_{hw} = (h + w + \text{parity}) \bmod 2$).
        parity: 0 or 1; 1 swaps which part is transformed.

    Examples:
        >>> import torch
        >>> from flowlearn import AdditiveCoupling, mlp
        >>> layer = AdditiveCoupling(4, mlp(hidden=16))
        >>> x = torch.randn(3, 4)
        >>> y, logdet = layer(x)
        >>> logdet
        tensor([0., 0., 0.])
        >>> torch.allclose(layer.inverse(y)[0], x)
        True
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetFactory,
        *,
        mask: MaskType = "channel",
        parity: int = 0,
    ) -> None:
        super().__init__()
        check_mask_args("AdditiveCoupling", channels, mask, parity)
        self.channels, self.mask, self.parity = channels, mask, parity
        self.subnet = coupling_subnet(subnet, channels, mask, parity, per_value=1)

    def extra_repr(self) -> str:
        return f"{self.channels}, mask={self.mask!r}, parity={self.parity}"

    def _shift(self, x1: Tensor, like: Tensor) -> Tensor:
        """The shift $m(x_1)$, checked to have the shape of `like`."""
        out = self.subnet(x1)
        check_subnet_output(self, out, tuple(like.shape))
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Shift the transformed part: $y_2 = x_2 + m(x_1)$."""
        check_coupling_input(self, x, self.channels, self.mask)
        if self.mask == "channel":
            x1, x2 = split_channels(x, self.parity)
            y2 = x2 + self._shift(x1, x2)  # Eq. 5
            y = merge_channels(x1, y2, self.parity)
        else:
            b = checkerboard(x, self.parity)  # (1, 1, H, W)
            y = x + (1 - b) * self._shift(b * x, x)
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Undo the shift: $x_2 = y_2 - m(y_1)$."""
        check_coupling_input(self, y, self.channels, self.mask)
        if self.mask == "channel":
            y1, y2 = split_channels(y, self.parity)
            x2 = y2 - self._shift(y1, y2)  # Eq. 6
            x = merge_channels(y1, x2, self.parity)
        else:
            b = checkerboard(y, self.parity)  # (1, 1, H, W)
            x = y - (1 - b) * self._shift(b * y, y)
        return x, y.new_zeros(y.shape[0])


class DiagonalScaling(Bijector):
    r"""NICE's diagonal scaling layer: every channel is multiplied by a learned positive factor.

    With one parameter $s_c$ per channel (the factor is $S_{cc} = e^{s_c}$, positive by
    construction; NICE writes $S_{ii}$ directly),

    $$
    y = x \odot e^{s}, \qquad x = y \odot e^{-s}, \qquad
    \log|\det J| = H W \sum_{c=1}^{C} s_c \quad (\textstyle\sum_c s_c \text{ for vectors}).
    $$

    $s$ starts at zero (the identity).

    References:
        L. Dinh, D. Krueger, Y. Bengio, 2014. "NICE: Non-linear Independent Components
        Estimation." arXiv:1410.8516, §3.3 (allowing rescaling: the log-likelihood gains the
        terms $\log|S_{ii}|$).

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.

    Examples:
        >>> import torch
        >>> from flowlearn import DiagonalScaling
        >>> layer = DiagonalScaling(2)
        >>> with torch.no_grad():
        ...     _ = layer.s.copy_(torch.tensor([0.0, 1.0]))
        >>> y, logdet = layer(torch.ones(1, 2, 3, 3))
        >>> logdet.tolist()  # 3 · 3 · (0 + 1)
        [9.0]
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"DiagonalScaling: channels must be positive, got {channels}")
        self.channels = channels
        self.s = nn.Parameter(torch.zeros(channels))

    def extra_repr(self) -> str:
        return f"{self.channels}"

    def _scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """$s$ broadcast to `x`, and the per-sample log-determinant of the forward map."""
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)
        s = self.s.to(x.dtype)
        pixels = x.shape[2] * x.shape[3] if x.dim() == 4 else 1
        logdet = x.new_zeros(x.shape[0]) + pixels * s.sum()  # (B,)
        return s.reshape(1, -1, *([1] * (x.dim() - 2))), logdet

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Scale: $y = x \odot e^{s}$."""
        s, logdet = self._scale(x)
        return x * torch.exp(s), logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Unscale: $x = y \odot e^{-s}$."""
        s, logdet = self._scale(y)
        return y * torch.exp(-s), -logdet
