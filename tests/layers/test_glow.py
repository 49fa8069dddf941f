from __future__ import annotations

import pytest
import torch

from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.layers.glow import ActNorm, InvertibleConv1x1

DTYPES = (torch.float32, torch.float64)
SHAPES = [(2, 4, 3, 5), (1, 1, 2, 2), (2, 3), (1, 5, 1, 3), (3, 1)]


def sample(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 1
) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def initialized_actnorm(channels: int, image: bool, dtype: torch.dtype) -> ActNorm:
    layer = ActNorm(channels).to(dtype)
    init_shape = (8, channels, 3, 3) if image else (8, channels)
    layer(3.0 + 2.0 * sample(init_shape, dtype, seed=7))
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_actnorm_bijector(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    layer = initialized_actnorm(shape[1], len(shape) == 4, dtype)
    report = assert_bijector(layer, sample(shape, dtype))
    assert abs(report.logdet[0]) > 1e-2  # the initial log-scales are far from 0


@pytest.mark.parametrize("image", [False, True])
def test_actnorm_data_dependent_init(image: bool) -> None:
    layer = ActNorm(3)
    shape = (16, 3, 4, 5) if image else (64, 3)
    scale = torch.tensor([0.5, 2.0, 10.0]).reshape(1, 3, *([1] * (len(shape) - 2)))
    x = 4.0 + scale * sample(shape, torch.float64).float()
    assert not bool(layer.initialized)
    y, logdet = layer(x)
    dims = (0, 2, 3) if image else (0,)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean(dim=dims), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=dims, correction=0), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(layer.loc.detach(), x.mean(dim=dims))
    pixels = 20 if image else 1
    expected = -pixels * torch.log(x.std(dim=dims, correction=0)).sum()
    torch.testing.assert_close(logdet, expected.expand(shape[0]), rtol=1e-5, atol=1e-5)


def test_actnorm_initializes_only_once() -> None:
    layer = ActNorm(2)
    layer(sample((8, 2), seed=1))
    loc, log_scale = layer.loc.detach().clone(), layer.log_scale.detach().clone()
    layer(100 + 50 * sample((8, 2), seed=2))
    assert torch.equal(layer.loc, loc) and torch.equal(layer.log_scale, log_scale)


def test_actnorm_state_dict_reload_is_not_reinitialized() -> None:
    batch_a = 2.0 + 3.0 * sample((8, 3, 2, 2), seed=1)
    batch_b = -5.0 + 0.1 * sample((8, 3, 2, 2), seed=2)
    trained = ActNorm(3)
    trained(batch_a)
    state = trained.state_dict()
    assert set(state) == {"loc", "log_scale", "initialized"}
    assert bool(state["initialized"])

    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    y_b, logdet_b = fresh(batch_b)
    assert torch.equal(fresh.loc, trained.loc)
    assert torch.equal(fresh.log_scale, trained.log_scale)
    y_ref, logdet_ref = trained(batch_b)
    assert torch.equal(y_b, y_ref) and torch.equal(logdet_b, logdet_ref)
    # batch B was not normalised by its own statistics
    assert y_b.mean().abs() > 1.0


def test_actnorm_initialized_is_a_buffer() -> None:
    layer = ActNorm(2)
    assert "initialized" in dict(layer.named_buffers())
    assert {name for name, _ in layer.named_parameters()} == {"loc", "log_scale"}
    layer.double()
    assert layer.initialized.dtype == torch.bool


def test_actnorm_inverse_before_init_raises() -> None:
    with pytest.raises(RuntimeError, match="ActNorm: inverse called before initialisation"):
        ActNorm(3).inverse(torch.randn(2, 3))


def test_actnorm_init_needs_two_values_per_channel() -> None:
    with pytest.raises(ValueError, match=r"at least 2 values per channel.*\(1, 3\)"):
        ActNorm(3)(torch.randn(1, 3))
    ActNorm(3)(torch.randn(1, 3, 1, 2))  # two pixels are enough


def test_actnorm_init_call_is_differentiable() -> None:
    layer = ActNorm(2)
    x = sample((4, 2, 2, 2)).requires_grad_(True)
    y, logdet = layer(x)
    (y.sum() + logdet.sum()).backward()
    assert x.grad is not None and layer.log_scale.grad is not None
    assert layer.log_scale.grad.abs().sum() > 0


def test_actnorm_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"ActNorm: expected 3 channels.*\(2, 4\)"):
        ActNorm(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"ActNorm: expected input of shape"):
        ActNorm(3)(torch.randn(2, 3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_invconv_bijector(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    layer = jitter_parameters(InvertibleConv1x1(shape[1], seed=4), scale=0.2, seed=5).to(dtype)
    report = assert_bijector(layer, sample(shape, dtype))  # type: ignore[arg-type]
    if shape[1] > 1:
        assert abs(report.logdet[0]) > 1e-3  # no longer a rotation
    if dtype == torch.float64:
        assert report.logdet_error is not None and report.logdet_error <= 1e-8
        assert report.roundtrip_error <= 1e-10


def test_invconv_logdet_is_pixels_times_logdet_w() -> None:
    layer = jitter_parameters(InvertibleConv1x1(4, seed=0), scale=0.3, seed=1).double()
    w = layer.weight_matrix()  # type: ignore[operator]
    _, logabsdet = torch.linalg.slogdet(w)
    _, logdet = layer(sample((2, 4, 3, 5), torch.float64))
    torch.testing.assert_close(logdet, (15 * logabsdet).expand(2))
    y, _ = layer(x := sample((2, 4, 3, 5), torch.float64))
    torch.testing.assert_close(y, torch.einsum("ij,bjhw->bihw", w, x))


def test_invconv_starts_as_rotation() -> None:
    for channels in (1, 2, 5, 8):
        w = InvertibleConv1x1(channels, seed=channels).weight_matrix().double()
        torch.testing.assert_close(
            w @ w.T, torch.eye(channels, dtype=torch.float64), atol=1e-6, rtol=0
        )
        assert torch.linalg.det(w).item() == pytest.approx(1.0, abs=1e-5)


def test_invconv_seed_and_global_rng() -> None:
    a, b = InvertibleConv1x1(5, seed=1), InvertibleConv1x1(5, seed=1)
    assert torch.equal(a.weight_matrix(), b.weight_matrix())
    assert not torch.allclose(a.weight_matrix(), InvertibleConv1x1(5, seed=2).weight_matrix())
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    InvertibleConv1x1(5, seed=3)
    assert torch.equal(torch.rand(2), expected)  # an explicit seed leaves the global RNG alone
    torch.manual_seed(0)
    c, d = InvertibleConv1x1(5), InvertibleConv1x1(5)
    torch.manual_seed(0)
    e = InvertibleConv1x1(5)
    assert not torch.allclose(c.weight_matrix(), d.weight_matrix())  # different layers differ
    assert torch.equal(c.weight_matrix(), e.weight_matrix())  # but torch.manual_seed repeats


def test_invconv_buffers_and_parameters() -> None:
    layer = InvertibleConv1x1(3, seed=0)
    assert {n for n, _ in layer.named_buffers()} == {"P", "sign_s"}
    assert {n for n, _ in layer.named_parameters()} == {"L", "U", "log_s"}
    p = layer.P
    assert torch.equal(p @ p.T, torch.eye(3)) and set(p.unique().tolist()) == {0.0, 1.0}


def test_invconv_float32_layer_on_float64_input() -> None:
    layer = InvertibleConv1x1(3, seed=0)
    x = sample((2, 3, 2, 2), torch.float64)
    y, logdet = layer(x)
    assert y.dtype == logdet.dtype == torch.float64
    assert (layer.inverse(y)[0] - x).abs().max() < 1e-6


def test_invconv_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"InvertibleConv1x1: expected 3 channels.*\(2, 4, 2, 2\)"):
        InvertibleConv1x1(3)(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"InvertibleConv1x1: expected input of shape"):
        InvertibleConv1x1(3).inverse(torch.randn(3))
