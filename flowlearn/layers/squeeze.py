r"""Squeeze: trade spatial resolution for channels, `(B, C, H, W) -> (B, 4C, H/2, W/2)`."""

from __future__ import annotations

from torch import Tensor

from flowlearn.core import Bijector, check_even_spatial, check_rank

__all__ = ["Squeeze"]


class Squeeze(Bijector):
    r"""Space-to-depth by 2: every 2×2 block of a channel becomes 4 channels of one pixel.

    $$
    y_{\,4c + 2i + j,\ h,\ w} = x_{\,c,\ 2h + i,\ 2w + j}, \qquad i, j \in \{0, 1\},
    \qquad \log|\det J| = 0 ,
    $$

    and the inverse puts every value back. It only reorders values, so the Jacobian is a
    permutation matrix. Channel order: **channel-major**, output channels $4c .. 4c+3$ hold the
    top-left, top-right, bottom-left and bottom-right pixel of each 2×2 block of input
    channel $c$; this is `torch.nn.functional.pixel_unshuffle(x, 2)`. (The Haar layer orders
    its bands band-major instead.) Odd heights or widths are an error, never cropped.

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016. "Density estimation using Real NVP."
        arXiv:1605.08803, §3.6 (squeezing operation, Fig. 3).

    Shapes: input `(B, C, H, W)` with even `H` and `W`, output `(B, 4C, H/2, W/2)`.
    The layer has no arguments.

    Examples:
        >>> import torch
        >>> from flowlearn import Squeeze
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> y, logdet = Squeeze()(x)
        >>> y[0, :, 0, 0]  # the top-left 2×2 block [[0, 1], [4, 5]]
        tensor([0., 1., 4., 5.])
        >>> torch.equal(Squeeze().inverse(y)[0], x), logdet
        (True, tensor([0.]))
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Fold each 2×2 block into 4 channels, `(B, C, H, W) -> (B, 4C, H/2, W/2)`."""
        check_even_spatial(self, x)
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2)  # (B, C, H/2, i, W/2, j)
        y = y.permute(0, 1, 3, 5, 2, 4)  # (B, C, i, j, H/2, W/2)
        y = y.reshape(b, 4 * c, h // 2, w // 2)  # (B, 4C, H/2, W/2), channel 4c + 2i + j
        return y, x.new_zeros(b)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Unfold 4 channels into each 2×2 block, `(B, 4C, H/2, W/2) -> (B, C, H, W)`."""
        check_rank(self, y, (4,))
        b, c4, h, w = y.shape
        if c4 % 4:
            raise ValueError(
                f"Squeeze: expected a channel count divisible by 4 in (B, 4C, H/2, W/2), "
                f"received shape {tuple(y.shape)}"
            )
        x = y.reshape(b, c4 // 4, 2, 2, h, w)  # (B, C, i, j, H/2, W/2)
        x = x.permute(0, 1, 4, 2, 5, 3)  # (B, C, H/2, i, W/2, j)
        x = x.reshape(b, c4 // 4, 2 * h, 2 * w)  # (B, C, H, W)
        return x, y.new_zeros(b)
