r"""flowlearn: normalizing flows you can read, run and trust.

The layers follow one protocol (`flowlearn.core`): `forward(x) -> (y, logdet)` from data to
latent and `inverse(y) -> (x, logdet)` back, with one log-determinant per sample. Every layer is
checked against a brute-force Jacobian by `flowlearn.checks`.
"""

from flowlearn import (
    checks,
    core,
    datasets,
    distributions,
    glow,
    haar,
    irn,
    models,
    nets,
    nice,
    permutations,
    preprocessing,
    realnvp,
    squeeze,
    training,
)
from flowlearn.core import *  # noqa: F403
from flowlearn.distributions import *  # noqa: F403
from flowlearn.glow import *  # noqa: F403
from flowlearn.haar import *  # noqa: F403
from flowlearn.irn.model import *  # noqa: F403
from flowlearn.models import *  # noqa: F403
from flowlearn.nets import *  # noqa: F403
from flowlearn.nice import *  # noqa: F403
from flowlearn.permutations import *  # noqa: F403
from flowlearn.preprocessing import *  # noqa: F403
from flowlearn.realnvp import *  # noqa: F403
from flowlearn.squeeze import *  # noqa: F403
from flowlearn.training import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    *core.__all__,
    *nets.__all__,
    *nice.__all__,
    *realnvp.__all__,
    *permutations.__all__,
    *glow.__all__,
    *squeeze.__all__,
    *haar.__all__,
    *distributions.__all__,
    *preprocessing.__all__,
    *models.__all__,
    *training.__all__,
    *irn.model.__all__,
    "checks",
    "datasets",
    "irn",
]
