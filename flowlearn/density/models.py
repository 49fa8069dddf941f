r"""Complete flow models assembled from the package's layers: NICE, RealNVP, multi-scale RealNVP,
Glow and neural spline flows.

Each model is a `Bijector` (data → latent) with the protocol's `(y, logdet)`. Pair it with a base
distribution to get a density, e.g. `Flow(NICE(2), StandardLogistic(2))` or
`Flow(RealNVP(2), StandardNormal(2))`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowlearn.core import Bijector, FlowSequential, SubnetFactory, check_rank
from flowlearn.layers.glow import ActNorm, InvertibleConv1x1
from flowlearn.layers.nets import conv_net, mlp
from flowlearn.layers.nice import AdditiveCoupling, DiagonalScaling
from flowlearn.layers.realnvp import AffineCoupling
from flowlearn.layers.spline import SplineCoupling
from flowlearn.layers.squeeze import Squeeze

__all__ = ["NICE", "Glow", "MultiScaleRealNVP", "NeuralSplineFlow", "RealNVP", "glow_step"]


def _alternating(model: str, couplings: int, coupling: Callable[[int], Bijector]) -> list[Bijector]:
    """`couplings` layers `coupling(parity)`, the parity alternating 0, 1, 0, ... (at least one)."""
    if couplings < 1:
        raise ValueError(f"{model}: couplings must be positive, got {couplings}")
    return [coupling(k % 2) for k in range(couplings)]


class NICE(FlowSequential):
    r"""NICE for vectors: additive couplings with alternating halves, then a diagonal scaling.

    With $K$ = `couplings` additive couplings $g_k$ (the transformed half alternates, $k$ odd or
    even) and the scaling $S = \operatorname{diag}(e^{s})$ (NICE §3.3, Eq. 7):

    $$
    y = e^{s} \odot g_K \circ \cdots \circ g_1(x), \qquad
    x = g_1^{-1} \circ \cdots \circ g_K^{-1}(e^{-s} \odot y), \qquad
    \log|\det J| = \sum_{d=1}^{D} s_d .
    $$

    The couplings preserve volume, so the scaling carries the whole log-determinant. The paper
    pairs the model with a standard logistic prior (`StandardLogistic(D)`, §3.4). Defaults are
    the paper's MNIST model (§5.1, Table 1): four couplings, each with a ReLU MLP of five
    hidden layers of 1000 units; shrink `hidden` and `depth` to train on a CPU. The paper
    splits odd from even coordinates; here each coupling splits the first
    $\lfloor D/2 \rfloor$ coordinates from the rest (`mask="channel"`), the same model up to
    a fixed permutation of the input.

    References:
        Dinh, Krueger & Bengio (2014). NICE: Non-linear Independent Components Estimation.
        arXiv:1410.8516, §3.2 (additive coupling; at least three layers so that every
        dimension influences every other, "we generally use four"), §3.3 (allowing rescaling),
        §3.4 (prior), §5.1 and Table 1 (four coupling layers, diagonal scaling, logistic
        prior; 5 hidden layers of 1000 units for MNIST).

    Args:
        dim: number of dimensions $D \ge 2$; inputs are `(B, D)`.
        couplings: number of additive coupling layers (4 in the paper).
        hidden: width of each hidden layer of the coupling MLPs (1000 in the paper for MNIST).
        depth: number of hidden layers of the coupling MLPs (5 in the paper for MNIST).
        subnet: a factory `subnet(c_in, c_out)` replacing `mlp(hidden, depth)`.

    Examples:
        >>> import torch
        >>> from flowlearn import Flow, StandardLogistic
        >>> model = NICE(2, hidden=16, depth=2)
        >>> len(model)  # 4 couplings + scaling
        5
        >>> flow = Flow(model, StandardLogistic(2))
        >>> flow.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        dim: int,
        *,
        couplings: int = 4,
        hidden: int = 1000,
        depth: int = 5,
        subnet: SubnetFactory | None = None,
    ) -> None:
        net = subnet if subnet is not None else mlp(hidden=hidden, depth=depth)
        layers = _alternating(
            "NICE",
            couplings,
            lambda parity: AdditiveCoupling(dim, net, mask="channel", parity=parity),
        )
        super().__init__(*layers, DiagonalScaling(dim))
        self.dim = dim


class RealNVP(FlowSequential):
    r"""RealNVP for vectors: a stack of affine couplings whose transformed half alternates.

    With $K$ = `couplings` affine couplings (RealNVP §3.2–3.3, Eq. 4–6), coupling $k$ keeping
    $x_1$ and mapping $x_2 \mapsto x_2 \odot e^{s_k(x_1)} + t_k(x_1)$:

    $$
    y = f_K \circ \cdots \circ f_1(x), \qquad
    \log|\det J| = \sum_{k=1}^{K} \sum_j s_k(x_1^{(k)})_j ,
    $$

    used with a standard normal prior (`StandardNormal(D)`). The paper's batch normalisation is
    left out (small models train without it); each log-scale is bounded softly by `clamp`.

    References:
        Dinh, Sohl-Dickstein & Bengio (2016). Density estimation using Real NVP.
        arXiv:1605.08803, §3.2 (affine coupling, Eq. 4–5), §3.3 (Jacobian Eq. 6, inverse
        Eq. 7–8), §3.5 (alternating pattern, Eq. 10–12, Fig. 4a).

    Args:
        dim: number of dimensions $D \ge 2$; inputs are `(B, D)`.
        couplings: number of affine coupling layers.
        hidden: width of each hidden layer of the coupling MLPs.
        depth: number of hidden layers of the coupling MLPs.
        clamp: bound of each log-scale (see `flowlearn.layers.realnvp.soft_clamp`).
        subnet: a factory `subnet(c_in, c_out)` replacing `mlp(hidden, depth)`.

    Examples:
        >>> import torch
        >>> model = RealNVP(2, couplings=4, hidden=16)
        >>> y, logdet = model(torch.randn(5, 2))
        >>> y.shape, logdet.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        dim: int,
        *,
        couplings: int = 8,
        hidden: int = 64,
        depth: int = 2,
        clamp: float | None = 2.0,
        subnet: SubnetFactory | None = None,
    ) -> None:
        net = subnet if subnet is not None else mlp(hidden=hidden, depth=depth)
        layers = _alternating(
            "RealNVP",
            couplings,
            lambda parity: AffineCoupling(dim, net, mask="channel", parity=parity, clamp=clamp),
        )
        super().__init__(*layers)
        self.dim = dim


def _couplings(
    channels: int, subnet: SubnetFactory, mask: str, n: int, clamp: float | None, actnorm: bool
) -> FlowSequential:
    """`n` affine couplings of one mask type with alternating parity (optional `ActNorm`s)."""
    layers: list[Bijector] = []
    for k in range(n):
        if actnorm:
            layers.append(ActNorm(channels))
        layers.append(AffineCoupling(channels, subnet, mask=mask, parity=k % 2, clamp=clamp))  # type: ignore[arg-type]
    return FlowSequential(*layers)


def _factor_out(h: Tensor, inner: Bijector, *, inverse: bool) -> tuple[Tensor, Tensor]:
    r"""Factor out half the channels of `h` `(B, 4C, H, W)` as $z$, map the other half with `inner`.

    $z$ (the first $2C$ channels) leaves unchanged; the rest goes through `inner` (its inverse
    with `inverse=True`); the two are concatenated back, $z$ first (RealNVP §3.6, Eq. 13–14).
    Returns the concatenation and the log-det of `inner`.
    """
    z, h = h.chunk(2, dim=1)  # factored out z and the rest, each (B, 2C, H, W)
    h, logdet = inner.inverse(h) if inverse else inner(h)  # (B, 2C, H, W)
    return torch.cat([z, h], dim=1), logdet  # (B, 4C, H, W)


class _Scale(Bijector):
    r"""One scale of the multi-scale architecture (RealNVP §3.6), recursing into the next one.

    A full scale: checkerboard couplings → squeeze → channel couplings → factor out half the
    channels as $z$ → the next scale on the other half → concatenate → unsqueeze. The last scale
    (`inner=None`) has only checkerboard couplings.
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetFactory,
        clamp: float | None,
        inner: _Scale | None,
        checker: int,
        channel: int,
        final: int,
        actnorm: bool,
    ) -> None:
        super().__init__()
        self.channels = channels
        if inner is None:
            self.checker = _couplings(channels, subnet, "checkerboard", final, clamp, actnorm)
        else:
            self.checker = _couplings(channels, subnet, "checkerboard", checker, clamp, actnorm)
            self.squeeze = Squeeze()
            self.channel = _couplings(4 * channels, subnet, "channel", channel, clamp, actnorm)
        self.inner = inner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, logdet = self.checker(x)  # (B, C, H, W)
        if self.inner is None:
            return h, logdet
        h, ld = self.squeeze(h)  # (B, 4C, H/2, W/2)
        logdet = logdet + ld
        h, ld = self.channel(h)  # (B, 4C, H/2, W/2)
        logdet = logdet + ld
        h, ld = _factor_out(h, self.inner, inverse=False)  # (B, 4C, H/2, W/2)
        logdet = logdet + ld
        y, ld = self.squeeze.inverse(h)  # (B, C, H, W)
        return y, logdet + ld

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.inner is None:
            return self.checker.inverse(y)
        h, logdet = self.squeeze(y)  # (B, 4C, H/2, W/2)
        h, ld = _factor_out(h, self.inner, inverse=True)  # (B, 4C, H/2, W/2)
        logdet = logdet + ld
        h, ld = self.channel.inverse(h)  # (B, 4C, H/2, W/2)
        logdet = logdet + ld
        h, ld = self.squeeze.inverse(h)  # (B, C, H, W)
        logdet = logdet + ld
        x, ld = self.checker.inverse(h)
        return x, logdet + ld


class _MultiScale(Bijector):
    r"""The part `MultiScaleRealNVP` and `Glow` share: the outermost scale and the latent layout.

    `outer` maps `(B, C, H, W)` to a latent of the same shape; inputs must have $C$ channels and
    $H, W$ divisible by `factor` ($2^{\text{squeezes}}$). `depth` names the number of scales for
    error messages (`"3 scales"`).
    """

    def __init__(self, channels: int, outer: Bijector, factor: int, depth: str) -> None:
        super().__init__()
        self.channels = channels
        self._factor, self._depth = factor, depth
        self.outer = outer

    def _check(self, x: Tensor) -> None:
        check_rank(self, x, (4,))
        factor = self._factor
        if x.shape[1] != self.channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (B, {self.channels}, H, W) with "
                f"H and W divisible by {factor} ({self._depth}), received shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map images to the concatenated latent of the same shape, with the log-det."""
        self._check(x)
        return self.outer(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map a latent of the input's shape back to images, with the inverse log-det."""
        self._check(y)
        return self.outer.inverse(y)

    def _unstack(self, y: Tensor, splits: int) -> tuple[list[Tensor], Tensor]:
        r"""Undo the latent layout `splits` times: $[z^{(1)}, \dots]$ and what is left."""
        self._check(y)
        squeeze, out, h = Squeeze(), [], y
        for _ in range(splits):
            h, _ = squeeze(h)  # (B, 4C_i, H_i/2, W_i/2)
            z, h = h.chunk(2, dim=1)
            out.append(z)
        return out, h


class MultiScaleRealNVP(_MultiScale):
    r"""Multi-scale RealNVP for images: couplings, squeezes and factored-out latents.

    Scale $i < L$ maps $h^{(i-1)}$ (with $C_i$ channels) through `checker` affine couplings with
    alternating checkerboard masks, a squeeze to $4C_i$ channels, `channel` couplings with
    alternating channel-wise masks, and factors out half the channels (RealNVP §3.6, Eq. 13–16):

    $$
    (z^{(i)}, h^{(i)}) = f^{(i)}(h^{(i-1)}), \qquad z^{(L)} = f^{(L)}(h^{(L-1)}), \qquad
    \log|\det J| = \sum_{i=1}^{L} \log|\det J_{f^{(i)}}| ,
    $$

    where the last scale $f^{(L)}$ is `final` checkerboard couplings. Paper defaults: 3, 3 and 4.

    **Latent layout.** `forward` returns one tensor `y` of the input's shape `(B, C, H, W)`.
    Each scale concatenates its $z^{(i)}$ (first) with the output of the deeper scales (second)
    along channels and un-squeezes the result, so `Squeeze()(y)[0][:, :2C]` is $z^{(1)}$ and
    `Squeeze()(y)[0][:, 2C:]` holds the deeper scales, laid out the same way at half the size
    (`split_latent` returns the list $z^{(1)}, \dots, z^{(L)}$). With a factorised base such as
    `StandardNormal((C, H, W))` the layout does not change the likelihood, and sampling at a
    temperature scales every $z^{(i)}$ alike.

    As in the paper, the hidden width of the $s, t$ networks doubles at each coarser scale
    (`hidden`, `2 * hidden`, ...). Choices that differ from it, to train on a CPU: the networks
    are Glow's small three-convolution nets (`conv_net`) instead of residual networks, there is
    no batch normalisation, and each log-scale is soft-clamped by `clamp`.

    References:
        Dinh, Sohl-Dickstein & Bengio (2016). Density estimation using Real NVP.
        arXiv:1605.08803, §3.4 (checkerboard and channel-wise masks, Eq. 9, Fig. 3),
        §3.6 (multi-scale architecture, squeezing and factoring out, Eq. 13–16, Fig. 4b).

    Args:
        channels: $C$; inputs are `(B, C, H, W)` with $H, W$ divisible by $2^{L-1}$.
        scales: number of scales $L \ge 1$ ($L - 1$ squeezes).
        hidden: channels of the hidden feature maps of the coupling networks at the first
            scale, doubled at each further scale.
        checker: checkerboard couplings at the start of each full scale.
        channel: channel-wise couplings after each squeeze.
        final: checkerboard couplings of the last scale.
        clamp: bound of each log-scale.
        actnorm: put an `ActNorm` (Glow §3.1, data-dependent initialisation on the first
            batch) before every coupling, in place of the paper's batch normalisation (§3.7).
        subnet: a factory `subnet(c_in, c_out)` used at every scale instead of `conv_net`.

    Examples:
        >>> import torch
        >>> model = MultiScaleRealNVP(1, scales=2, hidden=8)
        >>> x = torch.rand(2, 1, 8, 8)
        >>> y, logdet = model(x)
        >>> y.shape, logdet.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2]))
        >>> [z.shape[1:] for z in model.split_latent(y)]
        [torch.Size([2, 4, 4]), torch.Size([2, 4, 4])]
    """

    def __init__(
        self,
        channels: int,
        *,
        scales: int = 2,
        hidden: int = 64,
        checker: int = 3,
        channel: int = 3,
        final: int = 4,
        clamp: float | None = 2.0,
        actnorm: bool = False,
        subnet: SubnetFactory | None = None,
    ) -> None:
        if scales < 1:
            raise ValueError(f"MultiScaleRealNVP: scales must be positive, got {scales}")
        inner: _Scale | None = None
        # build from the innermost scale out: scale i works on C * 2**i channels
        for i in reversed(range(scales)):
            net = subnet if subnet is not None else conv_net(hidden=hidden * 2**i)
            inner = _Scale(channels * 2**i, net, clamp, inner, checker, channel, final, actnorm)
        assert inner is not None
        super().__init__(channels, inner, 2 ** (scales - 1), f"{scales} scales")
        self.scales = scales

    def split_latent(self, y: Tensor) -> list[Tensor]:
        r"""Split a latent `y` `(B, C, H, W)` into $[z^{(1)}, \dots, z^{(L)}]$.

        $z^{(i)}$ has shape `(B, 2^i C, H/2^i, W/2^i)` for $i < L$ and $z^{(L)}$ the shape of
        $h^{(L-1)}$, `(B, 2^{L-1} C, H/2^{L-1}, W/2^{L-1})`.
        """
        zs, h = self._unstack(y, self.scales - 1)
        return [*zs, h]


def glow_step(channels: int, subnet: SubnetFactory, clamp: float | None) -> FlowSequential:
    r"""One step of Glow's flow: `ActNorm` → `InvertibleConv1x1` → affine coupling (Glow Fig. 2a).

    The coupling always transforms the second half of the channels (`parity=0`): the learned
    1×1 convolution before it decides which mixtures of channels end up in which half, the job
    that the alternating halves and fixed permutations do in NICE and RealNVP.

    Args:
        channels: $C$ of the `(B, C, H, W)` input.
        subnet: factory `subnet(c_in, c_out)` of the coupling network.
        clamp: bound of the coupling's log-scale (see `AffineCoupling`).

    Examples:
        >>> from flowlearn import conv_net
        >>> [type(layer).__name__ for layer in glow_step(4, conv_net(hidden=8), 2.0)]
        ['ActNorm', 'InvertibleConv1x1', 'AffineCoupling']
    """
    return FlowSequential(
        ActNorm(channels),
        InvertibleConv1x1(channels),
        AffineCoupling(channels, subnet, mask="channel", parity=0, clamp=clamp),
    )


class _GlowLevel(Bijector):
    r"""One level of Glow (Glow §3, Fig. 2b), recursing into the next one.

    squeeze → `steps` flow steps → (not the last level) split off half the channels as $z$,
    the next level on the other half, concatenate → unsqueeze.
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetFactory,
        clamp: float | None,
        steps: int,
        inner: _GlowLevel | None,
    ) -> None:
        super().__init__()
        self.squeeze = Squeeze()
        self.steps = FlowSequential(*[glow_step(4 * channels, subnet, clamp) for _ in range(steps)])
        self.inner = inner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, logdet = self.squeeze(x)  # (B, 4C, H/2, W/2)
        h, ld = self.steps(h)
        logdet = logdet + ld
        if self.inner is not None:
            h, ld = _factor_out(h, self.inner, inverse=False)  # split: (B, 4C, H/2, W/2)
            logdet = logdet + ld
        y, ld = self.squeeze.inverse(h)  # (B, C, H, W)
        return y, logdet + ld

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        h, logdet = self.squeeze(y)  # (B, 4C, H/2, W/2)
        if self.inner is not None:
            h, ld = _factor_out(h, self.inner, inverse=True)  # (B, 4C, H/2, W/2)
            logdet = logdet + ld
        h, ld = self.steps.inverse(h)
        logdet = logdet + ld
        x, ld = self.squeeze.inverse(h)  # (B, C, H, W)
        return x, logdet + ld


class Glow(_MultiScale):
    r"""Glow for images: levels of squeeze, flow steps (actnorm, 1×1 convolution, coupling), split.

    Level $i < L$ squeezes $h^{(i-1)}$ ($C_i$ channels) to $4C_i$ channels, applies `steps`
    flow steps, each $\text{ActNorm} \to \text{InvertibleConv1x1} \to \text{AffineCoupling}$
    (see `glow_step`), and splits off half the channels as $z^{(i)}$; the last level squeezes
    and applies its steps, with no split (Glow §3, Fig. 2; the multi-scale architecture of
    RealNVP §3.6):

    $$
    (z^{(i)}, h^{(i)}) = \operatorname{split}\bigl(F_i(\operatorname{squeeze}(h^{(i-1)}))\bigr),
    \qquad z^{(L)} = F_L(\operatorname{squeeze}(h^{(L-1)})), \qquad
    \log|\det J| = \sum_{i=1}^{L} \log|\det J_{F_i}| ,
    $$

    where each step of $F_i$ adds $-HW\sum_c \log\sigma_c$ (actnorm), $HW \sum_c \log|s_c|$
    (1×1 convolution) and $\sum s$ (coupling) at that level's size $H \times W$.

    **Latent layout.** As in `MultiScaleRealNVP`: `forward` returns one tensor of the input's
    shape; each level concatenates $z^{(i)}$ (first) with the deeper output (second) and
    un-squeezes it. `split_latent` returns $z^{(1)}, \dots, z^{(L)}$.

    Choices that differ from the paper, to train on a CPU: the coupling networks are
    `conv_net` (the paper's NN() of §5, narrower; zero-initialised last layer as in §3.3), the
    coupling's log-scale is soft-clamped (`soft_clamp`) instead of Glow's
    $\operatorname{sigmoid}(\cdot + 2)$ scale, and the split-off $z^{(i)}$ go to a fixed
    standard normal, not to a prior learned from $h^{(i)}$.

    References:
        D. P. Kingma, P. Dhariwal, 2018. "Glow: Generative Flow with Invertible 1x1
        Convolutions." arXiv:1807.03039, §3 and Fig. 2 (one step of flow; the multi-scale
        architecture with $K$ steps per level and $L$ levels), §3.1–3.3 and Table 1 (actnorm,
        invertible 1×1 convolution, affine coupling).

        L. Dinh, J. Sohl-Dickstein, S. Bengio, 2016. "Density estimation using Real NVP."
        arXiv:1605.08803, §3.6 (squeezing and factoring out, Eq. 13–16).

    Args:
        channels: $C$; inputs are `(B, C, H, W)` with $H, W$ divisible by $2^L$.
        levels: number of levels $L \ge 1$ (each squeezes once).
        steps: flow steps $K$ per level.
        hidden: channels of the hidden feature maps of the coupling networks (every level).
        clamp: bound of each coupling's log-scale.
        subnet: a factory `subnet(c_in, c_out)` used at every level instead of `conv_net`.

    Examples:
        >>> import torch
        >>> model = Glow(1, levels=2, steps=2, hidden=8)
        >>> x = torch.rand(2, 1, 8, 8)
        >>> y, logdet = model(x)  # the first call initialises every ActNorm from x
        >>> y.shape, logdet.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2]))
        >>> [tuple(z.shape[1:]) for z in model.split_latent(y)]
        [(2, 4, 4), (8, 2, 2)]
    """

    def __init__(
        self,
        channels: int,
        *,
        levels: int = 2,
        steps: int = 4,
        hidden: int = 64,
        clamp: float | None = 2.0,
        subnet: SubnetFactory | None = None,
    ) -> None:
        if levels < 1 or steps < 1:
            raise ValueError(f"Glow: levels and steps must be positive, got {levels}, {steps}")
        net = subnet if subnet is not None else conv_net(hidden=hidden)
        inner: _GlowLevel | None = None
        # build from the innermost level out: level i works on C * 2**i channels (before squeeze)
        for i in reversed(range(levels)):
            inner = _GlowLevel(channels * 2**i, net, clamp, steps, inner)
        assert inner is not None
        super().__init__(channels, inner, 2**levels, f"{levels} levels")
        self.levels = levels

    def split_latent(self, y: Tensor) -> list[Tensor]:
        r"""Split a latent `y` `(B, C, H, W)` into $[z^{(1)}, \dots, z^{(L)}]$.

        $z^{(i)}$ has shape `(B, 2^i C, H/2^i, W/2^i)` for $i < L$ and $z^{(L)}$, the last
        level's whole squeezed output, `(B, 2^{L+1} C, H/2^L, W/2^L)`.
        """
        zs, h = self._unstack(y, self.levels - 1)
        return [*zs, Squeeze()(h)[0]]  # the last level's squeezed output


class NeuralSplineFlow(FlowSequential):
    r"""Neural spline flow for vectors: rational-quadratic spline couplings, alternating halves.

    With $K$ = `couplings` spline couplings (`SplineCoupling`), coupling $k$ keeping $x_1$ and
    bending every value of $x_2$ by a monotonic rational-quadratic spline $f_{\theta_k(x_1)}$
    with `bins` bins on $[-B, B]$ (the identity outside):

    $$
    y = f_K \circ \cdots \circ f_1(x), \qquad
    \log|\det J| = \sum_{k=1}^{K} \sum_j \log f'_{\theta_k(x_1^{(k)})}\bigl(x_{2,j}^{(k)}\bigr),
    $$

    used with a standard normal prior (`StandardNormal(D)`). The paper's coupling models
    alternate the halves with permutations or LU-linear layers between couplings; in two
    dimensions alternating `parity` is the same thing.

    References:
        C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, 2019. "Neural Spline Flows."
        arXiv:1906.04032, §3.1 (rational-quadratic transforms, Eq. 4–5) and §3.2
        (rational-quadratic coupling transform, RQ-NSF (C)).

    Args:
        dim: number of dimensions $D \ge 2$; inputs are `(B, D)`.
        couplings: number of spline couplings.
        bins: bins $K$ of every spline.
        bound: $B$; each spline acts on $[-B, B]$.
        hidden: width of each hidden layer of the coupling MLPs.
        depth: number of hidden layers of the coupling MLPs.
        subnet: a factory `subnet(c_in, c_out)` replacing `mlp(hidden, depth)`.

    Examples:
        >>> import torch
        >>> model = NeuralSplineFlow(2, couplings=2, bins=4, hidden=16)
        >>> x = torch.randn(5, 2)
        >>> y, logdet = model(x)
        >>> torch.allclose(y, x, atol=1e-6), logdet.shape  # a fresh model is the identity
        (True, torch.Size([5]))
    """

    def __init__(
        self,
        dim: int,
        *,
        couplings: int = 4,
        bins: int = 8,
        bound: float = 4.0,
        hidden: int = 64,
        depth: int = 2,
        subnet: SubnetFactory | None = None,
    ) -> None:
        net = subnet if subnet is not None else mlp(hidden=hidden, depth=depth)
        layers = _alternating(
            "NeuralSplineFlow",
            couplings,
            lambda parity: SplineCoupling(
                dim, net, mask="channel", parity=parity, bins=bins, bound=bound
            ),
        )
        super().__init__(*layers)
        self.dim = dim
