r"""flowlearn: normalizing flows you can read, run and trust.

The layers follow one protocol (`flowlearn.core`): `forward(x) -> (y, logdet)` from data to
latent and `inverse(y) -> (x, logdet)` back, with one log-determinant per sample. Every layer is
checked against a brute-force Jacobian by `flowlearn.checks`.
"""

from flowlearn import checks, core, haar
from flowlearn.core import *  # noqa: F403
from flowlearn.haar import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [*core.__all__, *haar.__all__, "checks"]
