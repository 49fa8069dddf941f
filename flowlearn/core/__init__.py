r"""The protocol every flowlearn layer follows, and the container that chains layers.

* `Bijector` (`bijector`): the base class, `forward(x) -> (y, logdet)` and
  `inverse(y) -> (x, logdet)`, one log-determinant per sample; the shape checks
  (`check_rank`, `check_channels`, `check_even_spatial`) that give every layer the same errors.
* `FlowSequential` (`sequential`): a chain of bijectors, the container every model is built from.
* `run_sequence`, `inversion_drift` (`memory`): backpropagation by inversion, which keeps
  activation memory flat in depth, and how far its recomputed inputs drift.
"""

from flowlearn.core.bijector import (
    Bijector,
    SubnetFactory,
    check_channels,
    check_even_spatial,
    check_rank,
)
from flowlearn.core.memory import inversion_drift, run_sequence
from flowlearn.core.sequential import FlowSequential

__all__ = [
    "Bijector",
    "FlowSequential",
    "SubnetFactory",
    "check_channels",
    "check_even_spatial",
    "check_rank",
    "inversion_drift",
    "run_sequence",
]
