r"""Rescale images of any size in bounded memory: IRN run tile by tile, with overlapping margins.

A whole 24-megapixel photo does not go through the network at once on a laptop: the dense
blocks hold about half a kilobyte of activations per HR pixel. IRN is local, though. Every
operation is a Haar transform (2×2 blocks) or a coupling whose sub-networks are five 3×3
convolutions, so an output pixel depends only on the input pixels within a finite distance, the
receptive field. `map_tiles` cuts the LR pixel grid into tiles, runs each tile together with a
margin of `margin` LR pixels of its neighbours (`scale · margin` HR pixels), and keeps only the
tile's centre. Tiles start on multiples of the scale in HR pixels, so every Haar level sees the
same 2×2 blocks as in the whole image; at the image border a tile sees the border, as the whole
image does. The only difference from the whole image is therefore what lies beyond the margin.

The latent of `upscale_tiled` is drawn for the whole image first, by the same call as
`IRN.upscale` makes, so a seeded generator gives the same $z$ tiled or not.

**The margin.** The theoretical receptive field is large: each coupling applies its
sub-networks twice in sequence (Eq. 1 then Eq. 2 of the paper), each five 3×3 convolutions deep,
so eight couplings reach $8 \cdot 2 \cdot 5 = 80$ pixels at their level's resolution, 80 LR
pixels at ×2 and $80/2 + 80 = 120$ at ×4. What matters is how much of that influence survives.
`benchmarks/irn_tiling.py --margin` changes one pixel in the middle of a 1024² photo (one HR
pixel for the forward map; one LR pixel, or one latent pixel by 3, for the inverse) and records
the largest change of any output value at each distance: the first table gives the farthest
distance (LR pixels, Chebyshev) at which the shipped models' output changes at all, by more
than float32 round-off and by more than half an 8-bit level. The second table is what tiling
itself does: the largest error of a 32² LR tile run with a margin of that many LR pixels
around it, against the whole-image result, at four places of the photo (forward: the LR
before rounding; inverse: the HR image).

| scale | change | reach (any) | above 1e-6 | above 1/510 |
|---|---|---|---|---|
| ×2 | one HR pixel, forward | 41 | 15 | 6 |
| ×2 | one LR pixel, inverse | 45 | 18 | 9 |
| ×2 | one z pixel, inverse | 43 | 22 | 14 |
| ×4 | one HR pixel, forward | 54 | 17 | 4 |
| ×4 | one LR pixel, inverse | 61 | 15 | 7 |
| ×4 | one z pixel, inverse | 61 | 19 | 11 |

| margin | ×2 forward | ×2 inverse | ×4 forward | ×4 inverse |
|---|---|---|---|---|
| 0 | 2.4e-02 | 1.3e-01 | 5.0e-02 | 2.0e-01 |
| 2 | 9.1e-03 | 8.1e-02 | 8.2e-03 | 1.9e-01 |
| 4 | 2.8e-03 | 1.2e-01 | 4.0e-03 | 8.7e-02 |
| 6 | 1.1e-03 | 1.3e-01 | 1.3e-03 | 2.1e-02 |
| 8 | 1.3e-04 | 2.7e-02 | 5.1e-04 | 6.7e-03 |
| 10 | 3.3e-05 | 8.7e-03 | 1.4e-04 | 1.6e-03 |
| 12 | 3.5e-06 | 1.6e-03 | 8.8e-06 | 3.6e-04 |
| 16 | 2.4e-07 | 3.1e-05 | 3.6e-07 | 7.5e-06 |
| 20 | 2.4e-07 | 2.2e-06 | 1.8e-07 | 1.7e-06 |
| 24 | 2.4e-07 | 2.2e-06 | 1.8e-07 | 1.6e-06 |
| 32 | 6.0e-08 | 2.4e-07 | 1.8e-07 | 3.6e-07 |
| 40 | 0.0e+00 | 1.2e-07 | 1.8e-07 | 3.0e-07 |

The default margin `MARGINS`, 16 LR pixels at ×2 and ×4 (32 and 64 HR pixels), is the
smallest in the second table whose errors stay below `TILE_ERROR` = $10^{-4}$ (a fortieth of an
8-bit level) in both directions: an 8-bit result differs from the whole-image one only where a
value lies that close to a rounding boundary. ×8 has no shipped model to measure; its margin,
24, is an estimate (the ×4 margin and half of it for the third level).

**The memory budget.** The working memory of one tile grows with its size: about
`WORKSPACE_MB` plus `BYTES_PER_PIXEL` bytes per HR pixel of the tile with its margins (float32,
one image). `benchmarks/irn_tiling.py --calibrate` runs single tiles of 256² to 1024² HR pixels,
each in a fresh process, and fits a line to the rise of the peak resident set size over tiles
of 512² pixels and more, for the paper form of the network (`IRN`) and the fast arrangement
that the command line runs (`flowlearn.irn.fast.accelerate`):

| scale | direction | form | bytes per HR pixel | workspace (MiB) |
|---|---|---|---|---|
| ×2 | forward | paper | 435 | 96 |
| ×2 | forward | fast | 339 | 54 |
| ×2 | inverse | paper | 414 | 93 |
| ×2 | inverse | fast | 344 | 51 |
| ×4 | forward | paper | 443 | 91 |
| ×4 | forward | fast | 345 | 62 |
| ×4 | inverse | paper | 444 | 111 |
| ×4 | inverse | fast | 405 | 46 |

`BYTES_PER_PIXEL` is the largest slope plus the 12 bytes per HR pixel of the joined
$[y, Tz]$ tile that `upscale_tiled` builds before it calls the inverse, rounded up to ten
bytes; `WORKSPACE_MB` is the largest intercept rounded up to 16 MiB. `plan_tiles` subtracts
from `memory_mb` what the call holds for the whole image (the input, the output and, for
`upscale_tiled`, the latent $z$) and `WORKSPACE_MB`, and picks the largest square tile whose
pixels fit the rest. The model's weights and the Python runtime (about 350 MB with PyTorch
loaded) come on top.

References:
    M. Xiao, S. Zheng, C. Liu, Y. Wang, D. He, G. Ke, J. Bian, Z. Lin, T.-Y. Liu, 2020.
    "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §3.2 (Haar transformation and
    InvBlock, Eq. 1–2: the local operations that make tiling exact up to the margin).

Examples:
    >>> import torch
    >>> from flowlearn.checks import jitter_parameters
    >>> from flowlearn.irn.model import IRN
    >>> _ = torch.manual_seed(0)
    >>> net = jitter_parameters(IRN(2, blocks=[1], growth=4), scale=0.05, seed=0).eval()
    >>> hr = torch.rand(1, 3, 40, 36)
    >>> # one coupling reaches 10 pixels: 3 x 3 tiles of at most 8² LR pixels, margin 10
    >>> lr = downscale_tiled(net, hr, tile=8, margin=10)
    >>> lr.shape
    torch.Size([1, 3, 20, 18])
    >>> bool((lr - net.downscale(hr)).abs().max() <= 1 / 255)
    True
    >>> g = lambda: torch.Generator().manual_seed(0)
    >>> sr = upscale_tiled(net, lr, generator=g(), tile=8, margin=10)
    >>> bool((sr - net.upscale(lr, generator=g())).abs().max() < 1e-5)
    True
    >>> seams = upscale_tiled(net, lr, generator=g(), tile=8, margin=0)  # no margin: seams
    >>> bool((seams - net.upscale(lr, generator=g())).abs().max() > 0.1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm import tqdm

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = [
    "BYTES_PER_PIXEL",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MEMORY_MB",
    "MARGINS",
    "MIN_TILE",
    "TILE_ERROR",
    "WORKSPACE_MB",
    "Tile",
    "TilePlan",
    "check_pixels",
    "downscale_tiled",
    "map_tiles",
    "plan_tiles",
    "upscale_tiled",
]

MARGINS: dict[int, int] = {2: 16, 4: 16, 8: 24}
"""Default margin in LR pixels for each scale (measured, see the module docstring)."""

BYTES_PER_PIXEL = 460
"""Working memory of the network per HR pixel of a tile with its margins (float32, one image)."""

WORKSPACE_MB = 112
"""Working memory of one tile that does not grow with its size, in MiB."""

TILE_ERROR = 1e-4
"""Largest error of a tile's centre against the whole image that the default margins allow."""

DEFAULT_MEMORY_MB = 1024
"""Default `memory_mb`: the input, the output, the latent and one tile's work, in MiB."""

DEFAULT_MAX_PIXELS = 100_000_000
"""Default `max_pixels`: the largest HR image, in pixels (100 megapixels)."""

MIN_TILE = 16
"""The smallest tile (LR pixels) that `plan_tiles` chooses from a memory budget."""

_MIB = 2**20


@dataclass(frozen=True)
class Tile:
    r"""One tile on the LR pixel grid: the centre it writes and the region it reads.

    All coordinates are LR pixels, rows then columns, end exclusive. The region is the centre
    grown by the margin on each side and clipped to the image.
    """

    top: int
    left: int
    bottom: int
    right: int
    region_top: int
    region_left: int
    region_bottom: int
    region_right: int


@dataclass(frozen=True)
class TilePlan:
    r"""How an `(h, w)` LR grid is cut: the largest tile side, the margin and the tiles in order."""

    height: int
    width: int
    tile: int
    margin: int
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)


def check_pixels(height: int, width: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    r"""Refuse an HR image of more than `max_pixels` pixels, before anything is allocated.

    Args:
        height: HR image height.
        width: HR image width.
        max_pixels: the limit (`None`: no limit).

    Raises:
        ValueError: the image is larger than the limit; the message names the limit and the
            option that raises it.

    Examples:
        >>> check_pixels(4000, 6000)  # 24 megapixels: fine
        >>> check_pixels(12000, 12000)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: the image is 12000x12000 = 144 megapixels, more than the pixel limit ...
    """
    if max_pixels is None:
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    pixels = height * width
    if pixels > max_pixels:
        raise ValueError(
            f"the image is {width}x{height} = {pixels / 1e6:.3g} megapixels, more than the "
            f"pixel limit max_pixels={max_pixels} ({max_pixels / 1e6:.3g} megapixels); raise "
            f"the limit (max_pixels=..., or --max-pixels on the command line) to process it"
        )


def _positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _cuts(length: int, tile: int) -> list[tuple[int, int]]:
    # The fewest pieces of at most `tile`, as equal as possible (the first ones one longer).
    n = math.ceil(length / tile)
    base, extra = divmod(length, n)
    cuts, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        cuts.append((start, end))
        start = end
    return cuts


def plan_tiles(
    height: int,
    width: int,
    scale: int,
    *,
    tile: int | None = None,
    margin: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    reserved_bytes: int = 0,
    batch: int = 1,
    itemsize: int = 4,
) -> TilePlan:
    r"""Cut an LR grid of `height` × `width` pixels into tiles for a network of scale `scale`.

    With `tile=None` the tile side follows from the memory budget: after `reserved_bytes` (what
    the caller keeps for the whole image) and `WORKSPACE_MB`, a tile with its margins may
    hold $(\text{budget} / (\text{BYTES\_PER\_PIXEL} \cdot \text{batch} \cdot \text{itemsize}/4))$
    HR pixels. When the whole image fits, it is one tile (and runs as the whole image would).

    Args:
        height: LR height $h$.
        width: LR width $w$.
        scale: HR pixels per LR pixel along each side.
        tile: largest tile side in LR pixels (default: from `memory_mb`); the grid is cut into
            the fewest tiles no larger, as equal as possible.
        margin: overlap in LR pixels read around each tile (default: `MARGINS[scale]`).
        memory_mb: budget in MiB for `reserved_bytes` plus one tile's working memory.
        reserved_bytes: bytes of the budget that are not available to the tiles.
        batch: images per tile.
        itemsize: bytes per value (4 for float32).

    Returns:
        The `TilePlan`.

    Raises:
        ValueError: bad arguments, or a budget too small for a tile of `MIN_TILE` LR pixels
            (the message gives the budget that would be enough).

    Examples:
        >>> plan = plan_tiles(1000, 1500, 4, tile=400, margin=30)
        >>> len(plan), plan.tiles[0]  # 3 x 4 tiles; the first reads 30 more pixels down and right
        (12, Tile(top=0, left=0, bottom=334, right=375, region_top=0, region_left=0, ...))
        >>> plan.tiles[0].region_bottom, plan.tiles[0].region_right
        (364, 405)
        >>> len(plan_tiles(100, 150, 4, memory_mb=1024))  # small enough for one tile
        1
    """
    _positive_int("height", height)
    _positive_int("width", width)
    _positive_int("scale", scale)
    if margin is None:
        margin = MARGINS.get(scale, max(MARGINS.values()))
    _positive_int("margin", margin, minimum=0)
    if tile is None:
        if not (isinstance(memory_mb, int | float) and memory_mb > 0):
            raise ValueError(f"memory_mb must be a positive number, got {memory_mb!r}")
        per_pixel = BYTES_PER_PIXEL * batch * itemsize / 4  # bytes per HR pixel of a region
        budget = memory_mb * _MIB - reserved_bytes - WORKSPACE_MB * _MIB
        pixels = budget / per_pixel  # HR pixels a tile region may have
        if pixels >= height * width * scale**2:
            tile = max(height, width)
        else:
            tile = math.isqrt(max(int(pixels), 0)) // scale - 2 * margin
            if tile < MIN_TILE:
                region = ((MIN_TILE + 2 * margin) * scale) ** 2
                need = (reserved_bytes + WORKSPACE_MB * _MIB + region * per_pixel) / _MIB
                raise ValueError(
                    f"memory_mb={memory_mb:g} is too small for an LR grid of {width}x{height} "
                    f"at scale {scale}: the image buffers take {reserved_bytes / _MIB:.0f} MiB "
                    f"and a tile of {MIN_TILE} LR pixels with margin {margin} needs "
                    f"{(need * _MIB - reserved_bytes) / _MIB:.0f} MiB more; give "
                    f"memory_mb >= {math.ceil(need)} (--memory on the command line)"
                )
    _positive_int("tile", tile)
    tiles = []
    for top, bottom in _cuts(height, tile):
        for left, right in _cuts(width, tile):
            tiles.append(
                Tile(
                    top,
                    left,
                    bottom,
                    right,
                    max(top - margin, 0),
                    max(left - margin, 0),
                    min(bottom + margin, height),
                    min(right + margin, width),
                )
            )
    return TilePlan(height, width, tile, margin, tuple(tiles))


def map_tiles(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    plan: TilePlan,
    *,
    factor_in: int,
    factor_out: int,
    progress: bool = False,
    desc: str | None = None,
) -> Tensor:
    r"""Apply a local image map tile by tile and assemble the centres of its outputs.

    Every input is `(B, C_k, h · factor_in, w · factor_in)` on the plan's `(h, w)` grid. For
    each tile, `fn` receives the tile's region of every input and returns
    `(B, C_out, rh · factor_out, rw · factor_out)` for a region of `rh × rw` grid pixels; the
    tile's centre is copied into the output `(B, C_out, h · factor_out, w · factor_out)`,
    allocated at the first tile with the dtype and device of `fn`'s result. Runs under
    `torch.no_grad()`.

    Args:
        fn: the map, e.g. `model.downscale`.
        inputs: tensors on the grid (the HR image, or the LR image and the latent).
        plan: tiles from `plan_tiles`.
        factor_in: input pixels per grid pixel along each side.
        factor_out: output pixels per grid pixel along each side.
        progress: show a tqdm bar over the tiles on stderr.
        desc: label of the bar.

    Returns:
        The assembled output.

    Raises:
        ValueError: an input does not match the grid, or `fn` returns the wrong size.

    Examples:
        >>> plan = plan_tiles(3, 5, 2, tile=2, margin=1)
        >>> x = torch.arange(60.0).reshape(1, 1, 6, 10)
        >>> pooled = map_tiles(lambda t: t[..., ::2, ::2], [x], plan, factor_in=2, factor_out=1)
        >>> torch.equal(pooled, x[..., ::2, ::2])
        True
    """
    h, w = plan.height, plan.width
    for x in inputs:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (h * factor_in, w * factor_in):
            raise ValueError(
                f"map_tiles: expected inputs (B, C, {h * factor_in}, {w * factor_in}) for a "
                f"{h}x{w} grid, received {tuple(x.shape)}"
            )
    out: Tensor | None = None
    a, b = factor_in, factor_out
    with torch.no_grad():
        for t in tqdm(plan.tiles, desc=desc, unit="tile", disable=not progress):
            pieces = [
                x[
                    ...,
                    t.region_top * a : t.region_bottom * a,
                    t.region_left * a : t.region_right * a,
                ]
                for x in inputs
            ]
            y = fn(*pieces)  # (B, C_out, rh * b, rw * b)
            rh, rw = t.region_bottom - t.region_top, t.region_right - t.region_left
            if y.ndim != 4 or tuple(y.shape[-2:]) != (rh * b, rw * b):
                raise ValueError(
                    f"map_tiles: fn returned {tuple(y.shape)} for a region of {rh}x{rw} grid "
                    f"pixels, expected (B, C, {rh * b}, {rw * b})"
                )
            if out is None:
                out = y.new_empty((*y.shape[:2], h * b, w * b))
            out[..., t.top * b : t.bottom * b, t.left * b : t.right * b] = y[
                ...,
                (t.top - t.region_top) * b : (t.bottom - t.region_top) * b,
                (t.left - t.region_left) * b : (t.right - t.region_left) * b,
            ]
            del y
    assert out is not None  # a plan has at least one tile
    return out


def _check_image(name: str, x: Tensor, channels: int, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{name}: expected an image (B, {channels}, H, W), received {tuple(x.shape)}"
        )
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(
            f"{name}: height and width must be multiples of the scale {multiple}, received "
            f"{x.shape[-1]}x{x.shape[-2]}"
        )


def downscale_tiled(
    model: IRN,
    hr: Tensor,
    *,
    tile: int | None = None,
    margin: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> Tensor:
    r"""`model.downscale(hr)` tile by tile: HR `(B, 3, H, W)` → 8-bit LR `(B, 3, H/s, W/s)`.

    Args:
        model: the IRN (in eval mode).
        hr: HR images in [0, 1], H and W multiples of the scale $s$.
        tile: largest tile side in LR pixels (default: the largest that fits `memory_mb`).
        margin: overlap in LR pixels (default: `MARGINS[s]`, see the module docstring).
        memory_mb: budget in MiB for the HR input, the LR output and one tile's working
            memory.
        max_pixels: refuse HR images of more pixels than this (`None`: no limit).
        progress: show a progress bar over the tiles.

    Returns:
        The LR images on the 8-bit grid, as `model.downscale` returns them (equal up to values
        within float round-off of a rounding boundary).

    Raises:
        ValueError: an image over the pixel limit, sizes that are not multiples of the scale, or
            a memory budget too small for one tile.
    """
    s = model.scale
    _check_image("downscale_tiled", hr, model.channels, s)
    check_pixels(hr.shape[-2], hr.shape[-1], max_pixels)
    h, w = hr.shape[-2] // s, hr.shape[-1] // s
    plan = plan_tiles(
        h,
        w,
        s,
        tile=tile,
        margin=margin,
        memory_mb=memory_mb,
        reserved_bytes=(hr.numel() + hr.shape[0] * model.channels * h * w) * hr.element_size(),
        batch=hr.shape[0],
        itemsize=hr.element_size(),
    )
    return map_tiles(
        model.downscale,
        [hr],
        plan,
        factor_in=s,
        factor_out=1,
        progress=progress,
        desc=f"downscale x{s}",
    )


def upscale_tiled(
    model: IRN,
    lr: Tensor,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    z: Tensor | None = None,
    tile: int | None = None,
    margin: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> Tensor:
    r"""`model.upscale(lr, ...)` computed tile by tile: LR `(B, 3, h, w)` → HR `(B, 3, sh, sw)`.

    The latent $z \sim \mathcal{N}(0, I)$ of `model.latent_shape(lr.shape)` is drawn for the
    whole image first, with the same call as `IRN.upscale`, so the same `generator` state gives
    the same $z$ (and, up to round-off, the same result) tiled or not; each tile then inverts
    $[y, T z]$ on its region.

    Args:
        model: the IRN (in eval mode).
        lr: LR images in [0, 1].
        temperature: standard deviation $T$ of the latent.
        generator: random generator for $z$ (on the device of `lr`).
        z: a latent `(B, 3(s²-1), h, w)` to use instead of a draw (multiplied by
            `temperature` all the same); then `generator` must be `None`.
        tile: largest tile side in LR pixels (default: the largest that fits `memory_mb`).
        margin: overlap in LR pixels (default: `MARGINS[s]`).
        memory_mb: budget in MiB for the LR input, the HR output, the drawn latent and one
            tile's working memory.
        max_pixels: refuse HR results of more pixels than this (`None`: no limit).
        progress: show a progress bar over the tiles.

    Returns:
        The HR images.

    Raises:
        ValueError: a result over the pixel limit, a `z` of the wrong shape or together with a
            `generator`, or a memory budget too small for one tile.
    """
    s = model.scale
    _check_image("upscale_tiled", lr, model.channels, 1)
    h, w = lr.shape[-2], lr.shape[-1]
    check_pixels(h * s, w * s, max_pixels)
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"upscale_tiled: temperature must be finite and >= 0, got {temperature}")
    item = lr.element_size()
    reserved = lr.numel() * (1 + s**2) * item  # the LR input and the HR output
    if z is None:
        reserved += math.prod(model.latent_shape(lr.shape)) * item
    elif generator is not None:
        raise ValueError("upscale_tiled: give z or a generator to draw it, not both")
    elif tuple(z.shape) != model.latent_shape(lr.shape):
        raise ValueError(
            f"upscale_tiled: expected z of shape {model.latent_shape(lr.shape)} for an LR image "
            f"of shape {tuple(lr.shape)}, received shape {tuple(z.shape)}"
        )
    plan = plan_tiles(
        h,
        w,
        s,
        tile=tile,
        margin=margin,
        memory_mb=memory_mb,
        reserved_bytes=reserved,
        batch=lr.shape[0],
        itemsize=item,
    )
    if z is None:  # the draw of IRN.upscale, for the whole image
        z = torch.randn(
            model.latent_shape(lr.shape), generator=generator, device=lr.device, dtype=lr.dtype
        )

    def invert(lr_tile: Tensor, z_tile: Tensor) -> Tensor:
        return model.inverse(model.join(lr_tile, temperature * z_tile))[0]

    return map_tiles(
        invert, [lr, z], plan, factor_in=1, factor_out=s, progress=progress, desc=f"upscale x{s}"
    )
