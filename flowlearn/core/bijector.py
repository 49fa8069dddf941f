r"""The invertible-layer protocol shared by every flowlearn layer.

A normalizing flow is a chain of invertible maps $f = f_K \circ \dots \circ f_1$ from data $x$
to latent $y$. By the change-of-variables formula (Dinh et al. 2014, arXiv:1410.8516, §2, Eq. 1)

$$
\log p_X(x) = \log p_Y(f(x)) + \log \left|\det \frac{\partial f(x)}{\partial x}\right|,
\qquad
\log\left|\det J_f(x)\right| = \sum_{k=1}^{K} \log\left|\det J_{f_k}(x_{k-1})\right| .
$$

Conventions (every layer in the package follows them, and `flowlearn.checks` tests them):

* `forward(x) -> (y, logdet)` runs **data → latent**, the normalizing direction. For the
  Invertible Rescaling Net that is HR image → (LR image, z).
* `inverse(y) -> (x, logdet)` runs latent → data and returns the log-determinant **of the
  inverse map**, so at matching points `logdet_forward + logdet_inverse == 0`.
* `logdet` has shape `(B,)`: one value per sample, never a batch mean, in the dtype and on the
  device of the input (`x.new_zeros(B)`).
* Layers are stateless between calls: outputs are pure functions of the inputs and the weights
  (buffers included). Nothing is cached on the module, so a layer can be re-run, for example to
  recompute activations by inversion during a memory-saving backward pass.
* Layers never write into their input tensor.
* One tensor in, one tensor out. Shapes are read at call time; constructors take only what they
  need (`channels`, `subnet`). Bad shapes raise one `ValueError` naming the layer, what was
  expected and what was received.
* Fixed tensors (Haar kernels, masks, permutations) are buffers, not parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Bijector",
    "SubnetFactory",
    "check_channels",
    "check_even_spatial",
    "check_rank",
]

SubnetFactory = Callable[[int, int], nn.Module]
"""A factory `subnet(c_in, c_out) -> nn.Module`: `(B, c_in[, H, W])` to `(B, c_out[, H, W])`."""


class Bijector(nn.Module):
    r"""Base class of invertible layers with a tractable per-sample log-determinant.

    Subclasses implement both directions as mirror images:

    $$
    y = f(x),\quad \ell = \log|\det J_f(x)| \qquad\text{and}\qquad
    x = f^{-1}(y),\quad -\ell = \log|\det J_{f^{-1}}(y)| .
    $$

    Examples:
        >>> import torch
        >>> from flowlearn import Bijector
        >>> class Double(Bijector):
        ...     def forward(self, x):
        ...         return 2 * x, x.new_full((x.shape[0],), x[0].numel() * math.log(2))
        ...     def inverse(self, y):
        ...         return y / 2, y.new_full((y.shape[0],), -y[0].numel() * math.log(2))
        >>> import math
        >>> y, ld = Double()(torch.ones(3, 2))
        >>> ld.shape
        torch.Size([3])
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to latent; return `(y, logdet)` with `logdet` of shape `(B,)`."""
        raise NotImplementedError

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map latent to data; return `(x, logdet)` of the inverse map, shape `(B,)`."""
        raise NotImplementedError

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:  # typed wrapper around nn.Module
        return super().__call__(x)


def _fmt(shape: Sequence[int] | torch.Size) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_rank(layer: nn.Module | str, x: Tensor, ranks: Sequence[int], what: str = "") -> None:
    """Raise `ValueError` unless `x.dim()` is one of `ranks`.

    Args:
        layer: the layer (or its name) reported in the message.
        x: the received tensor.
        ranks: accepted numbers of dimensions, e.g. `(2, 4)` for `(B, D)` or `(B, C, H, W)`.
        what: optional description of the expected layout, e.g. `"(B, C, H, W)"`.
    """
    if x.dim() not in ranks:
        name = layer if isinstance(layer, str) else type(layer).__name__
        layouts = {2: "(B, D)", 3: "(B, C, L)", 4: "(B, C, H, W)"}
        expected = what or " or ".join(layouts.get(r, f"{r}-D") for r in ranks)
        raise ValueError(
            f"{name}: expected input of shape {expected}, received shape {_fmt(x.shape)}"
        )


def check_channels(layer: nn.Module | str, x: Tensor, channels: int) -> None:
    """Raise `ValueError` unless dimension 1 of `x` has `channels` entries."""
    if x.dim() < 2 or x.shape[1] != channels:
        name = layer if isinstance(layer, str) else type(layer).__name__
        layout = "(B, C, H, W)" if x.dim() == 4 else "(B, D)"
        raise ValueError(
            f"{name}: expected {channels} channels (dimension 1 of {layout}), "
            f"received shape {_fmt(x.shape)}"
        )


def check_even_spatial(layer: nn.Module | str, x: Tensor, factor: int = 2) -> None:
    """Raise `ValueError` unless `x` is `(B, C, H, W)` with `H` and `W` multiples of `factor`.

    Nothing is ever cropped silently: a 33×33 image is an error, not a 32×32 image.
    """
    check_rank(layer, x, (4,))
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        name = layer if isinstance(layer, str) else type(layer).__name__
        raise ValueError(
            f"{name}: expected height and width divisible by {factor}, received shape "
            f"{_fmt(x.shape)}; pad or crop the input explicitly"
        )
