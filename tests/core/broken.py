"""Deliberately broken wrappers around a correct bijector: the checker must catch each one."""

from __future__ import annotations

from torch import Tensor

from flowlearn.core import Bijector


class WrongSign(Bijector):
    """`layer` with the sign of its log-det flipped in both directions."""

    def __init__(self, layer: Bijector) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.layer(x)
        return y, -logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = self.layer.inverse(y)
        return x, -logdet


class BatchMean(Bijector):
    """`layer` with one log-det for the whole batch, broadcast to every sample.

    The original IRN code's convention.
    """

    def __init__(self, layer: Bijector) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.layer(x)
        return y, logdet.mean().expand_as(logdet)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = self.layer.inverse(y)
        return x, logdet.mean().expand_as(logdet)
