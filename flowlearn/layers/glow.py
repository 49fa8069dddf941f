r"""Glow's two non-coupling layers: activation normalisation and the invertible 1×1 convolution.

Both act on the channel dimension only, identically at every pixel, so their log-determinant
is the number of pixels $H W$ times a per-pixel term (1 pixel for vectors `(B, D)`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlearn.core import Bijector, check_channels, check_rank

__all__ = ["ActNorm", "InvertibleConv1x1"]


def _pixels(x: Tensor) -> int:
    """$H W$ for `(B, C, H, W)`, 1 for `(B, D)`."""
    return x.shape[2] * x.shape[3] if x.dim() == 4 else 1


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a `(C,)` vector to broadcast against `x`: `(1, C)` or `(1, C, 1, 1)`."""
    return v.to(x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))


class ActNorm(Bijector):
    r"""Activation normalisation: a per-channel affine map, initialised from the first batch.

    With a per-channel location $b_c$ (`loc`) and log-scale $\log\sigma_c$ (`log_scale`):

    $$
    y = (x - b) \odot e^{-\log\sigma}, \qquad x = y \odot e^{\log\sigma} + b, \qquad
    \log|\det J| = -H W \sum_{c=1}^{C} \log\sigma_c .
    $$

    This is Glow's $y = s \odot x + b'$ with $s = e^{-\log\sigma}$ and $b' = -b\,s$, written so
    that the parameters are the mean and the log standard deviation of the data they normalise.

    **Data-dependent initialisation.** The first call of `forward` sets $b_c$ and $\sigma_c$ to
    the mean and standard deviation of channel $c$ over that batch (and all pixels), so the
    output of that batch has mean 0 and standard deviation 1 per channel, then marks the layer
    as initialised. This first call is the one deliberate exception to the rule that layers
    are stateless: it writes the parameters. The flag `initialized` is a buffer, so it is saved
    in the state dict and a layer loaded from a state dict is never re-initialised. Calling
    `inverse` first is an error: there is no batch to initialise from.

    References:
        D. P. Kingma, P. Dhariwal, 2018. "Glow: Generative Flow with Invertible 1x1
        Convolutions." arXiv:1807.03039, §3.1 (actnorm, data-dependent initialisation) and
        Table 1 (forward, inverse and log-determinant).

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.
        eps: added to the standard deviation at initialisation, against division by zero.

    Examples:
        >>> import torch
        >>> from flowlearn import ActNorm
        >>> layer = ActNorm(3)
        >>> x = 5 + 2 * torch.randn(64, 3, 4, 4)
        >>> y, logdet = layer(x)  # initialises from x
        >>> bool(layer.initialized)
        True
        >>> mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3), correction=0)
        >>> bool(mean.abs().max() < 1e-5), bool((std - 1).abs().max() < 1e-4)
        (True, True)
    """

    initialized: Tensor

    def __init__(self, channels: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"ActNorm: channels must be positive, got {channels}")
        self.channels, self.eps = channels, eps
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"{self.channels}, initialized={bool(self.initialized)}"

    def _check(self, x: Tensor) -> None:
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set `loc`, `log_scale` to the per-channel mean and log-std of `x`; mark initialised."""
        self._check(x)
        dims = (0, 2, 3) if x.dim() == 4 else (0,)
        if x.shape[0] * _pixels(x) < 2:
            raise ValueError(
                f"ActNorm: data-dependent initialisation needs at least 2 values per channel, "
                f"received shape {tuple(x.shape)}"
            )
        x = x.detach()
        mean = x.mean(dim=dims)  # (C,)
        std = x.std(dim=dims, correction=0)  # (C,)
        self.loc.copy_(mean)
        self.log_scale.copy_(torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Normalise: $y = (x - b) \odot e^{-\log\sigma}$ (initialising first if needed)."""
        self._check(x)
        if not bool(self.initialized):
            self.initialize(x)
        b, log_sigma = _per_channel(self.loc, x), _per_channel(self.log_scale, x)
        y = (x - b) * torch.exp(-log_sigma)
        logdet = x.new_zeros(x.shape[0]) - _pixels(x) * self.log_scale.to(x.dtype).sum()
        return y, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Denormalise: $x = y \odot e^{\log\sigma} + b$."""
        self._check(y)
        if not bool(self.initialized):
            raise RuntimeError(
                "ActNorm: inverse called before initialisation; run forward on a data batch "
                "first (data-dependent initialisation) or load a trained state dict"
            )
        b, log_sigma = _per_channel(self.loc, y), _per_channel(self.log_scale, y)
        x = y * torch.exp(log_sigma) + b
        logdet = y.new_zeros(y.shape[0]) + _pixels(y) * self.log_scale.to(y.dtype).sum()
        return x, logdet


class InvertibleConv1x1(Bijector):
    r"""Glow's invertible 1×1 convolution: a learned $C \times C$ matrix applied at every pixel.

    $W$ is stored in LU form with a fixed permutation $P$, unit lower-triangular $L$,
    strictly upper-triangular $U$ and a diagonal with fixed signs and learned log-magnitudes:

    $$
    W = P\,L\,\bigl(U + \operatorname{diag}(\operatorname{sign}(s) \odot e^{\log|s|})\bigr),
    \qquad y_{:,hw} = W x_{:,hw}, \qquad x_{:,hw} = W^{-1} y_{:,hw},
    $$

    $$
    \log|\det J| = H W \log|\det W| = H W \sum_{c=1}^{C} \log|s_c| .
    $$

    $W$ starts as a random rotation (orthogonal, $\det W = +1$, so the log-determinant starts
    at 0), drawn with a local `torch.Generator` from `seed`. $P$ and $\operatorname{sign}(s)$
    are buffers; $L$, $U$ and $\log|s|$ are parameters (only their strict lower / strict upper
    triangles are used). The inverse solves the two triangular systems in the input's dtype
    instead of forming a general inverse.

    References:
        D. P. Kingma, P. Dhariwal, 2018. "Glow: Generative Flow with Invertible 1x1
        Convolutions." arXiv:1807.03039, §3.2 (invertible 1×1 convolution, log-determinant
        Eq. 9, LU decomposition Eq. 10–11) and Table 1.

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.
        seed: seed of the initial rotation; `None` draws it from the global torch random
            state, so that several layers get different rotations and `torch.manual_seed`
            still makes them reproducible.

    Examples:
        >>> import torch
        >>> from flowlearn import InvertibleConv1x1
        >>> layer = InvertibleConv1x1(4, seed=0)
        >>> W = layer.weight_matrix()
        >>> torch.allclose(W @ W.T, torch.eye(4), atol=1e-6)  # a rotation at initialisation
        True
        >>> x = torch.randn(2, 4, 3, 5)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    P: Tensor
    sign_s: Tensor

    def __init__(self, channels: int, *, seed: int | None = None) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"InvertibleConv1x1: channels must be positive, got {channels}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.channels, self.seed = channels, seed
        generator = torch.Generator().manual_seed(seed)
        a = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))  # uniformly distributed orthogonal matrix
        if torch.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]  # a rotation: det W = +1
        p, lower, upper = torch.linalg.lu(q)  # q = P L U
        s = torch.diagonal(upper)
        dtype = torch.get_default_dtype()
        self.register_buffer("P", p.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.L = nn.Parameter(torch.tril(lower, -1).to(dtype))
        self.U = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dtype))

    def extra_repr(self) -> str:
        return f"{self.channels}, seed={self.seed}"

    def _factors(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""$P$, $L$ and $U + \operatorname{diag}(s)$ in the dtype of `like` (Eq. 10)."""
        eye = torch.eye(self.channels, dtype=like.dtype, device=like.device)
        lower = torch.tril(self.L.to(like.dtype), -1) + eye
        s = self.sign_s.to(like.dtype) * torch.exp(self.log_s.to(like.dtype))
        upper = torch.triu(self.U.to(like.dtype), 1) + torch.diag(s)
        return self.P.to(like.dtype), lower, upper

    def weight_matrix(self) -> Tensor:
        r"""The matrix $W = P L (U + \operatorname{diag}(s))$, shape `(C, C)`."""
        p, lower, upper = self._factors(self.log_s)
        return p @ lower @ upper

    @staticmethod
    def _mix(M: Tensor, x: Tensor) -> Tensor:
        """$M$ applied to the channel vector of every pixel (a 1×1 convolution)."""
        if x.dim() == 4:
            return torch.einsum("ij,bjhw->bihw", M, x)  # (B, C, H, W)
        return x @ M.T  # (B, D)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""$y = W x$ at every pixel, log-det $H W \sum \log|s|$ (Eq. 9, 11)."""
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)
        p, lower, upper = self._factors(x)
        y = self._mix(p @ lower @ upper, x)
        logdet = x.new_zeros(x.shape[0]) + _pixels(x) * self.log_s.to(x.dtype).sum()
        return y, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""$x = W^{-1} y = (U + \operatorname{diag}(s))^{-1} L^{-1} P^\top y$ at every pixel."""
        check_rank(self, y, (2, 4))
        check_channels(self, y, self.channels)
        p, lower, upper = self._factors(y)
        w_inv = torch.linalg.solve_triangular(
            upper,
            torch.linalg.solve_triangular(lower, p.T, upper=False, unitriangular=True),
            upper=True,
        )  # (C, C)
        x = self._mix(w_inv, y)
        logdet = y.new_zeros(y.shape[0]) - _pixels(y) * self.log_s.to(y.dtype).sum()
        return x, logdet
