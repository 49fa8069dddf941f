r"""Fixed channel permutations between coupling layers.

A coupling layer leaves part of its input unchanged; permuting the channels between couplings
lets every channel be transformed eventually. A permutation matrix has $|\det| = 1$, so the
log-determinant is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowlearn.core import Bijector, check_channels, check_rank

__all__ = ["Reverse", "Shuffle"]


class Reverse(Bijector):
    r"""Reverse the order of the channels (dimension 1): channel $c$ goes to $C - 1 - c$.

    $$
    y_c = x_{C-1-c}, \qquad x_c = y_{C-1-c}, \qquad \log|\det J| = 0 .
    $$

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016. "Density estimation using Real NVP."
        arXiv:1605.08803, §3.5 (coupling layers combined in an alternating pattern).

        D. P. Kingma, P. Dhariwal, 2018. "Glow: Generative Flow with Invertible 1x1
        Convolutions." arXiv:1807.03039, §3.2 (the reversal as a fixed permutation).

    It has no arguments and works on `(B, D)` and `(B, C, H, W)` of any size.

    Examples:
        >>> import torch
        >>> from flowlearn import Reverse
        >>> Reverse()(torch.tensor([[1.0, 2.0, 3.0]]))
        (tensor([[3., 2., 1.]]), tensor([0.]))
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse dimension 1."""
        check_rank(self, x, (2, 4))
        return torch.flip(x, dims=(1,)), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse dimension 1 again (the reversal is its own inverse)."""
        check_rank(self, y, (2, 4))
        return torch.flip(y, dims=(1,)), y.new_zeros(y.shape[0])


class Shuffle(Bijector):
    r"""A fixed random permutation $\pi$ of the channels, drawn once from `seed`.

    $$
    y_c = x_{\pi(c)}, \qquad x_c = y_{\pi^{-1}(c)}, \qquad \log|\det J| = 0 .
    $$

    $\pi$ (`perm`) and $\pi^{-1}$ (`inv_perm`) are buffers, saved in the state dict. They are
    drawn with a local `torch.Generator`, so the global random state is untouched and the
    permutation depends only on `channels` and `seed`.

    References:
        D. P. Kingma, P. Dhariwal, 2018. "Glow: Generative Flow with Invertible 1x1
        Convolutions." arXiv:1807.03039, §3.2 (the random permutation as a fixed special case
        of the 1×1 convolution).

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.
        seed: seed of the permutation.

    Examples:
        >>> import torch
        >>> from flowlearn import Shuffle
        >>> layer = Shuffle(5, seed=0)
        >>> x = torch.arange(5.0).reshape(1, 5)
        >>> y, _ = layer(x)
        >>> torch.equal(y, x[:, layer.perm]), torch.equal(layer.inverse(y)[0], x)
        (True, True)
    """

    perm: Tensor
    inv_perm: Tensor

    def __init__(self, channels: int, seed: int = 0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"Shuffle: channels must be positive, got {channels}")
        self.channels, self.seed = channels, seed
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(channels, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def extra_repr(self) -> str:
        return f"{self.channels}, seed={self.seed}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Permute the channels: $y_c = x_{\pi(c)}$."""
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Undo the permutation: $x_c = y_{\pi^{-1}(c)}$."""
        check_rank(self, y, (2, 4))
        check_channels(self, y, self.channels)
        return y.index_select(1, self.inv_perm), y.new_zeros(y.shape[0])
