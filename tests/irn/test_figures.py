from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from flowlearn import HaarDownsampling
from flowlearn.irn.figures import plot_crops, plot_subbands, plot_training_log


def _panel_arrays(fig) -> list[np.ndarray]:
    return [np.asarray(ax.get_images()[0].get_array()) for ax in fig.axes if ax.get_images()]


def test_plot_subbands_panels_and_shared_scale() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    bands, _ = HaarDownsampling(3, normalization="mean")(x)
    fig = plot_subbands(bands)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 4
    ll = np.asarray(images[0].get_array())
    assert ll.shape == (8, 8, 3)  # the LL panel is an RGB image of half the size
    assert ll.min() == pytest.approx(0.0) and ll.max() == pytest.approx(1.0)
    limits = {im.get_clim() for im in images[1:]}
    assert len(limits) == 1  # the three detail bands share one colour scale
    (lo, hi) = limits.pop()
    assert lo == -hi and hi > 0
    # each detail panel is the colour mean of its band
    expected = bands[0, 3:6].mean(0).numpy()
    np.testing.assert_allclose(np.asarray(images[1].get_array()), expected, rtol=1e-6)


def test_plot_subbands_grey_image() -> None:
    bands, _ = HaarDownsampling(1)(torch.rand(1, 1, 8, 8))
    fig = plot_subbands(bands, channels=1)
    assert np.asarray(fig.axes[0].get_images()[0].get_array()).shape == (4, 4)


def test_plot_subbands_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"\(4C, h, w\) with C = 3"):
        plot_subbands(torch.zeros(1, 8, 4, 4))


def test_plot_crops_shows_same_region_of_lr_and_hr() -> None:
    hr = torch.rand(3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr[None], 2)[0]
    fig = plot_crops({"HR": hr, "LR": lr}, (8, 4, 16, 12), show_full=False)
    hr_crop, lr_crop = _panel_arrays(fig)
    np.testing.assert_array_equal(hr_crop, hr[:, 8:24, 4:16].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(lr_crop, lr[:, 4:12, 2:8].permute(1, 2, 0).numpy())
    # both panels cover the same extent, so the LR pixels show as 2x2 squares
    extents = [ax.get_images()[0].get_extent() for ax in fig.axes]
    assert extents[0] == extents[1]


def test_plot_crops_overview_has_box() -> None:
    fig = plot_crops({"HR": torch.rand(1, 3, 16, 16)}, (2, 3, 4, 5))
    assert len(fig.axes) == 2
    (patch,) = fig.axes[0].patches
    assert (patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()) == (
        2.5,
        1.5,
        5,
        4,
    )


def test_plot_crops_values_outside_range_only_clamped_for_display() -> None:
    img = torch.full((3, 4, 4), 2.0)
    plot_crops({"x": img}, (0, 0, 4, 4))
    assert torch.equal(img, torch.full((3, 4, 4), 2.0))


@pytest.mark.parametrize(
    ("box", "match"),
    [((0, 0, 40, 4), "not inside"), ((-1, 0, 4, 4), "not inside"), ((0, 0, 0, 4), "not inside")],
)
def test_plot_crops_rejects_box_outside(box: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_crops({"HR": torch.rand(3, 32, 32)}, box)


def test_plot_crops_rejects_box_not_divisible_for_lr() -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        plot_crops({"HR": torch.rand(3, 32, 32), "LR": torch.rand(3, 16, 16)}, (1, 0, 8, 8))


def test_plot_crops_rejects_non_integer_size_ratio() -> None:
    with pytest.raises(ValueError, match="divided by an integer"):
        plot_crops({"HR": torch.rand(3, 32, 32), "odd": torch.rand(3, 12, 12)}, (0, 0, 8, 8))


def test_plot_crops_rejects_non_image() -> None:
    with pytest.raises(ValueError, match=r"expected an image"):
        plot_crops({"HR": torch.rand(2, 3, 8, 8)}, (0, 0, 4, 4))


def test_plot_training_log_reads_csv(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "seconds", "fit", "distr", "rec", "total", "lr"])
        writer.writeheader()
        for step in (10, 20, 30):
            writer.writerow(
                {
                    "step": step,
                    "seconds": step / 10,
                    "fit": 1 / step,
                    "distr": 2 / step,
                    "rec": 3 / step,
                    "total": 6 / step,
                    "lr": 1e-3,
                }
            )
    fig = plot_training_log(path)
    assert len(fig.axes) == 4
    x, y = fig.axes[2].get_lines()[0].get_data()
    assert list(x) == [10.0, 20.0, 30.0]
    assert list(y) == pytest.approx([0.3, 0.15, 0.1])
    assert fig.axes[2].get_yscale() == "log"


def test_plot_training_log_linear_scale_for_non_positive() -> None:
    rows = [{"step": 1, "fit": -1.0}, {"step": 2, "fit": 1.0}]
    fig = plot_training_log(rows, columns=("fit",))
    assert fig.axes[0].get_yscale() == "linear"


def test_plot_training_log_names_missing_column() -> None:
    with pytest.raises(ValueError, match="no column"):
        plot_training_log([{"step": 1, "fit": 1.0}], columns=("fit", "rec"))


def test_plot_training_log_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no log file"):
        plot_training_log(tmp_path / "absent.csv")
