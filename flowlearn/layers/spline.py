r"""Neural spline flows: the rational-quadratic spline coupling (Durkan et al. 2019).

An affine coupling moves each transformed value by a straight line $x \mapsto e^{s} x + t$.
A spline coupling moves it by a monotonic *rational-quadratic spline* instead: $K$ bins on
$[-B, B]$, in each bin a ratio of two quadratics, and the identity (linear tails) outside
$[-B, B]$. The subnet picks the bins' widths and heights and the derivatives at the knots for
every transformed value, so one layer can bend a density in ways that need many affine
layers. The spline stays invertible in closed form (one quadratic equation per value) and its
derivative is explicit, so the log-determinant is exact.

The functions below are the spline itself, in the order a learner writes them (tutorial 08):
`spline_knots` (network outputs → knots), `search_bins` (which bin a value falls in),
`rational_quadratic` (the forward map and its log-derivative), `rational_quadratic_inverse`
(the quadratic's stable root) and `rq_spline` (both, with the linear tails).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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

__all__ = [
    "SplineCoupling",
    "rational_quadratic",
    "rational_quadratic_inverse",
    "rq_spline",
    "search_bins",
    "spline_knots",
]

MIN_BIN = 1e-3
"""Smallest bin width and height, as a fraction of $2B$: keeps every slope $s_k$ finite."""

MIN_DERIVATIVE = 1e-3
"""Smallest derivative at a knot: keeps the spline strictly increasing."""


def spline_knots(
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    *,
    min_bin: float = MIN_BIN,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Turn unconstrained network outputs into the knots of a monotonic spline on $[-B, B]$.

    Widths and heights go through a softmax (they are positive and sum to $2B$), with a floor of
    `min_bin` $\cdot\, 2B$ per bin; the $K - 1$ inner derivatives through a softplus shifted so
    that a raw 0 gives derivative 1, with a floor `min_derivative`. The two outer derivatives are
    1, so the spline joins the identity tails with a continuous derivative:

    $$
    x^{(k)} = -B + 2B \sum_{j<k} \bar w_j, \quad
    y^{(k)} = -B + 2B \sum_{j<k} \bar h_j, \quad
    \bar w = m + (1 - K m)\operatorname{softmax}(\theta^w), \quad
    \delta^{(0)} = \delta^{(K)} = 1 .
    $$

    Raw outputs that are all zero give equal bins and derivatives 1: the identity. That is why
    a coupling whose subnet starts at zero starts as the identity.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, 2019. "Neural Spline Flows."
        arXiv:1906.04032, §3.1 (knots on $[-B, B]$, boundary derivatives 1 to match the
        linear tails) and §3.2 (softmax for widths and heights, softplus for derivatives).

    Args:
        widths: raw bin widths $\theta^w$, shape `(..., K)`.
        heights: raw bin heights $\theta^h$, shape `(..., K)`.
        derivatives: raw inner derivatives $\theta^d$, shape `(..., K - 1)`.
        bound: $B > 0$, the spline acts on $[-B, B]$.
        min_bin: floor of each width and height as a fraction of $2B$; $K \cdot$ `min_bin`
            must be below 1.
        min_derivative: floor of the inner derivatives.

    Returns:
        `(xk, yk, dk)`, each `(..., K + 1)`: knot positions $x^{(k)}$, knot values $y^{(k)}$
        (both from $-B$ to $B$, increasing) and derivatives $\delta^{(k)}$ at the knots.

    Examples:
        >>> import torch
        >>> xk, yk, dk = spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(3), 2.0)
        >>> xk, dk
        (tensor([-2., -1.,  0.,  1.,  2.]), tensor([1., 1., 1., 1., 1.]))
    """
    bins = widths.shape[-1]
    if heights.shape[-1] != bins or derivatives.shape[-1] != bins - 1:
        raise ValueError(
            f"spline_knots: expected widths and heights (..., K) and derivatives (..., K - 1), "
            f"received {tuple(widths.shape)}, {tuple(heights.shape)}, "
            f"{tuple(derivatives.shape)}"
        )
    if not bound > 0:
        raise ValueError(f"spline_knots: bound must be positive, got {bound}")
    if not 0 <= min_bin * bins < 1:
        raise ValueError(
            f"spline_knots: min_bin * K must be in [0, 1), got {min_bin} * {bins} bins"
        )

    def knots(raw: Tensor) -> Tensor:
        fraction = min_bin + (1 - min_bin * bins) * torch.softmax(raw, dim=-1)  # (..., K)
        inner = 2 * bound * torch.cumsum(fraction[..., :-1], dim=-1) - bound  # (..., K - 1)
        ends = torch.full_like(inner[..., :1], bound)
        return torch.cat([-ends, inner, ends], dim=-1)  # (..., K + 1), exactly ±B at the ends

    shift = math.log(math.expm1(1 - min_derivative))  # softplus(shift) + min_derivative = 1
    inner = min_derivative + F.softplus(derivatives + shift)  # (..., K - 1)
    one = torch.ones_like(inner[..., :1])
    return knots(widths), knots(heights), torch.cat([one, inner, one], dim=-1)


def search_bins(knots: Tensor, v: Tensor) -> Tensor:
    r"""Index $k$ of the bin $[\text{knots}_k, \text{knots}_{k+1})$ holding each value of `v`.

    Counts the inner knots at or below $v$, so values at $-B$ fall in bin 0 and values at $B$
    in bin $K - 1$ (the last bin is closed). Values outside $[-B, B]$ get bin 0 or $K - 1$.

    Args:
        knots: increasing knots `(..., K + 1)`.
        v: values `(...)`, the same leading shape.

    Returns:
        `(...)` integer bin indices in $0, \dots, K - 1$.

    Examples:
        >>> import torch
        >>> search_bins(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor(-1.0))
        tensor(0)
        >>> search_bins(torch.tensor([[-1.0, 0.0, 1.0]] * 3), torch.tensor([-0.5, 0.0, 1.0]))
        tensor([0, 1, 1])
    """
    inner = knots[..., 1:-1]  # (..., K - 1)
    return (v.unsqueeze(-1) >= inner).sum(dim=-1)


def _gather(knots: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Values of `knots` `(..., K + 1)` at indices `k` and `k + 1`, each shaped like `k`."""
    k = k.unsqueeze(-1)
    return knots.gather(-1, k).squeeze(-1), knots.gather(-1, k + 1).squeeze(-1)


def rational_quadratic(x: Tensor, xk: Tensor, yk: Tensor, dk: Tensor) -> tuple[Tensor, Tensor]:
    r"""The rational-quadratic spline on $[-B, B]$ and its log-derivative, value by value.

    In the bin $k$ holding $x$, with width $w_k = x^{(k+1)} - x^{(k)}$, height
    $h_k = y^{(k+1)} - y^{(k)}$, slope $s_k = h_k / w_k$ and $\xi = (x - x^{(k)}) / w_k \in [0,
    1]$ (Gregory & Delbourgo's monotone rational quadratic, as written by Durkan et al.):

    $$
    g(x) = y^{(k)} + \frac{h_k\,\bigl[s_k \xi^2 + \delta^{(k)} \xi (1 - \xi)\bigr]}
        {s_k + \bigl[\delta^{(k+1)} + \delta^{(k)} - 2 s_k\bigr] \xi (1 - \xi)},
    $$

    $$
    g'(x) = \frac{s_k^2 \bigl[\delta^{(k+1)} \xi^2 + 2 s_k \xi (1 - \xi)
        + \delta^{(k)} (1 - \xi)^2\bigr]}
        {\bigl[s_k + \bigl(\delta^{(k+1)} + \delta^{(k)} - 2 s_k\bigr) \xi (1 - \xi)\bigr]^2} > 0 .
    $$

    $g$ passes through every knot $(x^{(k)}, y^{(k)})$ with derivative $\delta^{(k)}$ there.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, 2019. "Neural Spline Flows."
        arXiv:1906.04032, §3.1 (the rational-quadratic of bin $k$, Eq. 4, and its
        derivative, Eq. 5).

        J. A. Gregory, R. Delbourgo, 1982. "Piecewise rational quadratic interpolation to
        monotonic data." IMA Journal of Numerical Analysis 2(2), 123–130.

    Args:
        x: values in $[-B, B]$, shape `(...)`.
        xk: knot positions `(..., K + 1)` (from `spline_knots`).
        yk: knot values `(..., K + 1)`.
        dk: knot derivatives `(..., K + 1)`.

    Returns:
        `(y, log_derivative)`, each shaped like `x`: $g(x)$ and $\log g'(x)$.

    Examples:
        >>> import torch
        >>> xk, yk, dk = spline_knots(torch.zeros(3), torch.zeros(3), torch.zeros(2), 1.0)
        >>> rational_quadratic(torch.tensor(0.25), xk, yk, dk)  # equal bins: the identity
        (tensor(0.2500), tensor(0.))
    """
    k = search_bins(xk, x)
    x_lo, x_hi = _gather(xk, k)
    y_lo, y_hi = _gather(yk, k)
    d_lo, d_hi = _gather(dk, k)
    w, h = x_hi - x_lo, y_hi - y_lo
    s = h / w  # s_k
    xi = (x - x_lo) / w  # ξ
    xi_1m = xi * (1 - xi)  # ξ(1 - ξ)
    denominator = s + (d_hi + d_lo - 2 * s) * xi_1m
    y = y_lo + h * (s * xi**2 + d_lo * xi_1m) / denominator  # Eq. 4
    numerator = s**2 * (d_hi * xi**2 + 2 * s * xi_1m + d_lo * (1 - xi) ** 2)  # Eq. 5
    return y, torch.log(numerator) - 2 * torch.log(denominator)


def rational_quadratic_inverse(
    y: Tensor, xk: Tensor, yk: Tensor, dk: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Invert `rational_quadratic`: solve its quadratic for $\xi$ with the stable root.

    In the bin $k$ with $y^{(k)} \le y \le y^{(k+1)}$, setting $g(x) = y$ and clearing the
    denominator gives $a \xi^2 + b \xi + c = 0$ with

    $$
    \begin{aligned}
    a &= h_k (s_k - \delta^{(k)}) + (y - y^{(k)})\,\gamma_k, \qquad
    \gamma_k = \delta^{(k+1)} + \delta^{(k)} - 2s_k, \\
    b &= h_k \delta^{(k)} - (y - y^{(k)})\,\gamma_k, \qquad
    c = -s_k\,(y - y^{(k)}),
    \end{aligned}
    \qquad
    \xi = \frac{2c}{-b - \sqrt{b^2 - 4ac}}, \qquad x = x^{(k)} + \xi\, w_k .
    $$

    The root in this form is the one in $[0, 1]$ and never divides by a small number: $a$ is 0
    whenever the bin is a straight line (the identity, for a start), where the textbook
    $(-b + \sqrt{b^2 - 4ac}) / 2a$ is $0/0$; here $b > 0$ and $c \le 0$, so the denominator
    is at most $-b < 0$. The log-derivative returned is that of the inverse, $-\log g'(x)$.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, 2019. "Neural Spline Flows."
        arXiv:1906.04032, §3.1 and Appendix A (the inverse by solving a quadratic equation,
        with the root written as $2c / (-b - \sqrt{b^2 - 4ac})$).

    Args:
        y: values in $[-B, B]$, shape `(...)`.
        xk: knot positions `(..., K + 1)`.
        yk: knot values `(..., K + 1)`.
        dk: knot derivatives `(..., K + 1)`.

    Returns:
        `(x, log_derivative)`, each shaped like `y`: $g^{-1}(y)$ and $-\log g'(g^{-1}(y))$.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> xk, yk, dk = spline_knots(torch.randn(5), torch.randn(5), torch.randn(4), 3.0)
        >>> x = torch.linspace(-3, 3, 7)
        >>> y, ld = rational_quadratic(x, *(t.expand(7, 6) for t in (xk, yk, dk)))
        >>> x_back, ld_inv = rational_quadratic_inverse(y, *(t.expand(7, 6) for t in (xk, yk, dk)))
        >>> bool((x_back - x).abs().max() < 1e-5), bool((ld + ld_inv).abs().max() < 1e-5)
        (True, True)
    """
    k = search_bins(yk, y)
    x_lo, x_hi = _gather(xk, k)
    y_lo, y_hi = _gather(yk, k)
    d_lo, d_hi = _gather(dk, k)
    w, h = x_hi - x_lo, y_hi - y_lo
    s = h / w
    dy = y - y_lo
    curvature = d_hi + d_lo - 2 * s  # γ_k
    a = h * (s - d_lo) + dy * curvature
    b = h * d_lo - dy * curvature
    c = -s * dy
    discriminant = (b**2 - 4 * a * c).clamp_min(0)  # ≥ 0 exactly; round-off only
    xi = 2 * c / (-b - torch.sqrt(discriminant))
    x = x_lo + xi * w
    xi_1m = xi * (1 - xi)
    denominator = s + curvature * xi_1m
    numerator = s**2 * (d_hi * xi**2 + 2 * s * xi_1m + d_lo * (1 - xi) ** 2)
    return x, 2 * torch.log(denominator) - torch.log(numerator)


def rq_spline(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    *,
    inverse: bool = False,
    min_bin: float = MIN_BIN,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    r"""The spline with linear tails: rational-quadratic on $[-B, B]$, the identity outside.

    $$
    f(v) = \begin{cases} g(v) & |v| \le B \\ v & |v| > B \end{cases}, \qquad
    \log f'(v) = \begin{cases} \log g'(v) & |v| \le B \\ 0 & |v| > B \end{cases} .
    $$

    $g$ maps $[-B, B]$ onto itself with derivative 1 at both ends, so $f$ is a continuously
    differentiable bijection of the whole real line. Values outside are not fed to the
    spline formulas at all (they see a clamped copy), so their gradients stay finite.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, 2019. "Neural Spline Flows."
        arXiv:1906.04032, §3.1 (identity outside $[-B, B]$, "linear tails").

    Args:
        v: values `(...)`: inputs $x$, or outputs $y$ with `inverse=True`.
        widths: raw widths `(..., K)`; see `spline_knots`.
        heights: raw heights `(..., K)`.
        derivatives: raw inner derivatives `(..., K - 1)`.
        bound: $B$.
        inverse: compute $f^{-1}$ and its log-derivative instead.
        min_bin: see `spline_knots`.
        min_derivative: see `spline_knots`.

    Returns:
        `(out, log_derivative)`, each shaped like `v`.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> w, h, d = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 3)
        >>> y, ld = rq_spline(torch.tensor([-5.0, 0.3, 5.0]), w, h, d, bound=2.0)
        >>> y[0].item(), y[2].item(), ld[0].item(), ld[2].item()  # the tails: identity
        (-5.0, 5.0, 0.0, 0.0)
        >>> x, _ = rq_spline(y, w, h, d, bound=2.0, inverse=True)
        >>> round(x[1].item(), 5)
        0.3
    """
    xk, yk, dk = spline_knots(
        widths, heights, derivatives, bound, min_bin=min_bin, min_derivative=min_derivative
    )
    inside = v.abs() <= bound
    clamped = v.clamp(-bound, bound)
    spline = rational_quadratic_inverse if inverse else rational_quadratic
    out, log_derivative = spline(clamped, xk, yk, dk)
    return torch.where(inside, out, v), torch.where(inside, log_derivative, 0.0)


class SplineCoupling(Bijector):
    r"""Rational-quadratic spline coupling: one part of the input bent by a monotonic spline.

    With the conditioning part $x_1$, the transformed part $x_2$ (see `mask`) and, for every
    value of $x_2$, spline parameters $\theta = (\theta^w, \theta^h, \theta^d) =
    \text{subnet}(x_1)$ ($K$ widths, $K$ heights, $K - 1$ derivatives), the layer applies the
    spline $f_\theta$ of `rq_spline` value by value:

    $$
    y_1 = x_1,\quad y_2 = f_{\theta(x_1)}(x_2)
    \qquad\Longleftrightarrow\qquad
    x_1 = y_1,\quad x_2 = f^{-1}_{\theta(y_1)}(y_2), \qquad
    \log|\det J| = \sum_j \log f'_{\theta_j(x_1)}(x_{2,j}) .
    $$

    With `mask="checkerboard"` and mask $b$, the subnet sees $b \odot x$, every pixel gets
    spline parameters, and $y = b \odot x + (1 - b) \odot f_\theta(x)$ with $\log|\det J| =
    \sum (1 - b) \odot \log f'_\theta(x)$. Outside $[-B, B]$ the spline is the identity.

    The subnet outputs $(3K - 1)$ values per transformed value, grouped by channel: for
    transformed channel $j$, outputs $j(3K-1), \dots, (j+1)(3K-1) - 1$ are its $K$ widths, then
    $K$ heights, then $K - 1$ derivatives (at every pixel for images). A subnet that outputs
    zeros (the package's subnets start that way) gives the identity.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, 2019. "Neural Spline Flows."
        arXiv:1906.04032, §2.1 (coupling transforms), §3.1 (monotonic rational-quadratic
        transforms, Eq. 4–5; linear tails), §3.2 (rational-quadratic coupling transform: the
        subnet's outputs and how they are constrained) and Appendix A (inverse).

        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016. "Density estimation using Real NVP."
        arXiv:1605.08803, §3.4 (checkerboard and channel-wise masks, Eq. 9).

    Args:
        channels: $C$ (or $D$); input `(B, C)` or `(B, C, H, W)`.
        subnet: factory `subnet(c_in, c_out)`, called once. `"channel"` mask: `c_in` = size of
            $x_1$, `c_out` = $(3K - 1)$ × size of $x_2$; `"checkerboard"`: `c_in = C`,
            `c_out = (3K - 1) C`.
        mask: `"channel"` (first $\lfloor C/2 \rfloor$ channels vs. the rest) or
            `"checkerboard"` (images only).
        parity: 0 or 1; 1 swaps which part is transformed.
        bins: number of bins $K \ge 2$.
        bound: $B > 0$; the spline acts on $[-B, B]$ and is the identity outside.

    Examples:
        >>> import torch
        >>> from flowlearn import SplineCoupling, mlp
        >>> from flowlearn.checks import jitter_parameters
        >>> _ = torch.manual_seed(0)
        >>> layer = jitter_parameters(SplineCoupling(2, mlp(hidden=16), bins=4), scale=0.2)
        >>> x = torch.randn(5, 2)
        >>> y, logdet = layer(x)
        >>> logdet.shape
        torch.Size([5])
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetFactory,
        *,
        mask: MaskType = "channel",
        parity: int = 0,
        bins: int = 8,
        bound: float = 3.0,
    ) -> None:
        super().__init__()
        check_mask_args("SplineCoupling", channels, mask, parity)
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"SplineCoupling: bins must be an integer >= 2, got {bins!r}")
        if not bound > 0:
            raise ValueError(f"SplineCoupling: bound must be positive, got {bound}")
        self.channels, self.mask, self.parity = channels, mask, parity
        self.bins, self.bound = bins, float(bound)
        self.subnet = coupling_subnet(subnet, channels, mask, parity, per_value=3 * bins - 1)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, mask={self.mask!r}, parity={self.parity}, bins={self.bins}, "
            f"bound={self.bound}"
        )

    def _params(self, x1: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw widths, heights `like.shape + (K,)` and derivatives `like.shape + (K - 1,)`."""
        c, k = like.shape[1], self.bins
        out = self.subnet(x1)
        check_subnet_output(self, out, (like.shape[0], (3 * k - 1) * c, *like.shape[2:]))
        theta = out.reshape(like.shape[0], c, 3 * k - 1, *like.shape[2:])  # (B, c, 3K-1, ...)
        theta = theta.movedim(2, -1)  # (B, c, [H, W,] 3K - 1)
        return theta[..., :k], theta[..., k : 2 * k], theta[..., 2 * k :]

    def _spline(self, v: Tensor, x1: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        w, h, d = self._params(x1, v)
        return rq_spline(v, w, h, d, self.bound, inverse=inverse)

    def _couple(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        r"""Keep $v_1$, bend $v_2$ by $f_{\theta(v_1)}$ (by $f^{-1}_{\theta(v_1)}$ if `inverse`).

        Both directions have this one form: the spline's inverse is the only difference, and
        `rq_spline` returns the log-derivative of the map it applied.
        """
        check_coupling_input(self, v, self.channels, self.mask)
        if self.mask == "channel":
            v1, v2 = split_channels(v, self.parity)
            out2, log_derivative = self._spline(v2, v1, inverse)
            out = merge_channels(v1, out2, self.parity)
        else:
            b = checkerboard(v, self.parity)  # (1, 1, H, W)
            fv, log_derivative = self._spline(v, b * v, inverse)
            log_derivative = (1 - b) * log_derivative  # only transformed pixels count
            out = b * v + (1 - b) * fv
        return out, log_derivative.flatten(1).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""$y_2 = f_{\theta(x_1)}(x_2)$, log-det $\sum_j \log f'(x_{2,j})$."""
        return self._couple(x, inverse=False)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""$x_2 = f^{-1}_{\theta(y_1)}(y_2)$, log-det $-\sum_j \log f'(x_{2,j})$."""
        return self._couple(y, inverse=True)
