r"""flowlearn: normalizing flows you can read, run and trust.

The package reads like the course:

* `flowlearn.core`: the protocol (`forward(x) -> (y, logdet)` from data to latent,
  `inverse(y) -> (x, logdet)` back, one log-determinant per sample) and `FlowSequential`.
* `flowlearn.checks`: the brute-force Jacobian checker every layer passes.
* `flowlearn.layers`: NICE, RealNVP, Glow, squeeze, Haar and neural-spline layers, and the
  conditioner nets.
* `flowlearn.density`: density models on those layers, their data and training.
* `flowlearn.images`: image I/O, MATLAB-compatible bicubic resizing, PSNR/SSIM.
* `flowlearn.irn`: the Invertible Rescaling Net, its training, weights and tools.
"""

from flowlearn import checks, core, density, images, irn, layers
from flowlearn.core.bijector import *  # noqa: F403
from flowlearn.core.memory import *  # noqa: F403
from flowlearn.core.sequential import *  # noqa: F403
from flowlearn.density import datasets as datasets
from flowlearn.density.distributions import *  # noqa: F403
from flowlearn.density.models import *  # noqa: F403
from flowlearn.density.preprocessing import *  # noqa: F403
from flowlearn.density.training import *  # noqa: F403
from flowlearn.irn.model import *  # noqa: F403
from flowlearn.layers import nets
from flowlearn.layers.glow import *  # noqa: F403
from flowlearn.layers.haar import *  # noqa: F403
from flowlearn.layers.masks import *  # noqa: F403
from flowlearn.layers.nets import *  # noqa: F403
from flowlearn.layers.nice import *  # noqa: F403
from flowlearn.layers.permutations import *  # noqa: F403
from flowlearn.layers.realnvp import *  # noqa: F403
from flowlearn.layers.spline import *  # noqa: F403
from flowlearn.layers.squeeze import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    *core.__all__,
    *layers.__all__,
    *density.__all__,
    *irn.model.__all__,
    "checks",
    "core",
    "density",
    "images",
    "layers",
    "irn",
    "nets",
]
