import io
import math

import pytest
import torch
from matplotlib.figure import Figure

from flowlearn import Flow, FlowSequential, StandardNormal, UniformDequantization
from flowlearn.checks import jitter_parameters
from flowlearn.density.models import MultiScaleRealNVP, RealNVP
from flowlearn.density.plot import (
    image_grid,
    plot_density_2d,
    plot_history,
    plot_image_samples,
    plot_images,
    plot_logdet_heatmap,
    plot_samples_2d,
    plot_warped_grid,
)
from flowlearn.density.training import History


@pytest.fixture(scope="module")
def flow2d() -> Flow:
    torch.manual_seed(0)
    model = jitter_parameters(RealNVP(2, couplings=3, hidden=8), scale=0.2)
    return Flow(model, StandardNormal(2))


def _renders(fig: Figure) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()[:4] == b"\x89PNG"


def _image_axes(fig: Figure) -> int:
    return sum(1 for ax in fig.axes if ax.images)


def test_plot_density_2d_panels(flow2d):
    data = torch.randn(200, 2)
    fig = plot_density_2d(flow2d, data, grid=40)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert _renders(fig)
    assert len(plot_density_2d(flow2d, grid=20).axes) == 1


def test_plot_density_2d_shows_the_density(flow2d):
    fig = plot_density_2d(flow2d, grid=30, bounds=((-2.0, 2.0), (-1.0, 1.0)))
    shown = torch.as_tensor(fig.axes[0].images[0].get_array())
    xs, ys = torch.linspace(-2, 2, 30), torch.linspace(-1, 1, 30)
    # row i is y_i, column j is x_j (origin="lower")
    expected = flow2d.log_prob(torch.tensor([[xs[7], ys[21]]])).exp()
    torch.testing.assert_close(shown[21, 7].float(), expected[0].detach(), rtol=1e-4, atol=1e-6)


def test_plot_samples_2d(flow2d):
    fig = plot_samples_2d(flow2d, n=300, data=torch.randn(500, 2), temperature=0.7)
    assert len(fig.axes) == 2
    assert len(fig.axes[1].collections[0].get_offsets()) == 300
    assert "T = 0.7" in fig.axes[1].get_title()


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_plot_warped_grid_one_panel_per_layer(flow2d, direction):
    fig = plot_warped_grid(
        flow2d, lines=5, resolution=20, direction=direction, data=torch.randn(50, 2)
    )
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 1 + len(flow2d.transform)
    assert len(titled[0].lines) == 10  # 5 lines along each axis
    assert _renders(fig)


def test_plot_warped_grid_follows_the_layers(flow2d):
    fig = plot_warped_grid(flow2d, lines=3, resolution=4, bounds=((-1.0, 1.0), (-1.0, 1.0)))
    last = [ax for ax in fig.axes if ax.get_title()][-1]
    drawn = torch.tensor(last.lines[0].get_xydata(), dtype=torch.float32)
    start = torch.stack([torch.full((4,), -1.0), torch.linspace(-1, 1, 4)], 1)
    expected, _ = flow2d.transform(start)
    torch.testing.assert_close(drawn, expected.detach(), rtol=1e-5, atol=1e-5)


def test_plot_warped_grid_rejects_unknown_direction(flow2d):
    with pytest.raises(ValueError, match="direction must be"):
        plot_warped_grid(flow2d, direction="sideways")


def test_plot_logdet_heatmap_total_and_per_layer(flow2d):
    fig = plot_logdet_heatmap(flow2d, grid=25)
    assert _image_axes(fig) == 1
    fig = plot_logdet_heatmap(flow2d, grid=25, per_layer=True)
    assert _image_axes(fig) == 3
    layers = [torch.as_tensor(ax.images[0].get_array()) for ax in fig.axes if ax.images]
    total = torch.as_tensor(plot_logdet_heatmap(flow2d, grid=25).axes[0].images[0].get_array())
    torch.testing.assert_close(sum(layers).float(), total.float(), rtol=1e-5, atol=1e-5)


def test_image_grid_places_images():
    images = torch.arange(6.0).reshape(6, 1, 1, 1).expand(6, 1, 2, 2)
    grid = image_grid(images, nrow=4, pad=1)
    assert grid.shape == (1, 5, 11)
    assert grid[0, 0, 0] == 0 and grid[0, 0, 3] == 1 and grid[0, 3, 3] == 5
    assert math.isnan(grid[0, 2, 0].item())  # padding row
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        image_grid(torch.zeros(3, 8, 8))


def test_plot_image_samples_one_panel_per_temperature():
    torch.manual_seed(0)
    model = jitter_parameters(MultiScaleRealNVP(1, scales=2, hidden=4), scale=0.05)
    flow = Flow(FlowSequential(UniformDequantization(17), model), StandardNormal((1, 8, 8)))
    fig = plot_image_samples(flow, temperatures=(0.5, 1.0), n=6, nrow=3, vmin=0, vmax=16)
    assert _image_axes(fig) == 2
    assert [ax.get_title() for ax in fig.axes] == ["T = 0.5", "T = 1"]
    assert fig.axes[0].images[0].get_array().shape == (17, 26)
    assert _renders(fig)


def test_plot_images_gray_and_rgb():
    assert _image_axes(plot_images(torch.rand(5, 1, 8, 8), nrow=5)) == 1
    fig = plot_images(torch.rand(4, 3, 8, 8), nrow=2, vmin=0, vmax=1, title="rgb")
    assert fig.axes[0].images[0].get_array().shape == (17, 17, 3)


def test_plot_history_draws_reference():
    history = History(loss=[2.0, 1.5, 1.2, 1.1], lr=[1e-3] * 4)
    fig = plot_history(history, window=2, reference=1.0)
    assert len(fig.axes[0].lines) == 3
    assert _renders(fig)
