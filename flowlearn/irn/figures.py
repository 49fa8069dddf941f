r"""Figures for the Haar transform and the Invertible Rescaling Net: sub-bands, crops, losses.

Every function builds a `matplotlib.figure.Figure` directly (no `pyplot`, no GUI backend) and
returns it, like `flowlearn.density.plot`. Images are `(3, H, W)` or `(1, 3, H, W)` tensors with
values in [0, 1]; values outside are shown saturated (the tensors are never changed).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

__all__ = ["BAND_NAMES", "plot_crops", "plot_subbands", "plot_training_log"]

BAND_NAMES = ("LL (2×2 mean)", "B1: left − right", "B2: top − bottom", "B3: diagonal")
"""Names of the four Haar bands in the band-major order of `flowlearn.HaarDownsampling`."""

Box = tuple[int, int, int, int]


def _image(x: Tensor, name: str) -> Tensor:
    """`(3, H, W)`, `(1, H, W)` or a batch of one → a float CPU tensor `(C, H, W)`."""
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"{name}: expected an image (3, H, W), (1, H, W) or (1, 3, H, W), "
            f"received shape {tuple(x.shape)}"
        )
    return x.detach().cpu().float()


def _show_image(ax: Axes, img: Tensor, title: str, extent: Sequence[float] | None = None) -> None:
    """Show a `(C, H, W)` image (RGB or grey) in [0, 1], pixels as squares, no ticks."""
    shown = img.clamp(0, 1)  # display range only
    kwargs: dict[str, Any] = {"interpolation": "nearest", "extent": extent}
    if shown.shape[0] == 1:
        ax.imshow(shown[0].numpy(), cmap="gray", vmin=0, vmax=1, **kwargs)
    else:
        ax.imshow(shown.permute(1, 2, 0).numpy(), **kwargs)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_subbands(
    bands: Tensor,
    *,
    channels: int = 3,
    names: Sequence[str] = BAND_NAMES,
    title: str = "",
    quantile: float = 0.995,
) -> Figure:
    r"""The four Haar bands of an image as a 2×2 grid (LL as an image, the details as maps).

    `bands` is the band-major output of `HaarDownsampling(channels)`: channels
    `[LL(c_0..c_{C-1}), B1(c_0..), B2(..), B3(..)]`. The LL panel shows the low-pass image
    (rescaled to its own range, so both normalisations look alike). Each detail panel shows
    the mean of its $C$ colour channels with a diverging colour map centred on 0; the three
    share one colour scale, symmetric, set by the `quantile` of their absolute values, so they
    can be compared with each other.

    Args:
        bands: `(4C, h, w)` or `(1, 4C, h, w)`.
        channels: $C$, the channels of the transformed image (3 for RGB, 1 for grey).
        names: four panel titles, in band order.
        title: figure title.
        quantile: fraction of detail values inside the colour scale (the rest saturate).

    Returns:
        The figure (4 image axes and one colour bar).

    Examples:
        >>> import torch
        >>> from flowlearn import HaarDownsampling
        >>> bands, _ = HaarDownsampling(3)(torch.rand(1, 3, 8, 8))
        >>> len(plot_subbands(bands).axes)  # 4 panels and a colour bar
        5
    """
    if bands.ndim == 4 and bands.shape[0] == 1:
        bands = bands[0]
    if bands.ndim != 3 or bands.shape[0] != 4 * channels:
        raise ValueError(
            f"plot_subbands: expected Haar bands (4C, h, w) with C = {channels}, "
            f"received shape {tuple(bands.shape)}"
        )
    if len(names) != 4:
        raise ValueError(f"plot_subbands: expected 4 band names, got {len(names)}")
    if not 0 < quantile <= 1:
        raise ValueError(f"plot_subbands: quantile must be in (0, 1], got {quantile}")
    b = bands.detach().cpu().float().reshape(4, channels, *bands.shape[-2:])  # (4, C, h, w)
    ll = b[0]
    lo, hi = float(ll.min()), float(ll.max())
    ll_shown = (ll - lo) / (hi - lo) if hi > lo else torch.zeros_like(ll)  # display range only
    details = b[1:].mean(dim=1)  # (3, h, w): each band averaged over the colour channels
    limit = float(torch.quantile(details.abs().flatten(), quantile))
    limit = limit if limit > 0 else 1.0

    fig = Figure(figsize=(7.4, 6.4), layout="constrained")
    axes = fig.subplots(2, 2)
    _show_image(axes[0, 0], ll_shown, names[0])
    image = None
    for k, ax in zip(range(1, 4), axes.flat[1:]):
        image = ax.imshow(
            details[k - 1].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
        )
        ax.set_title(names[k], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    assert image is not None
    fig.colorbar(image, ax=list(axes.flat), shrink=0.6, label="detail value")
    return fig


def _scaled_box(box: Box, factor: int, name: str) -> Box:
    """`box` of the reference image in the coordinates of an image `factor` times smaller."""
    if any(v % factor for v in box):
        raise ValueError(
            f"plot_crops: image {name!r} is {factor}× smaller than the reference, so the box "
            f"(top, left, height, width) = {box} must be a multiple of {factor}"
        )
    top, left, height, width = (v // factor for v in box)
    return top, left, height, width


def plot_crops(
    images: Mapping[str, Tensor],
    box: Box,
    *,
    show_full: bool = True,
    title: str = "",
) -> Figure:
    r"""A zoomed-crop comparison: the same region of several images side by side.

    The first image is the reference (usually the HR image); `box` is given in its pixel
    coordinates. An image that is $f$ times smaller in both directions (an LR image, $f$ an
    integer) is cropped at `box / f` and shown at the same size, with its pixels as $f \times f$
    squares, so a ×2 LR crop and an HR crop cover the same part of the scene.

    Args:
        images: `{title: image}` in display order; each image `(3, H, W)`, `(1, H, W)` or
            `(1, 3, H, W)` in [0, 1].
        box: `(top, left, height, width)` of the crop in the first image.
        show_full: add a first panel with the whole reference image and the box drawn on it.
        title: figure title.

    Returns:
        The figure, one panel per image (plus the overview when `show_full`).

    Raises:
        ValueError: no image, a box outside the reference image, an image whose size is not the
            reference size divided by an integer, or a box not divisible by that integer.

    Examples:
        >>> import torch
        >>> hr = torch.rand(3, 32, 32)
        >>> lr = torch.nn.functional.avg_pool2d(hr, 2)
        >>> fig = plot_crops({"HR": hr, "LR": lr}, (8, 8, 16, 16))
        >>> [ax.get_title() for ax in fig.axes]
        ['HR', 'HR, crop', 'LR (×1/2), crop']
    """
    if not images:
        raise ValueError("plot_crops: expected at least one image")
    named = [(name, _image(img, f"plot_crops({name!r})")) for name, img in images.items()]
    ref_name, ref = named[0]
    ref_h, ref_w = ref.shape[-2:]
    top, left, height, width = box
    inside = 0 <= top and 0 <= left and 0 < height and 0 < width
    if not (inside and top + height <= ref_h and left + width <= ref_w):
        raise ValueError(
            f"plot_crops: box (top, left, height, width) = {box} is not inside the "
            f"{ref_h}×{ref_w} reference image {ref_name!r}"
        )

    panels: list[tuple[str, Tensor]] = []
    for name, img in named:
        h, w = img.shape[-2:]
        factor = ref_h // h
        if factor < 1 or ref_h != h * factor or ref_w != w * factor:
            raise ValueError(
                f"plot_crops: image {name!r} is {h}×{w}; expected the reference size "
                f"{ref_h}×{ref_w} divided by an integer"
            )
        t, lft, hh, ww = _scaled_box(box, factor, name)
        label = f"{name} (×1/{factor}), crop" if factor > 1 else f"{name}, crop"
        panels.append((label, img[:, t : t + hh, lft : lft + ww]))

    n = len(panels) + int(show_full)
    fig = Figure(figsize=(2.3 * n, 2.7))
    axes = fig.subplots(1, n, squeeze=False)[0]
    if show_full:
        _show_image(axes[0], ref, ref_name)
        axes[0].add_patch(
            Rectangle((left - 0.5, top - 0.5), width, height, fill=False, ec="yellow", lw=1.5)
        )
    extent = (0, width, height, 0)  # every crop covers the same scene area
    for ax, (label, crop) in zip(axes[int(show_full) :], panels):
        _show_image(ax, crop, label, extent=extent)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _read_log(log: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a training log: a CSV file (`flowlearn.irn.train`) or a list of dicts."""
    if isinstance(log, str | os.PathLike):
        path = Path(log)
        if not path.is_file():
            raise ValueError(f"plot_training_log: no log file {path}")
        with path.open(newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    return [dict(row) for row in log]


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    if value is None or value == "":
        return math.nan
    return float(value)


def plot_training_log(
    log: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] = ("fit", "distr", "rec", "total"),
    titles: Mapping[str, str] | None = None,
) -> Figure:
    r"""Loss terms of an IRN training run against the step, one panel each, log scale.

    Reads the CSV that `flowlearn.irn.train.train` writes (`log.csv` in the run folder: one row
    every `run.log_every` steps holding the mean of each loss term since the previous row).

    Args:
        log: path of the CSV file, or its rows as dicts with a `"step"` key and the columns.
        columns: the columns to plot, one panel each.
        titles: panel titles by column (default: the paper's names of the three terms).

    Returns:
        The figure.

    Raises:
        ValueError: a missing file, an empty log, or a column the log does not have.

    Examples:
        >>> rows = [{"step": s, "fit": 1 / s, "distr": 2 / s, "rec": 3 / s, "total": 6 / s}
        ...         for s in (10, 20, 30)]
        >>> [ax.get_title() for ax in plot_training_log(rows).axes]
        ['$L_{guide}$ (fit)', '$L_{distr}$ (surrogate)', '$L_{recon}$ (Charbonnier)', 'total']
    """
    rows = _read_log(log)
    if not rows:
        raise ValueError("plot_training_log: the log has no rows")
    missing = [c for c in ("step", *columns) if c not in rows[0]]
    if missing:
        raise ValueError(
            f"plot_training_log: the log has no column(s) {', '.join(missing)}; "
            f"it has {', '.join(rows[0])}"
        )
    default_titles = {
        "fit": "$L_{guide}$ (fit)",
        "distr": "$L_{distr}$ (surrogate)",
        "rec": "$L_{recon}$ (Charbonnier)",
        "total": "total",
    }
    names = {**default_titles, **(titles or {})}
    steps = [_value(r, "step") for r in rows]
    fig = Figure(figsize=(2.9 * len(columns), 2.8))
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    for ax, column in zip(axes, columns):
        values = [_value(r, column) for r in rows]
        ax.plot(steps, values, lw=1.2, marker=".", ms=3)
        if all(v > 0 for v in values if not math.isnan(v)):
            ax.set_yscale("log")
        ax.set_title(names.get(column, column), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
