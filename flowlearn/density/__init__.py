r"""Density models: flows with a base distribution, trained by maximum likelihood.

* `distributions`: base distributions and `Flow` (a bijector with a base distribution).
* `preprocessing`: dequantisation and the logit transform, as bijectors.
* `models`: NICE and RealNVP models for vectors and images.
* `datasets`: the data of the tutorials (two moons, digits), shipped by packages.
* `training`: the maximum-likelihood training loop and bits per dimension.
* `plot`: the figures of the tutorials.
"""

from flowlearn.density import datasets, distributions, models, plot, preprocessing, training
from flowlearn.density.distributions import *  # noqa: F403
from flowlearn.density.models import *  # noqa: F403
from flowlearn.density.preprocessing import *  # noqa: F403
from flowlearn.density.training import *  # noqa: F403

__all__ = [
    *distributions.__all__,
    *preprocessing.__all__,
    *models.__all__,
    *training.__all__,
    "datasets",
    "plot",
]
