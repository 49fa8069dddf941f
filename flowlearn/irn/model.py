r"""The Invertible Rescaling Net: Haar downsampling and IRN couplings, HR image ↔ (LR image, z)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowlearn.core import Bijector, FlowSequential, check_channels, check_even_spatial, check_rank
from flowlearn.images.metrics import quantize_8bit
from flowlearn.irn.block import IRNCoupling
from flowlearn.layers.haar import HaarDownsampling
from flowlearn.layers.nets import dense_block

__all__ = ["IRN"]

SCALES = (2, 4, 8)


class IRN(FlowSequential):
    r"""Invertible Rescaling Net (IRN): a bijection between an HR image and an (LR image, z) pair.

    For scale $s = 2^L$ the network is the list of `operations`

    $$
    f = \bigl(\mathrm{InvBlock}^{(L)}_{n_L} \circ \dots \circ \mathrm{InvBlock}^{(L)}_1 \circ
    \mathrm{Haar}^{(L)}\bigr) \circ \dots \circ
    \bigl(\mathrm{InvBlock}^{(1)}_{n_1} \circ \dots \circ \mathrm{InvBlock}^{(1)}_1 \circ
    \mathrm{Haar}^{(1)}\bigr),
    $$

    each level a Haar transform with the `"mean"` normalisation (`HaarDownsampling`) followed by
    $n_\ell$ couplings (`IRNCoupling`, dense-block sub-networks, split = 3). The forward map
    sends an HR image $x$ `(B, 3, H, W)` to $f(x) = [y, z]$ `(B, 3s², H/s, W/s)`: channels 0–2
    are the LR image $y$, the remaining $3(s^2 - 1)$ are the latent $z$ (never factored out; z
    of every level passes through the later levels). The inverse
    $x = f^{-1}([y, z])$ upscales; at test time $z \sim \mathcal{N}(0, I)$ is drawn, since the
    training objective pushes the latent towards a standard normal. The log-determinant per
    sample is the sum over the operations, $-CHW\ln 2$ for each Haar level plus $\sum s$ for
    each coupling.

    The construction order (and therefore the seeded initialisation and the `state_dict` keys
    `operations.<i>.F.conv1.weight`, …) is that of the original code: `torch.manual_seed(0);
    IRN(4)` gives the same weights as the original network built after the same seed.

    References:
        M. Xiao, S. Zheng, C. Liu, Y. Wang, D. He, G. Ke, J. Bian, Z. Lin, T.-Y. Liu, 2020.
        "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §3.1 (model), §3.2
        (architecture: Haar transformation and InvBlock, Eq. 1–2).

    Args:
        scale: rescaling factor $s$, one of 2, 4, 8 ($\log_2 s$ Haar levels).
        blocks: couplings per level (default 8 per level, as in the paper).
        clamp: bound of the coupling exponent $s$.
        growth: channels added by each convolution of the dense-block sub-networks.
        channels: image channels (3 for RGB); also the size of the LR branch of each coupling.
        memory_saving: during training, recompute activations by inversion instead of storing
            them (`FlowSequential`, `flowlearn.core.memory`); same gradients up to round-off, a
            fraction of the memory.

    `IRN` is a `FlowSequential` whose layers are named `operations`, as in the original code.
    `flowlearn.irn.fast.accelerate(net)` switches the same network, with the same parameters,
    to a faster arrangement of the same arithmetic.

    Examples:
        >>> import torch
        >>> from flowlearn import IRN
        >>> _ = torch.manual_seed(0)
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> hr = torch.rand(1, 3, 8, 8)
        >>> y, logdet = net(hr)
        >>> y.shape  # LR in channels 0-2, z in channels 3-11
        torch.Size([1, 12, 4, 4])
        >>> lr, z = net.split(y)
        >>> torch.allclose(net.inverse(net.join(lr, z))[0], hr, atol=1e-6)
        True
        >>> net.upscale(net.downscale(hr), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 8, 8])
    """

    operations: nn.ModuleList  # the layers (`FlowSequential(..., name="operations")`)

    def __init__(
        self,
        scale: int = 2,
        *,
        blocks: Sequence[int] | None = None,
        clamp: float = 1.0,
        growth: int = 32,
        channels: int = 3,
        memory_saving: bool = False,
    ) -> None:
        if scale not in SCALES:
            raise ValueError(
                f"IRN: scale must be one of {', '.join(map(str, SCALES))}, got {scale}"
            )
        levels = int(math.log2(scale))
        blocks = [8] * levels if blocks is None else list(blocks)
        if len(blocks) != levels or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in blocks
        ):
            raise ValueError(
                f"IRN: blocks must list {levels} non-negative integer(s) (one per Haar level "
                f"of scale {scale}), got {blocks}"
            )
        if channels < 1 or growth < 1:
            raise ValueError(f"IRN: channels and growth must be positive, got {channels}, {growth}")
        if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0:
            raise ValueError(f"IRN: clamp must be a number > 0, got {clamp!r}")
        if not math.isfinite(clamp):
            raise ValueError(f"IRN: clamp must be finite, got {clamp!r}")
        subnet = dense_block(growth=growth)
        operations: list[Bijector] = []
        current = channels
        for n_blocks in blocks:  # one Haar level: (B, c, h, w) -> (B, 4c, h/2, w/2)
            operations.append(HaarDownsampling(current, normalization="mean"))
            current *= 4
            operations += [
                IRNCoupling(current, subnet, split=channels, clamp=clamp) for _ in range(n_blocks)
            ]
        # state-dict keys operations.<i>.F.conv1.weight, ... as in the original checkpoints
        super().__init__(*operations, memory_saving=memory_saving, name="operations")
        self.scale = scale
        self.blocks = blocks
        self.clamp = float(clamp)
        self.growth = growth
        self.channels = channels

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments: `IRN(**net.config)` builds the same architecture."""
        return {
            "scale": self.scale,
            "blocks": list(self.blocks),
            "clamp": self.clamp,
            "growth": self.growth,
            "channels": self.channels,
        }

    @property
    def bijectors(self) -> list[Bijector]:
        """The operations (Haar levels and couplings) in order, typed as `Bijector`s.

        The same modules as `operations` (whose `nn.ModuleList` gives the state-dict keys), as a
        list to pass where bijectors are expected, e.g. `flowlearn.core.memory.inversion_drift`.
        """
        return list(self)

    @property
    def latent_channels(self) -> int:
        """Channels of z: $C(s^2 - 1)$."""
        return self.channels * (self.scale**2 - 1)

    # ----------------------------------------------------------------------------- bijection

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """HR `(B, 3, H, W)` → `[LR, z]` `(B, 3s², H/s, W/s)`; log-det `(B,)`."""
        self._check_input(x, "forward", "an HR image")
        check_channels(self, x, self.channels)
        check_even_spatial(self, x, self.scale)
        return super().forward(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """`[LR, z]` `(B, 3s², h, w)` → HR `(B, 3, sh, sw)`; log-det of the inverse `(B,)`."""
        check_rank(self, y, (4,))
        check_channels(self, y, self.channels * self.scale**2)
        return super().inverse(y)

    def _check_input(
        self, x: Tensor, method: str, what: str, *, in_unit_range: bool = False
    ) -> None:
        r"""Refuse what the network would silently turn into nonsense; converts nothing.

        `x` must be a `(B, C, H, W)` tensor with $B \geq 1$, of the weights' floating dtype, and
        finite; with `in_unit_range`, its values must look like [0, 1] images (within
        [-0.5, 1.5], which allows the overshoot of bicubic resampling but not 0-255 values).
        """
        where = f"IRN.{method}"
        if not isinstance(x, Tensor):
            raise TypeError(f"{where}: expected {what} as a torch.Tensor, got {type(x).__name__}")
        check_rank(self, x, (4,))
        weight = next(self.parameters(), None)
        dtype = torch.get_default_dtype() if weight is None else weight.dtype
        if not x.is_floating_point():
            raise TypeError(
                f"{where}: expected {what} as {dtype} in [0, 1], got {x.dtype}; convert, "
                "e.g. x.to(torch.float32) / 255 for 8-bit images"
            )
        if x.dtype != dtype:
            raise TypeError(
                f"{where}: the input is {x.dtype} but the weights are {dtype}; convert one of "
                f"them (x.to({dtype}) or net.to({x.dtype}))"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{where}: the batch is empty (shape {tuple(x.shape)})")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"{where}: {what} hold {bad} NaN or infinite values; expected finite")
        if in_unit_range:
            low, high = float(x.detach().amin()), float(x.detach().amax())
            if low < -0.5 or high > 1.5:
                raise ValueError(
                    f"{where}: expected {what} with values in [0, 1], got values in "
                    f"[{low:g}, {high:g}] (for 0-255 images divide by 255)"
                )

    # ----------------------------------------------------------------------------- rescaling

    def split(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Split `[LR, z]` `(B, 3s², h, w)` into LR `(B, 3, h, w)` and z `(B, 3(s²-1), h, w)`."""
        check_rank(self, y, (4,))
        check_channels(self, y, self.channels * self.scale**2)
        return y[:, : self.channels], y[:, self.channels :]

    def join(self, lr: Tensor, z: Tensor) -> Tensor:
        """Concatenate an LR image `(B, 3, h, w)` and a latent `(B, 3(s²-1), h, w)`."""
        check_rank(self, lr, (4,))
        check_channels(self, lr, self.channels)
        expected = self.latent_shape(lr.shape)
        if tuple(z.shape) != expected:
            raise ValueError(
                f"IRN: expected z of shape {expected} for an LR image of shape "
                f"{tuple(lr.shape)}, received shape {tuple(z.shape)}"
            )
        return torch.cat((lr, z), dim=1)  # (B, 3s², h, w)

    def latent_shape(self, lr_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of z for an LR image of shape `(B, 3, h, w)` (or `(3, h, w)`)."""
        shape = tuple(int(n) for n in lr_shape)
        if len(shape) not in (3, 4) or shape[-3] != self.channels:
            raise ValueError(
                f"IRN: expected an LR shape (B, {self.channels}, h, w), received {shape}"
            )
        return (*shape[:-3], self.latent_channels, *shape[-2:])

    def downscale(self, hr: Tensor) -> Tensor:
        """HR `(B, 3, H, W)` in [0, 1] → 8-bit LR `(B, 3, H/s, W/s)` (clamped, rounded to 1/255).

        Gradients pass the rounding unchanged (straight-through, as in training).
        """
        self._check_input(hr, "downscale", "HR images", in_unit_range=True)
        lr, _ = self.split(self(hr)[0])
        return quantize_8bit(lr, straight_through=True)

    def upscale(
        self,
        lr: Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""LR `(B, 3, h, w)` → HR `(B, 3, sh, sw)` with a sampled $z \sim \mathcal{N}(0, T^2 I)$.

        Args:
            lr: the LR image (ideally one produced by `downscale`; IRN is not a
                super-resolution model for arbitrary LR images).
            temperature: standard deviation $T$ of z (0 gives the mode $z = 0$).
            generator: random generator for z (on the device of `lr`), for repeatable draws.
        """
        self._check_input(lr, "upscale", "LR images", in_unit_range=True)
        check_channels(self, lr, self.channels)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"IRN.upscale: temperature must be a number, got {temperature!r}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"IRN.upscale: temperature must be finite and >= 0, got {temperature}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"IRN.upscale: generator must be a torch.Generator or None, got "
                f"{type(generator).__name__} (for a seed s: torch.Generator().manual_seed(s))"
            )
        z = torch.randn(
            self.latent_shape(lr.shape), generator=generator, device=lr.device, dtype=lr.dtype
        )
        return self.inverse(self.join(lr, temperature * z))[0]
