r"""How a coupling layer splits its input into a conditioning part and a transformed part.

Two masks are used by the couplings of NICE and RealNVP (Dinh et al. 2016, arXiv:1605.08803,
§3.4):

* `"channel"` (vectors `(B, D)` and images `(B, C, H, W)`): $x_a$ = the first $\lfloor C/2
  \rfloor$ channels (features), $x_b$ = the other $\lceil C/2 \rceil$. With `parity=0` the
  conditioning part is $x_1 = x_a$ and the transformed part $x_2 = x_b$; `parity=1` swaps the
  roles ($x_1 = x_b$, $x_2 = x_a$). For odd $C$ the transformed part is one channel larger with
  `parity=0` and one smaller with `parity=1`.
* `"checkerboard"` (images only): $m_{hw} = (h + w + \text{parity}) \bmod 2$, the same for
  every channel. Pixels with $m = 1$ pass through unchanged and condition the rest: the subnet
  sees $m \odot x$ (all $C$ channels, the other pixels zeroed). The layer transforms the pixels
  with $1 - m = 1$; with `parity=0` the top-left pixel is transformed. The mask depends on
  $H, W$, read at call time, so it is built for each call on the input's device and dtype
  instead of being stored as a buffer.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from flowlearn.core import SubnetFactory, check_channels, check_rank

__all__ = [
    "MaskType",
    "channel_sizes",
    "check_coupling_input",
    "check_mask_args",
    "check_subnet_output",
    "checkerboard",
    "coupling_subnet",
    "merge_channels",
    "split_channels",
]

MaskType = Literal["channel", "checkerboard"]


def check_mask_args(name: str, channels: int, mask: str, parity: int) -> None:
    """Raise `ValueError` for an unknown `mask`, a `parity` other than 0/1, or too few channels."""
    if mask not in ("channel", "checkerboard"):
        raise ValueError(f"{name}: mask must be 'channel' or 'checkerboard', got {mask!r}")
    if parity not in (0, 1):
        raise ValueError(f"{name}: parity must be 0 or 1, got {parity!r}")
    minimum = 2 if mask == "channel" else 1
    if channels < minimum:
        raise ValueError(
            f"{name}: mask={mask!r} needs at least {minimum} channels, got channels={channels}"
        )


def check_coupling_input(layer: nn.Module, x: Tensor, channels: int, mask: str) -> None:
    """Raise `ValueError` unless `x` is `(B, channels)` or `(B, channels, H, W)` and fits `mask`."""
    if mask == "checkerboard":
        check_rank(layer, x, (4,), "(B, C, H, W) (a checkerboard mask needs images)")
    else:
        check_rank(layer, x, (2, 4))
    check_channels(layer, x, channels)


def channel_sizes(channels: int, parity: int) -> tuple[int, int]:
    r"""Sizes `(c1, c2)` of the conditioning part $x_1$ and the transformed part $x_2$.

    Examples:
        >>> channel_sizes(5, 0), channel_sizes(5, 1)
        ((2, 3), (3, 2))
    """
    half = channels // 2
    return (half, channels - half) if parity == 0 else (channels - half, half)


def coupling_subnet(
    subnet: SubnetFactory, channels: int, mask: str, parity: int, per_value: int
) -> nn.Module:
    r"""Call the factory `subnet(c_in, c_out)` with the sizes a coupling layer needs.

    The subnet sees the conditioning part $x_1$ (`c_in` = its channels, or all $C$ for the
    checkerboard, which zeroes the other pixels instead) and returns `per_value` numbers for every
    value of the transformed part $x_2$ (`c_out` = `per_value` × its channels, or × $C$).

    Examples:
        >>> coupling_subnet(lambda c_in, c_out: nn.Linear(c_in, c_out), 5, "channel", 0, 2)
        Linear(in_features=2, out_features=6, bias=True)
    """
    c1, c2 = channel_sizes(channels, parity) if mask == "channel" else (channels, channels)
    return subnet(c1, per_value * c2)


def split_channels(x: Tensor, parity: int) -> tuple[Tensor, Tensor]:
    r"""Split `x` along dimension 1 into $(x_1, x_2)$ = (conditioning, transformed).

    Examples:
        >>> x = torch.arange(5.0).reshape(1, 5)
        >>> split_channels(x, 0)
        (tensor([[0., 1.]]), tensor([[2., 3., 4.]]))
        >>> split_channels(x, 1)
        (tensor([[2., 3., 4.]]), tensor([[0., 1.]]))
    """
    half = x.shape[1] // 2
    x_a, x_b = x[:, :half], x[:, half:]
    return (x_a, x_b) if parity == 0 else (x_b, x_a)


def merge_channels(x1: Tensor, x2: Tensor, parity: int) -> Tensor:
    r"""Inverse of `split_channels`: put $(x_1, x_2)$ back in their original channel order.

    Examples:
        >>> x = torch.randn(2, 5, 3, 3)
        >>> torch.equal(merge_channels(*split_channels(x, 1), 1), x)
        True
    """
    return torch.cat((x1, x2) if parity == 0 else (x2, x1), dim=1)


def checkerboard(x: Tensor, parity: int) -> Tensor:
    r"""The mask $m_{hw} = (h + w + \text{parity}) \bmod 2$ for `x` of shape `(B, C, H, W)`.

    Returns:
        A `(1, 1, H, W)` tensor of zeros and ones in the dtype and on the device of `x`.

    Examples:
        >>> checkerboard(torch.zeros(1, 1, 2, 3), parity=0)
        tensor([[[[0., 1., 0.],
                  [1., 0., 1.]]]])
    """
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).reshape(h, 1)  # (H, 1)
    cols = torch.arange(w, device=x.device).reshape(1, w)  # (1, W)
    m = (rows + cols + parity) % 2  # (H, W)
    return m.to(x.dtype).reshape(1, 1, h, w)  # (1, 1, H, W)


def check_subnet_output(layer: nn.Module, out: Tensor, expected: tuple[int, ...]) -> None:
    """Raise `ValueError` unless the subnet output `out` has the `expected` shape."""
    if tuple(out.shape) != expected:
        raise ValueError(
            f"{type(layer).__name__}: the subnet returned shape {tuple(out.shape)}, "
            f"expected {expected}"
        )
