r"""`FlowSequential`: a chain of bijectors, the container every flowlearn model is built from."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from flowlearn.core.bijector import Bijector
from flowlearn.core.memory import run_sequence

__all__ = ["FlowSequential"]


class FlowSequential(Bijector):
    r"""Composition of bijectors, applied in order by `forward` and in reverse by `inverse`.

    $$
    y = f_K \circ \cdots \circ f_1(x), \qquad
    \log|\det J(x)| = \sum_{k=1}^{K} \log|\det J_{f_k}(x_{k-1})|,
    \qquad x_0 = x .
    $$

    Args:
        *layers: the bijectors $f_1, \dots, f_K$.
        memory_saving: during training, store only the output and recompute every layer's
            input by inversion in the backward pass (`flowlearn.core.memory`): activation memory no
            longer grows with depth, at the cost of about one extra forward pass.
        name: the attribute that holds the layers (an `nn.ModuleList`), and so the prefix of
            their parameter names and state-dict keys, `"<name>.<k>.…"`.

    Examples:
        >>> import torch
        >>> from flowlearn import FlowSequential, Squeeze, Reverse
        >>> flow = FlowSequential(Squeeze(), Reverse())
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, logdet = flow(x)
        >>> y.shape, logdet.shape
        (torch.Size([2, 12, 2, 2]), torch.Size([2]))
        >>> torch.equal(flow.inverse(y)[0], x)
        True
        >>> flow.layers[0] is flow[0]
        True
    """

    def __init__(
        self, *layers: Bijector, memory_saving: bool = False, name: str = "layers"
    ) -> None:
        super().__init__()
        self.memory_saving = memory_saving
        for i, layer in enumerate(layers):
            if not isinstance(layer, Bijector):
                raise TypeError(
                    f"FlowSequential: layer {i} is a {type(layer).__name__}, expected a Bijector"
                )
        self._name = name
        self.add_module(name, nn.ModuleList(layers))  # e.g. self.layers

    def _layers(self) -> nn.ModuleList:
        return self.get_submodule(self._name)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._layers())

    def __iter__(self) -> Iterator[Bijector]:
        return iter(self._layers())  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Bijector:
        return self._layers()[index]  # type: ignore[return-value]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Apply every layer in order; the log-determinants add up."""
        if self.memory_saving:
            return run_sequence(list(self), x, memory_saving=True)
        y, logdet, _ = self.forward_with_intermediates(x, keep=False)
        return y, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Invert every layer in reverse order; the log-determinants add up."""
        if self.memory_saving:
            return run_sequence(list(self), y, reverse=True, memory_saving=True)
        x, logdet, _ = self.inverse_with_intermediates(y, keep=False)
        return x, logdet

    def forward_with_intermediates(
        self, x: Tensor, *, keep: bool = True
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Like `forward`, also returning the output of each layer (for figures and debugging).

        Returns:
            `(y, logdet, outputs)` where `outputs[k]` is the output of layer `k`.
        """
        logdet = x.new_zeros(x.shape[0])
        outputs: list[Tensor] = []
        for layer in self:
            x, ld = layer(x)
            logdet = logdet + ld
            if keep:
                outputs.append(x)
        return x, logdet, outputs

    def inverse_with_intermediates(
        self, y: Tensor, *, keep: bool = True
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Like `inverse`, also returning the output of each inverted layer, last layer first."""
        logdet = y.new_zeros(y.shape[0])
        outputs: list[Tensor] = []
        for layer in reversed(self._layers()):
            y, ld = layer.inverse(y)  # type: ignore[operator]
            logdet = logdet + ld
            if keep:
                outputs.append(y)
        return y, logdet, outputs
