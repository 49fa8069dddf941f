r"""Base distributions and the `Flow`: a density built from a bijector and a base distribution.

A flow model is a pair: an invertible map $f$ (data → latent, any `Bijector`) and a simple base
density $p_Z$ on the latent. The density of the data follows from the change-of-variables
formula (Dinh et al. 2014, arXiv:1410.8516, §2, Eq. 1; Dinh et al. 2016, arXiv:1605.08803, §3.1,
Eq. 3)

$$
\log p_X(x) = \log p_Z\big(f(x)\big) + \log\left|\det \frac{\partial f(x)}{\partial x}\right|,
$$

and sampling runs the other way: $z \sim p_Z$, $x = f^{-1}(z)$.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from flowlearn.core import Bijector

__all__ = ["Flow", "StandardLogistic", "StandardNormal", "nats_to_bits_per_dim"]

NumberOrTensor = TypeVar("NumberOrTensor", float, Tensor)


def _event_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    """Normalise an event shape given as an int or a sequence of ints."""
    out = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not out or any(s <= 0 for s in out):
        raise ValueError(f"event shape must be non-empty positive sizes, received {shape!r}")
    return out


class _Base(nn.Module):
    """Shared plumbing of the factorised base distributions: event shape, device and dtype."""

    _anchor: Tensor

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__()
        self.shape = _event_shape(shape)
        # An empty buffer that follows `.to(device, dtype)`, so `sample` knows where to draw.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def event_dims(self) -> int:
        """Number of scalar dimensions $D$ of one sample."""
        return math.prod(self.shape)

    def _check(self, z: Tensor) -> None:
        if tuple(z.shape[1:]) != self.shape:
            expected = ", ".join(map(str, self.shape))
            received = ", ".join(map(str, z.shape))
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (B, {expected}), "
                f"received shape ({received})"
            )

    def _empty(self, n: int) -> Tensor:
        """An uninitialised `(n, *shape)` tensor on the distribution's device and dtype."""
        if n < 0:
            raise ValueError(f"{type(self).__name__}.sample: n must be >= 0, received {n}")
        return self._anchor.new_empty((n, *self.shape))

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class StandardNormal(_Base):
    r"""Standard normal base density $\mathcal N(0, I_D)$, factorised over all dimensions.

    $$
    \log p_Z(z) = -\tfrac12 \sum_{d=1}^{D} z_d^2 - \tfrac{D}{2}\log(2\pi) .
    $$

    Sampling at temperature $T$ draws $z = T\varepsilon$, $\varepsilon \sim \mathcal N(0, I)$, i.e.
    from $\mathcal N(0, T^2 I)$ (Kingma & Dhariwal 2018, Glow, arXiv:1807.03039, §6, Fig. 8);
    `log_prob` always scores under $T = 1$.

    References:
        Dinh, Sohl-Dickstein & Bengio (2016). Density estimation using Real NVP.
        arXiv:1605.08803, §3.1 (prior $p_Z$) and §4.1 ("an isotropic unit norm Gaussian").

    Args:
        shape: event shape of one sample, e.g. `2` or `(1, 8, 8)`; inputs are `(B, *shape)`.

    Examples:
        >>> import torch
        >>> base = StandardNormal(2)
        >>> base.log_prob(torch.zeros(3, 2))
        tensor([-1.8379, -1.8379, -1.8379])
        >>> base.sample(4).shape
        torch.Size([4, 2])
    """

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each sample, shape `(B,)`."""
        self._check(z)
        log_norm = 0.5 * self.event_dims * math.log(2 * math.pi)
        return -0.5 * z.pow(2).flatten(1).sum(1) - log_norm

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Draw `n` samples `(n, *shape)` from $\mathcal N(0, T^2 I)$ with $T$ = `temperature`."""
        eps = self._empty(n).normal_(generator=generator)
        return temperature * eps


class StandardLogistic(_Base):
    r"""Standard logistic base density, factorised over all dimensions (the prior of NICE).

    $$
    \log p_Z(z) = -\sum_{d=1}^{D} \Big(\log\big(1 + e^{z_d}\big) + \log\big(1 + e^{-z_d}\big)\Big),
    $$

    sampled by inverting the CDF: $z = \log u - \log(1 - u)$, $u \sim \mathcal U(0, 1)$; at
    temperature $T$ the sample is $Tz$. Its heavier tails give larger gradients than a Gaussian
    far from the mode, the reason NICE prefers it.

    References:
        Dinh, Krueger & Bengio (2014). NICE: Non-linear Independent Components Estimation.
        arXiv:1410.8516, §3.4 (prior) and §5.1 (logistic prior for MNIST, SVHN, CIFAR-10).

    Args:
        shape: event shape of one sample; inputs are `(B, *shape)`.

    Examples:
        >>> import torch
        >>> base = StandardLogistic(2)
        >>> base.log_prob(torch.zeros(1, 2))  # 2 * log(1/4)
        tensor([-2.7726])
        >>> base.sample(5, temperature=0.5).shape
        torch.Size([5, 2])
    """

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each sample, shape `(B,)`."""
        self._check(z)
        return -(nn.functional.softplus(z) + nn.functional.softplus(-z)).flatten(1).sum(1)

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw `n` samples `(n, *shape)` by the inverse CDF, scaled by `temperature`."""
        # u in (0, 1): uniform_ can return exactly 0, where log u is -inf
        u = (
            self._empty(n)
            .uniform_(generator=generator)
            .clamp_(min=torch.finfo(self._anchor.dtype).tiny)
        )
        return temperature * (torch.log(u) - torch.log1p(-u))


class Flow(nn.Module):
    r"""A normalizing-flow density: bijector $f$ (data → latent) plus base density $p_Z$.

    $$
    \log p_X(x) = \log p_Z\big(f(x)\big) + \log|\det J_f(x)|, \qquad
    x = f^{-1}(z),\; z \sim p_Z .
    $$

    `nll` is the mean of $-\log p_X(x)$ over the batch in nats; it scores `x` *as given*. Bits
    per dimension are `flowlearn.density.preprocessing.bits_per_dim(flow, x, preprocess)`, which
    also adds the log-dets of any rescaling or dequantisation done before the flow.

    References:
        Dinh, Krueger & Bengio (2014). NICE. arXiv:1410.8516, §2, Eq. (1)–(2).
        Dinh, Sohl-Dickstein & Bengio (2016). Real NVP. arXiv:1605.08803, §3.1, Eq. (3).

    Args:
        transform: the bijector $f$, mapping `(B, *shape)` data to `(B, *shape)` latents.
        base: the base distribution on the latent (e.g. `StandardNormal(shape)`).

    Examples:
        >>> import torch
        >>> from flowlearn.core import FlowSequential
        >>> flow = Flow(FlowSequential(), StandardNormal(2))  # identity map
        >>> x = torch.zeros(3, 2)
        >>> flow.log_prob(x)
        tensor([-1.8379, -1.8379, -1.8379])
        >>> round(flow.nll(x).item(), 4), flow.sample(5).shape
        (1.8379, torch.Size([5, 2]))
    """

    def __init__(self, transform: Bijector, base: StandardNormal | StandardLogistic) -> None:
        super().__init__()
        if not isinstance(transform, Bijector):
            raise TypeError(f"Flow: transform must be a Bijector, received {type(transform)}")
        self.transform = transform
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        """Same as `log_prob`."""
        return self.log_prob(x)

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Log-density of each sample by change of variables, shape `(B,)`."""
        z, logdet = self.transform(x)
        return self.base.log_prob(z) + logdet

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Draw `n` samples: $z \sim p_Z$ at `temperature`, then $x = f^{-1}(z)$.

        Gradients flow through the inverse; wrap the call in `torch.no_grad()` when plotting.
        """
        z = self.base.sample(n, temperature=temperature, generator=generator)
        x, _ = self.transform.inverse(z)
        return x

    def nll(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood of the batch in nats (a scalar, the training loss)."""
        return -self.log_prob(x).mean()


def nats_to_bits_per_dim(nll: NumberOrTensor, dims: int) -> NumberOrTensor:
    r"""A negative log-likelihood per sample, in nats, as bits per dimension.

    $$
    \mathrm{bpd} = \frac{-\log p_X(x)}{D \ln 2},
    $$

    with $D$ the number of values in one sample ($C H W$ for an image): the number of bits per
    value an entropy coder driven by the model would need. Every bits-per-dimension figure of
    flowlearn (`flowlearn.density.preprocessing.bits_per_dim`,
    `flowlearn.density.training.evaluate_bits_per_dim`) goes through this function.

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016, "Density estimation using Real NVP",
        arXiv:1605.08803, §4.2 and Table 1 (results in bits/dim).

    Args:
        nll: negative log-likelihood in nats (a number or a tensor of them).
        dims: $D$, the size of one sample.

    Examples:
        >>> round(nats_to_bits_per_dim(2 * math.log(2), 2), 6)  # 2 bits over 2 values
        1.0
    """
    if dims < 1:
        raise ValueError(f"nats_to_bits_per_dim: dims must be positive, got {dims}")
    return nll / (dims * math.log(2))
