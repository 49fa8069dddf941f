r"""The 2-D Haar wavelet transform as an invertible downsampling layer.

One level of the Haar transform (Haar 1910) turns every 2×2 block of an image into four
numbers: its average and three differences. It halves the height and width and multiplies the
channels by four, is exactly invertible, and puts the low-pass (a downscaled image) in the first
channels. The Invertible Rescaling Net uses it as its downscaling module (Xiao et al. 2020, §3.2).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from flowlearn.core import Bijector, check_channels, check_even_spatial, check_rank

__all__ = ["HaarDownsampling", "haar_kernel"]

Normalization = Literal["orthonormal", "mean"]
_SCALE = {"orthonormal": 0.5, "mean": 0.25}

# Haar filters, kernel index k = band, rows i = (top, bottom), columns j = (left, right).
_HAAR_FILTERS = (
    ((1.0, 1.0), (1.0, 1.0)),  # LL: a + b + c + d
    ((1.0, -1.0), (1.0, -1.0)),  # band 1: left minus right
    ((1.0, 1.0), (-1.0, -1.0)),  # band 2: top minus bottom
    ((1.0, -1.0), (-1.0, 1.0)),  # band 3: diagonal
)


def haar_kernel(
    channels: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> Tensor:
    r"""The unscaled ±1 Haar filters for a grouped convolution, shape `(4C, 1, 2, 2)`.

    Entry `4c + k` holds filter `k` (LL, left−right, top−bottom, diagonal) for channel `c`; this
    is the layout of the `haar_weights` tensor in checkpoints of the original IRN code.

    Args:
        channels: number of input channels $C$.
        dtype: dtype of the result (default: the default dtype).
        device: device of the result.

    Examples:
        >>> haar_kernel(1)[2, 0]
        tensor([[ 1.,  1.],
                [-1., -1.]])
    """
    filters = torch.tensor(_HAAR_FILTERS, dtype=dtype, device=device)  # (4, 2, 2)
    return filters.unsqueeze(1).repeat(channels, 1, 1, 1)  # (4C, 1, 2, 2)


def _analysis(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The unscaled bands of the 2×2 blocks [[a, b], [c, d]]: LL, left−right, top−bottom, diag."""
    top_sum, top_diff = a + b, a - b
    bottom_sum, bottom_diff = c + d, c - d
    return (
        top_sum + bottom_sum,  # a + b + c + d
        top_diff + bottom_diff,  # a - b + c - d
        top_sum - bottom_sum,  # a + b - c - d
        top_diff - bottom_diff,  # a - b - c + d
    )


def _synthesis(
    ll: Tensor, b1: Tensor, b2: Tensor, b3: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""$M^\top$ applied to the bands: $4k$ times the block entries a, b, c, d."""
    top_sum, bottom_sum = ll + b2, ll - b2  # (a + b), (c + d), times 4k
    top_diff, bottom_diff = b1 + b3, b1 - b3  # (a - b), (c - d), times 4k
    return (
        top_sum + top_diff,
        top_sum - top_diff,
        bottom_sum + bottom_diff,
        bottom_sum - bottom_diff,
    )


class HaarDownsampling(Bijector):
    r"""One level of the 2-D Haar wavelet transform, `(B, C, H, W) -> (B, 4C, H/2, W/2)`.

    Every 2×2 block $\begin{bmatrix} a & b \\ c & d \end{bmatrix}$ of every channel becomes
    four bands, scaled by $k$:

    $$
    \begin{aligned}
    \mathrm{LL} &= k\,(a + b + c + d), &
    \mathrm{B}_1 &= k\,(a - b + c - d) \ \text{(left − right)}, \\
    \mathrm{B}_2 &= k\,(a + b - c - d) \ \text{(top − bottom)}, &
    \mathrm{B}_3 &= k\,(a - b - c + d) \ \text{(diagonal)} .
    \end{aligned}
    $$

    In matrix form $(\mathrm{LL}, \mathrm{B}_1, \mathrm{B}_2, \mathrm{B}_3)^\top = k\,M
    (a, b, c, d)^\top$ with $M M^\top = 4 I$, so the inverse is
    $(a, b, c, d)^\top = \frac{1}{4k} M^\top (\mathrm{LL}, \dots, \mathrm{B}_3)^\top$ and

    $$
    \log|\det J| = \frac{CHW}{4} \log\left(k^4 \cdot 16\right) =
    \begin{cases}
    0 & k = \tfrac12 \ (\texttt{"orthonormal"}), \\
    -CHW \ln 2 & k = \tfrac14 \ (\texttt{"mean"}),
    \end{cases}
    $$

    per sample, with $C, H, W$ of the input. `"orthonormal"` is the textbook transform;
    `"mean"` is the convention of the Invertible Rescaling Net, whose LL band is the 2×2 box
    mean, an image in the same range as its input.

    Channel order is **band-major**, as in IRN: `[LL(c_0..c_{C-1}), B1(c_0..), B2(..), B3(..)]`,
    so the first $C$ output channels are the downscaled image.

    The same map is a stride-2 convolution of each channel with the four ±1 filters of
    `haar_kernel`, scaled by $k$ (the form of the original IRN code); here it is written with
    reshapes and additions, the formula above.

    Relation to PyWavelets: for one channel, `cA, (cH, cV, cD) = pywt.dwt2(x, "haar")` gives
    `cA = LL`, `cV = B1`, `cH = B2`, `cD = B3` with `"orthonormal"` (same signs), and twice
    the bands of `"mean"`.

    References:
        A. Haar, 1910. "Zur Theorie der orthogonalen Funktionensysteme." Mathematische Annalen
        69(3), 331–371.

        M. Xiao, S. Zheng, C. Liu, Y. Wang, D. He, G. Ke, J. Bian, Z. Lin, T.-Y. Liu, 2020.
        "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §3.2 (downscaling module,
        paragraph "Haar Wavelet Transformation"; no numbered equation).

    Args:
        channels: number of input channels $C$; input `(B, C, H, W)` with even `H`, `W`,
            output `(B, 4C, H/2, W/2)`.
        normalization: `"orthonormal"` ($k = \frac12$, log-det 0) or `"mean"` ($k = \frac14$).

    Examples:
        >>> import torch
        >>> from flowlearn import HaarDownsampling
        >>> haar = HaarDownsampling(1, normalization="mean")
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])
        >>> y, logdet = haar(x)
        >>> y.flatten().tolist()  # LL = mean, left − right, top − bottom, diagonal
        [2.75, -0.75, -1.25, 0.25]
        >>> logdet  # -C·H·W·ln 2
        tensor([-2.7726])
        >>> torch.equal(haar.inverse(y)[0], x)
        True
    """

    def __init__(self, channels: int, *, normalization: Normalization = "orthonormal") -> None:
        super().__init__()
        if normalization not in _SCALE:
            raise ValueError(
                f"HaarDownsampling: normalization must be 'orthonormal' or 'mean', "
                f"got {normalization!r}"
            )
        if channels < 1:
            raise ValueError(f"HaarDownsampling: channels must be positive, got {channels}")
        self.channels = channels
        self.normalization = normalization
        self.k = _SCALE[normalization]
        # log|det| per input element: log(k^4 * 16) / 4 = log(2k) (0 or -ln 2)
        self._logdet_per_element = math.log(2 * self.k)

    def extra_repr(self) -> str:
        return f"{self.channels}, normalization={self.normalization!r}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform `(B, C, H, W)` to the four bands `(B, 4C, H/2, W/2)`, band-major."""
        check_even_spatial(self, x)
        check_channels(self, x, self.channels)
        b, c, h, w = x.shape
        blocks = x.reshape(b, c, h // 2, 2, w // 2, 2)  # (B, C, H/2, 2, W/2, 2): rows, cols
        a, bb = blocks[:, :, :, 0, :, 0], blocks[:, :, :, 0, :, 1]  # top-left, top-right
        cc, d = blocks[:, :, :, 1, :, 0], blocks[:, :, :, 1, :, 1]  # bottom-left, -right
        bands = torch.stack(_analysis(a, bb, cc, d), dim=1)  # (B, 4, C, H/2, W/2)
        y = bands.reshape(b, 4 * c, h // 2, w // 2) * self.k  # (B, 4C, H/2, W/2)
        logdet = x.new_full((b,), c * h * w * self._logdet_per_element)
        return y, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Rebuild `(B, C, H, W)` from the bands `(B, 4C, H/2, W/2)`."""
        check_rank(self, y, (4,))
        check_channels(self, y, 4 * self.channels)
        b, c4, h, w = y.shape
        c = c4 // 4
        bands = y.reshape(b, 4, c, h, w).unbind(1)  # LL, B1, B2, B3: (B, C, h, w) each
        a, bb, cc, d = _synthesis(*bands)  # 4k times the block entries
        top = torch.stack((a, bb), dim=-1)  # (B, C, h, w, 2): columns
        bottom = torch.stack((cc, d), dim=-1)
        blocks = torch.stack((top, bottom), dim=3)  # (B, C, h, 2, w, 2): rows, columns
        x = blocks.reshape(b, c, 2 * h, 2 * w) / (4 * self.k)  # (k M)^{-1} = M^T / (4k)
        logdet = y.new_full((b,), -c * 4 * h * w * self._logdet_per_element)
        return x, logdet
