r"""The invertible layers of the course, in its order: NICE, RealNVP, Glow, squeeze, Haar, splines.

* `nets`: conditioner networks (`MLP`, `ConvNet`, `DenseBlock`) and their factories.
* `masks`: binary masks (checkerboard, channel) for the couplings.
* `nice`: additive coupling and diagonal scaling (Dinh et al. 2014).
* `realnvp`: affine coupling (Dinh et al. 2016).
* `permutations`: the fixed permutations of NICE and RealNVP (`Reverse`, `Shuffle`).
* `glow`: `ActNorm` and the invertible 1×1 convolution (Kingma & Dhariwal 2018).
* `squeeze`: space-to-depth, `(B, C, H, W) -> (B, 4C, H/2, W/2)`.
* `haar`: the Haar wavelet as an invertible downsampling layer.
* `spline`: the rational-quadratic spline coupling of neural spline flows (Durkan et al. 2019).
"""

from flowlearn.layers import (
    glow,
    haar,
    masks,
    nets,
    nice,
    permutations,
    realnvp,
    spline,
    squeeze,
)
from flowlearn.layers.glow import *  # noqa: F403
from flowlearn.layers.haar import *  # noqa: F403
from flowlearn.layers.masks import *  # noqa: F403
from flowlearn.layers.nets import *  # noqa: F403
from flowlearn.layers.nice import *  # noqa: F403
from flowlearn.layers.permutations import *  # noqa: F403
from flowlearn.layers.realnvp import *  # noqa: F403
from flowlearn.layers.spline import *  # noqa: F403
from flowlearn.layers.squeeze import *  # noqa: F403

__all__ = [
    *nets.__all__,
    *masks.__all__,
    *nice.__all__,
    *realnvp.__all__,
    *permutations.__all__,
    *glow.__all__,
    *squeeze.__all__,
    *haar.__all__,
    *spline.__all__,
]
