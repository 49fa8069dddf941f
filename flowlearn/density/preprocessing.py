r"""Preprocessing as bijectors, so that every step is counted in the likelihood.

Images are discrete: $x \in \{0, \dots, K-1\}^D$ with $K$ = `n_bins` grey levels. A density model
on $[0, 1]^D$ scores them honestly through *uniform dequantisation*: with
$v = (x + u)/K$, $u \sim \mathcal U[0, 1)^D$, Jensen's inequality gives (Theis, van den Oord &
Bethge 2016, arXiv:1511.01844, §3.1, Eq. 9)

$$
\log P(x) \;\ge\; \mathbb E_u\big[\log p_V(v)\big] - D \log K .
$$

The $-D\log K$ term is the log-determinant of the scaling $x + u \mapsto (x + u)/K$. Forgetting it
is the classic "+8 bits" mistake ($\log_2 256 = 8$ bits per dimension for 8-bit images). Here it
is carried by `UniformDequantization` itself, so a chain such as

```
FlowSequential(UniformDequantization(K), LogitTransform(0.05), model)
```

yields a log-likelihood of the *discrete* data, and `bits_per_dim` turns it into bits per
dimension whether the preprocessing sits inside the flow or is passed separately.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowlearn.core import Bijector
from flowlearn.density.distributions import Flow, nats_to_bits_per_dim

__all__ = ["LogitTransform", "UniformDequantization", "bits_per_dim"]


class UniformDequantization(Bijector):
    r"""Uniform dequantisation of $K$-level data onto $[0, 1)^D$, with the scaling's log-det.

    $$
    v = \frac{x + u}{K},\quad u \sim \mathcal U[0, 1)^D, \qquad
    x = \lfloor K v \rfloor, \qquad
    \log|\det J| = -D \log K .
    $$

    The noise $u$ has density 1 on the unit cube, so it adds nothing to the log-likelihood; the
    forward log-det $-D\log K$ converts a density on $[0,1)^D$ into a lower bound on the
    probability of the discrete $x$ (Theis et al. 2016, §3.1, Eq. 9). This is a *surjection*, not
    a bijection: `inverse(forward(x))` returns `x` exactly, but `forward(inverse(v))` draws new
    noise. It is also the one stochastic layer of the package: each call draws fresh $u$ from
    torch's global generator (seed it with `torch.manual_seed` for reproducible numbers), so it
    does not pass `flowlearn.checks`.

    `inverse` floors without clamping: a sample $v$ outside $[0, 1)$ gives a level outside
    $\{0, \dots, K-1\}$, which is what the model produced.

    References:
        Theis, van den Oord & Bethge (2016). A note on the evaluation of generative models.
        arXiv:1511.01844, §3.1, Eq. (9).
        Dinh, Sohl-Dickstein & Bengio (2016). Density estimation using Real NVP.
        arXiv:1605.08803, §4.1 (uniform noise, $x/256$).

    Args:
        n_bins: the number of discrete levels $K$ (256 for 8-bit images, 17 for sklearn digits).
            Inputs are `(B, ...)` floats holding integers in $\{0, \dots, K-1\}$.

    Examples:
        >>> import torch
        >>> deq = UniformDequantization(n_bins=4)
        >>> x = torch.tensor([[0.0, 3.0]])
        >>> v, logdet = deq(x)
        >>> bool(((v >= 0) & (v < 1)).all()), logdet  # -2 log 4
        (True, tensor([-2.7726]))
        >>> deq.inverse(v)[0]
        tensor([[0., 3.]])
    """

    def __init__(self, n_bins: int) -> None:
        super().__init__()
        if int(n_bins) != n_bins or n_bins < 2:
            raise ValueError(f"UniformDequantization: n_bins must be an integer >= 2, got {n_bins}")
        self.n_bins = int(n_bins)

    def _logdet(self, x: Tensor) -> Tensor:
        return x.new_full((x.shape[0],), x[0].numel() * math.log(self.n_bins))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Add $u \sim U[0,1)$ and divide by $K$; log-det $-D \log K$ per sample."""
        bad = (x < 0) | (x > self.n_bins - 1) | (x != torch.floor(x))
        if bool(bad.any()):
            raise ValueError(
                f"UniformDequantization: expected integer levels in {{0, ..., {self.n_bins - 1}}}, "
                f"received values in [{x.min().item():g}, {x.max().item():g}]"
                + (" with non-integers" if bool((x != torch.floor(x)).any()) else "")
            )
        u = torch.rand_like(x)
        v = (x + u) / self.n_bins
        return v, -self._logdet(x)

    def inverse(self, v: Tensor) -> tuple[Tensor, Tensor]:
        r"""Quantise back to levels $\lfloor K v \rfloor$; log-det $+D \log K$ per sample."""
        x = torch.floor(v * self.n_bins)
        return x, self._logdet(v)

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}"


class LogitTransform(Bijector):
    r"""The logit transform of Real NVP §4.1, mapping $[0, 1)$ data onto the real line.

    With $s = \alpha + \lambda x$, where $\lambda = 1 - \alpha$ as written in the paper
    (`symmetric=False`) or $\lambda = 1 - 2\alpha$ (`symmetric=True`, so that
    $s \in [\alpha, 1 - \alpha]$ and both boundaries stay away from 0 and 1):

    $$
    y = \operatorname{logit}(s) = \log s - \log(1 - s), \qquad
    x = \frac{\sigma(y) - \alpha}{\lambda}, \qquad
    \log|\det J| = \sum_{d} \big(\log\lambda - \log s_d - \log(1 - s_d)\big) .
    $$

    Why: pixel values near 0 and 1 sit at the edge of a bounded interval, where a density on
    $\mathbb R^D$ would need infinite slopes; the logit moves those edges to infinity and $\alpha$
    keeps them finite ("to reduce the impact of boundary effects", §4.1).

    References:
        Dinh, Sohl-Dickstein & Bengio (2016). Density estimation using Real NVP.
        arXiv:1605.08803, §4.1: "we model the density of logit(α + (1 − α) ⊙ x/256)", α = .05.

    Args:
        alpha: the margin $\alpha \in [0, \tfrac12)$; 0.05 in the paper.
        symmetric: use $\lambda = 1 - 2\alpha$ instead of the paper's $1 - \alpha$.
            Inputs are `(B, ...)` with $s$ strictly inside $(0, 1)$, e.g. dequantised data in
            $[0, 1)$.

    Examples:
        >>> import torch
        >>> logit = LogitTransform(alpha=0.05)
        >>> x = torch.tensor([[0.0, 0.5]])
        >>> y, logdet = logit(x)
        >>> y
        tensor([[-2.9444,  0.1001]])
        >>> torch.allclose(logit.inverse(y)[0], x, atol=1e-6)
        True
    """

    def __init__(self, alpha: float = 0.05, *, symmetric: bool = False) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"LogitTransform: alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self.symmetric = bool(symmetric)
        self.lam = 1.0 - (2.0 if symmetric else 1.0) * self.alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""$y = \operatorname{logit}(\alpha + \lambda x)$ with its log-det per sample."""
        s = self.alpha + self.lam * x
        if bool(((s <= 0) | (s >= 1)).any()):
            lo, hi = -self.alpha / self.lam, (1 - self.alpha) / self.lam
            raise ValueError(
                f"LogitTransform: expected inputs in ({lo:g}, {hi:g}) (data on [0, 1), "
                f"alpha={self.alpha}), received values in [{x.min().item():g}, {x.max().item():g}]"
            )
        y = torch.log(s) - torch.log1p(-s)
        logdet = (math.log(self.lam) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""$x = (\sigma(y) - \alpha)/\lambda$ with the inverse map's log-det per sample."""
        s = torch.sigmoid(y)
        x = (s - self.alpha) / self.lam
        # log s + log(1 - s) = logsigmoid(y) + logsigmoid(-y), stable for large |y|
        log_s_1ms = torch.nn.functional.logsigmoid(y) + torch.nn.functional.logsigmoid(-y)
        logdet = (log_s_1ms - math.log(self.lam)).flatten(1).sum(1)
        return x, logdet

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, symmetric={self.symmetric}"


def bits_per_dim(flow: Flow, x: Tensor, preprocess: Bijector | None = None) -> Tensor:
    r"""Mean bits per dimension of the raw data `x` under `preprocess` followed by `flow`.

    $$
    \mathrm{bpd}(x) = -\frac{1}{D\log 2}\Big(\log p_{\text{flow}}\big(g(x)\big)
        + \log|\det J_g(x)|\Big),
    $$

    where $g$ is `preprocess` (for example `FlowSequential(UniformDequantization(K),
    LogitTransform())`), and $D$ counts the dimensions of one raw sample. Every step that
    rescales the data contributes its log-det: with `UniformDequantization(K)` in $g$ or in the
    flow, the $-D\log K$ of the discrete-to-$[0,1)$ scaling is included and the result is an
    upper bound on the bits/dim of the discrete data (one noise draw per sample). Moving a step
    from `preprocess` into the flow's transform does not change the result.

    Args:
        flow: the density model applied after `preprocess`.
        x: raw data `(B, ...)`, e.g. integer grey levels when dequantisation is part of the chain.
        preprocess: optional bijector applied before the flow; `None` scores `x` directly.

    Returns:
        A scalar tensor: the batch mean in bits per dimension.

    Examples:
        >>> import torch
        >>> from flowlearn import FlowSequential, Flow, StandardNormal
        >>> flow = Flow(FlowSequential(), StandardNormal(2))
        >>> x = torch.zeros(1, 2)
        >>> bits_per_dim(flow, x)  # 0.5 log2(2 pi e^0) for each dimension
        tensor(1.3257)
    """
    if preprocess is None:
        log_p = flow.log_prob(x)
    else:
        v, logdet = preprocess(x)
        log_p = flow.log_prob(v) + logdet
    return nats_to_bits_per_dim(-log_p.mean(), x[0].numel())
