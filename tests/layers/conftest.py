"""Helpers shared by the coupling-layer tests: a jittered coupling and a seeded sample."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowlearn.checks import jitter_parameters
from flowlearn.core import Bijector
from flowlearn.layers.nets import conv_net, mlp


def make_coupling(
    cls: type[Bijector],
    channels: int,
    mask: str,
    parity: int,
    image: bool,
    dtype: torch.dtype,
    seed: int = 0,
    **options: Any,
) -> Any:
    """A coupling `cls` with a jittered (non-identity) subnet: `conv_net` for images, else `mlp`."""
    torch.manual_seed(seed)
    subnet = conv_net(hidden=8) if image else mlp(hidden=16)
    layer = cls(channels, subnet, mask=mask, parity=parity, **options)  # type: ignore[call-arg]
    return jitter_parameters(layer, scale=0.3, seed=seed).to(dtype)


def sample(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
