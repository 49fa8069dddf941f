r"""Figures for flows: densities, samples, warped grids, log-determinants and image samples.

Every function builds a `matplotlib.figure.Figure` directly (no `pyplot`, no GUI backend, nothing
kept alive by a global figure manager) and returns it. Save it with `fig.savefig(path)`; in a
notebook run `%matplotlib inline` once and make the figure the last expression of a cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure
from torch import Tensor

from flowlearn.core import Bijector, FlowSequential
from flowlearn.density.distributions import Flow
from flowlearn.density.training import History

__all__ = [
    "image_grid",
    "plot_density_2d",
    "plot_history",
    "plot_image_samples",
    "plot_images",
    "plot_logdet_heatmap",
    "plot_samples_2d",
    "plot_warped_grid",
]

Bounds = tuple[tuple[float, float], tuple[float, float]]


def _bounds(data: Tensor | None, bounds: Bounds | None, margin: float = 0.15) -> Bounds:
    """Explicit `bounds`, or the data's range widened by `margin`, or the square [-3, 3]²."""
    if bounds is not None:
        return bounds
    if data is None:
        return (-3.0, 3.0), (-3.0, 3.0)
    lo, hi = data.min(0).values.tolist(), data.max(0).values.tolist()
    pad = [margin * (h - low) for low, h in zip(lo, hi)]
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _grid(bounds: Bounds, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """An `n`×`n` grid: its points `(n*n, 2)` and the coordinate vectors along x and y."""
    xs = torch.linspace(*bounds[0], n)
    ys = torch.linspace(*bounds[1], n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # each (n, n), rows follow y
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), xs, ys  # (n*n, 2)


def _layers(model: Flow | Bijector) -> FlowSequential:
    transform = model.transform if isinstance(model, Flow) else model
    if not isinstance(transform, FlowSequential):
        transform = FlowSequential(transform)
    return transform


def _style(ax: Axes, bounds: Bounds | None, title: str) -> None:
    if bounds is not None:
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        ax.set_aspect("equal")
    else:  # keep square panels: widen the shorter data range instead of shrinking the box
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


@torch.no_grad()
def plot_density_2d(
    flow: Flow,
    data: Tensor | None = None,
    *,
    bounds: Bounds | None = None,
    grid: int = 200,
    title: str = "learned density",
) -> Figure:
    r"""The learned density $p(x)$ of a 2-D flow on a grid, next to a histogram of `data`.

    Args:
        flow: a flow on `(B, 2)` points.
        data: optional `(N, 2)` points, shown as a 2-D histogram in a first panel.
        bounds: `((x_min, x_max), (y_min, y_max))`; by default the data's range (or $[-3,3]^2$).
        grid: points per axis of the evaluation grid.
        title: title of the density panel.

    Returns:
        The figure.
    """
    box = _bounds(data, bounds)
    points, _, _ = _grid(box, grid)
    density = torch.cat([flow.log_prob(c).exp() for c in points.split(4096)]).reshape(grid, grid)
    panels = 2 if data is not None else 1
    fig = Figure(figsize=(4.2 * panels, 4))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    extent = (*box[0], *box[1])
    if data is not None:
        axes[0].hist2d(data[:, 0].numpy(), data[:, 1].numpy(), bins=grid // 2, range=box)
        _style(axes[0], box, f"data ({len(data)} points)")
    axes[-1].imshow(density.numpy(), origin="lower", extent=extent, aspect="auto")
    _style(axes[-1], box, title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_samples_2d(
    flow: Flow,
    n: int = 2000,
    data: Tensor | None = None,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    bounds: Bounds | None = None,
) -> Figure:
    """Scatter plots of `n` samples from a 2-D flow, next to the data when given.

    Args:
        flow: a flow on `(B, 2)` points.
        n: number of samples.
        data: optional `(N, 2)` points for comparison (at most `n` of them are drawn).
        temperature: sampling temperature of the base distribution.
        seed: seed of the sampling generator.
        bounds: axis limits; by default the data's range (or that of the samples).

    Returns:
        The figure.
    """
    device = next(flow.base.buffers()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = flow.sample(n, temperature=temperature, generator=generator).cpu()
    box = _bounds(data if data is not None else samples, bounds)
    panels = [("data", data[:n])] if data is not None else []
    panels.append((f"samples (T = {temperature:g})", samples))
    fig = Figure(figsize=(4.2 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, pts) in zip(axes, panels):
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=2, alpha=0.5)
        _style(ax, box, name)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_warped_grid(
    model: Flow | Bijector,
    *,
    bounds: Bounds = ((-3.0, 3.0), (-3.0, 3.0)),
    lines: int = 13,
    resolution: int = 200,
    data: Tensor | None = None,
    direction: str = "forward",
    max_panels: int = 10,
) -> Figure:
    r"""A square grid pushed through each successive layer of a 2-D flow.

    `direction="forward"` draws the grid in data space and follows it towards the latent (panel
    $k$ shows the output of layer $k$); `"inverse"` starts from a grid in latent space and follows
    $f^{-1}$ back to the data. Points of `data` (forward) are carried along in orange.

    Args:
        model: a `Flow` or a 2-D bijector (a `FlowSequential`'s layers are shown one by one).
        bounds: the starting grid's box.
        lines: grid lines per axis.
        resolution: points per grid line.
        data: optional `(N, 2)` points to carry along (forward only).
        direction: `"forward"` (data → latent) or `"inverse"` (latent → data).
        max_panels: draw at most this many panels (the first and the last are always drawn).

    Returns:
        The figure.
    """
    if direction not in ("forward", "inverse"):
        raise ValueError(
            f"plot_warped_grid: direction must be 'forward' or 'inverse', got {direction!r}"
        )
    layers = _layers(model)
    t = torch.linspace(0, 1, resolution)
    curves = []
    for c in torch.linspace(0, 1, lines):
        x_const = torch.stack(
            [
                bounds[0][0] + c * (bounds[0][1] - bounds[0][0]) + 0 * t,
                bounds[1][0] + t * (bounds[1][1] - bounds[1][0]),
            ],
            1,
        )
        y_const = torch.stack(
            [
                bounds[0][0] + t * (bounds[0][1] - bounds[0][0]),
                bounds[1][0] + c * (bounds[1][1] - bounds[1][0]) + 0 * t,
            ],
            1,
        )
        curves += [x_const, y_const]  # each (resolution, 2)
    pts = torch.cat(curves)  # (2 * lines * resolution, 2)
    n_curve = len(curves)
    extra = data if (data is not None and direction == "forward") else None
    if extra is not None:
        pts = torch.cat([pts, extra])
    if direction == "forward":
        _, _, outs = layers.forward_with_intermediates(pts)
        names = [type(layer).__name__ for layer in layers]
        stages = [
            ("input x", pts),
            *[(f"after {k + 1}: {n}", o) for k, (n, o) in enumerate(zip(names, outs))],
        ]
    else:
        _, _, outs = layers.inverse_with_intermediates(pts)
        names = [type(layer).__name__ for layer in reversed(list(layers))]
        stages = [("latent z", pts), *[(f"inverse of {n}", o) for n, o in zip(names, outs)]]
    if len(stages) > max_panels:
        keep = torch.linspace(0, len(stages) - 1, max_panels).round().long().unique().tolist()
        stages = [stages[i] for i in keep]
    cols = min(len(stages), 5)
    rows = math.ceil(len(stages) / cols)
    fig = Figure(figsize=(2.8 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, (name, out) in zip(axes, stages):
        grid_pts = out[: n_curve * resolution].reshape(n_curve, resolution, 2)
        for k, curve in enumerate(grid_pts):
            ax.plot(curve[:, 0].numpy(), curve[:, 1].numpy(), lw=0.6, color="C0" if k % 2 else "C2")
        if extra is not None:
            moved = out[n_curve * resolution :]
            ax.scatter(moved[:, 0].numpy(), moved[:, 1].numpy(), s=1, color="C1", alpha=0.4)
        _style(ax, None, name)
    for ax in axes[len(stages) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_logdet_heatmap(
    model: Flow | Bijector,
    *,
    bounds: Bounds = ((-3.0, 3.0), (-3.0, 3.0)),
    grid: int = 150,
    per_layer: bool = False,
) -> Figure:
    r"""Heatmap of $\log|\det J_f(x)|$ over the input plane of a 2-D flow.

    With `per_layer=True`, one panel per layer shows that layer's contribution
    $\log|\det J_{f_k}(x_{k-1})|$, plotted at the input point $x$ it came from; the panels add up
    to the total.

    Args:
        model: a `Flow` or a 2-D bijector.
        bounds: the plotted box of input points.
        grid: points per axis.
        per_layer: one panel per layer instead of the total.

    Returns:
        The figure.
    """
    layers = _layers(model)
    points, _, _ = _grid(bounds, grid)
    maps: list[tuple[str, Tensor]] = []
    h, total = points, points.new_zeros(len(points))
    for k, layer in enumerate(layers):
        h, ld = layer(h)
        total = total + ld
        maps.append((f"layer {k + 1}: {type(layer).__name__}", ld))
    if not per_layer:
        maps = [("log |det J_f(x)|", total)]
    cols = min(len(maps), 4)
    rows = math.ceil(len(maps) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    extent = (*bounds[0], *bounds[1])
    for ax, (name, values) in zip(axes, maps):
        # white = log-det 0 (volume kept), red = expansion, blue = contraction
        im = ax.imshow(
            values.reshape(grid, grid).numpy(),
            origin="lower",
            extent=extent,
            cmap="RdBu_r",
            norm=CenteredNorm(),
        )
        fig.colorbar(im, ax=ax, fraction=0.046)
        _style(ax, bounds, name)
    for ax in axes[len(maps) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def image_grid(
    images: Tensor, nrow: int = 8, pad: int = 1, pad_value: float = float("nan")
) -> Tensor:
    """Tile `(N, C, H, W)` images into one `(C, rows·(H+pad)−pad, nrow·(W+pad)−pad)` tensor.

    Args:
        images: the images.
        nrow: images per row.
        pad: pixels between images.
        pad_value: value of the padding (NaN shows as the background colour).

    Returns:
        The tiled tensor.

    Examples:
        >>> image_grid(torch.zeros(5, 1, 8, 8), nrow=4).shape
        torch.Size([1, 17, 35])
    """
    if images.dim() != 4:
        raise ValueError(
            f"image_grid: expected (N, C, H, W) images, received {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    out = images.new_full((c, rows * (h + pad) - pad, nrow * (w + pad) - pad), pad_value)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        out[:, r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = img
    return out


def _show(
    ax: Axes, images: Tensor, nrow: int, vmin: float | None, vmax: float | None, title: str
) -> None:
    tiled = image_grid(images.detach().cpu().float(), nrow)
    if tiled.shape[0] == 1:
        cmap = colormaps["gray"].with_extremes(bad="#c6d4e8")  # padding (NaN) in pale blue
        ax.imshow(tiled[0].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    else:  # RGB: scale to [0, 1] by vmin/vmax for display only
        lo = vmin if vmin is not None else float(images.min())
        hi = vmax if vmax is not None else float(images.max())
        shown = ((tiled - lo) / (hi - lo)).clamp(0, 1).nan_to_num(1.0)  # display range only
        ax.imshow(shown.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def plot_images(
    images: Tensor,
    *,
    nrow: int = 8,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "",
    size: float = 0.6,
) -> Figure:
    """Show `(N, C, H, W)` images as one grid (grey for $C = 1$, RGB for $C = 3$).

    Values outside `[vmin, vmax]` are shown saturated; the tensor itself is not changed.

    Args:
        images: the images.
        nrow: images per row.
        vmin: value shown black; by default the smallest value.
        vmax: value shown white; by default the largest value.
        title: figure title.
        size: width of one image in inches.

    Returns:
        The figure.
    """
    rows = math.ceil(len(images) / nrow)
    fig = Figure(figsize=(0.5 + size * nrow, 0.5 + size * rows))
    _show(fig.subplots(), images, nrow, vmin, vmax, title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_image_samples(
    flow: Flow,
    *,
    temperatures: Sequence[float] = (0.5, 0.7, 0.85, 1.0),
    n: int = 16,
    nrow: int = 4,
    seed: int = 0,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    r"""Image samples of a flow at several temperatures, one panel per temperature.

    Each panel uses the same seed, so the panels show the same latent $\varepsilon$ scaled by
    $T$: lower temperatures trade diversity for cleaner samples (Glow, arXiv:1807.03039, §6,
    Fig. 8).

    Args:
        flow: a flow on `(B, C, H, W)` images.
        temperatures: the temperatures $T$.
        n: samples per temperature.
        nrow: samples per row of a panel.
        seed: seed of the sampling generator.
        vmin: value shown black (e.g. 0); values outside `[vmin, vmax]` are shown saturated.
        vmax: value shown white (e.g. 16 for digits).

    Returns:
        The figure.
    """
    cols = len(temperatures)
    rows = math.ceil(n / nrow)
    fig = Figure(figsize=(0.4 + (0.5 * nrow + 0.3) * cols, 0.8 + 0.5 * rows))
    axes = fig.subplots(1, cols, squeeze=False)[0]
    device = next(flow.base.buffers()).device
    for ax, temperature in zip(axes, temperatures):
        generator = torch.Generator(device=device).manual_seed(seed)
        x = flow.sample(n, temperature=temperature, generator=generator)
        _show(ax, x, nrow, vmin, vmax, f"T = {temperature:g}")
    fig.tight_layout()
    return fig


def plot_history(history: History, *, window: int = 100, reference: float | None = None) -> Figure:
    """Training loss (NLL in nats) per step and its running mean over `window` steps.

    Args:
        history: what `fit` returned.
        window: width of the running mean.
        reference: optional horizontal line, e.g. the data's true entropy.

    Returns:
        The figure.
    """
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.plot(history.loss, lw=0.5, alpha=0.4, label="minibatch NLL")
    ax.plot(history.smoothed(window), lw=1.5, label=f"running mean ({window} steps)")
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"reference {reference:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
