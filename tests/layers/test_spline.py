from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from flowlearn.checks import assert_bijector, check_bijector, jitter_parameters
from flowlearn.cli import builtin_cases
from flowlearn.core import Bijector
from flowlearn.layers.nets import conv_net, mlp
from flowlearn.layers.spline import (
    SplineCoupling,
    rational_quadratic,
    rational_quadratic_inverse,
    rq_spline,
    search_bins,
    spline_knots,
)
from tests.core.broken import BatchMean, WrongSign

F64 = torch.float64


def sample(*shape: int, dtype: torch.dtype = F64, seed: int = 1, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_knots(n: int, bins: int, bound: float, seed: int = 0, spread: float = 1.0):
    w, h = sample(n, bins, seed=seed, scale=spread), sample(n, bins, seed=seed + 1, scale=spread)
    d = sample(n, bins - 1, seed=seed + 2, scale=spread)
    return w, h, d, spline_knots(w, h, d, bound)


CASES = [
    ("channel", 0, (3, 5)),
    ("channel", 1, (3, 5)),
    ("channel", 0, (2, 3, 4, 6)),
    ("channel", 1, (2, 4, 3, 3)),
    ("checkerboard", 0, (2, 3, 4, 6)),
    ("checkerboard", 1, (2, 1, 5, 4)),
]


def make_layer(mask: str, parity: int, shape: tuple[int, ...], bins: int = 5) -> SplineCoupling:
    subnet = mlp(hidden=16) if len(shape) == 2 else conv_net(hidden=8)
    torch.manual_seed(0)
    layer = SplineCoupling(shape[1], subnet, mask=mask, parity=parity, bins=bins, bound=2.0)  # type: ignore[arg-type]
    return jitter_parameters(layer, scale=0.2, seed=0)


@pytest.mark.parametrize(("mask", "parity", "shape"), CASES)
def test_spline_coupling_passes_checker_float64(mask: str, parity: int, shape) -> None:
    layer = make_layer(mask, parity, shape).double()
    x = sample(*shape, scale=1.5)  # some values fall in the tails outside [-2, 2]
    assert (x.abs() > 2).any() and (x.abs() < 2).any()
    report = assert_bijector(layer, x)
    assert max(abs(v) for v in report.logdet) > 1e-2  # a real spline, not the identity


@pytest.mark.parametrize(("mask", "parity", "shape"), CASES)
def test_spline_coupling_round_trip_float32(mask: str, parity: int, shape) -> None:
    layer = make_layer(mask, parity, shape)
    x = sample(*shape, dtype=torch.float32, scale=1.5)
    y, logdet = layer(x)
    x_back, logdet_inv = layer.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet + logdet_inv, torch.zeros_like(logdet), atol=1e-4, rtol=0)


def test_spline_coupling_fresh_layer_is_identity() -> None:
    layer = SplineCoupling(3, conv_net(hidden=8), mask="checkerboard", bins=6)
    x = sample(2, 3, 4, 4, dtype=torch.float32, scale=2.0)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(2), atol=1e-5, rtol=0)


def test_spline_coupling_conditioning_part_unchanged() -> None:
    layer = make_layer("channel", 1, (3, 5))
    x = sample(3, 5, dtype=torch.float32)
    y, _ = layer(x)
    assert torch.equal(y[:, 2:], x[:, 2:])  # parity 1: the last 3 channels condition
    assert not torch.allclose(y[:, :2], x[:, :2])


def test_spline_coupling_checkerboard_keeps_masked_pixels() -> None:
    layer = make_layer("checkerboard", 0, (2, 3, 4, 6))
    x = sample(2, 3, 4, 6, dtype=torch.float32)
    y, _ = layer(x)
    kept = (torch.arange(4).reshape(4, 1) + torch.arange(6).reshape(1, 6)) % 2 == 1
    assert torch.equal(y[..., kept], x[..., kept])
    assert not torch.allclose(y[..., ~kept], x[..., ~kept])


def test_rq_spline_tails_are_identity_with_zero_log_derivative() -> None:
    w, h, d, _ = random_knots(6, 5, 2.0, spread=2.0)
    v = torch.tensor([-7.0, -2.0001, 2.0001, 3.0, 50.0, -1e4], dtype=F64)
    for inverse in (False, True):
        out, log_derivative = rq_spline(v, w, h, d, 2.0, inverse=inverse)
        assert torch.equal(out, v)
        assert torch.equal(log_derivative, torch.zeros_like(v))


def test_rq_spline_joins_the_tails_continuously() -> None:
    w, h, d, _ = random_knots(4, 5, 2.0, spread=2.0)
    edge = torch.tensor([2.0, -2.0, 2.0, -2.0], dtype=F64)
    out, log_derivative = rq_spline(edge, w, h, d, 2.0)  # on the edge: the spline itself
    assert torch.equal(out, edge)  # g(±B) = ±B
    torch.testing.assert_close(log_derivative, torch.zeros(4, dtype=F64), atol=1e-12, rtol=0)
    inside = edge - 1e-7 * edge.sign()
    out, log_derivative = rq_spline(inside, w, h, d, 2.0)
    torch.testing.assert_close(out, inside, atol=1e-6, rtol=0)
    assert float(log_derivative.abs().max()) < 1e-3  # g' -> 1 at the edges


def test_spline_knots_cover_the_interval_monotonically() -> None:
    *_, (xk, yk, dk) = random_knots(100, 7, 3.0, spread=5.0)
    for knots in (xk, yk):
        assert torch.equal(knots[:, 0], torch.full((100,), -3.0, dtype=F64))
        assert torch.equal(knots[:, -1], torch.full((100,), 3.0, dtype=F64))
        assert bool((knots.diff(dim=-1) >= 6.0 * 1e-3 * (1 - 1e-9)).all())  # floor min_bin·2B
    assert bool((dk >= 1e-3).all()) and torch.equal(dk[:, [0, -1]], torch.ones(100, 2, dtype=F64))


def test_spline_knots_zero_outputs_give_equal_bins_and_unit_derivatives() -> None:
    xk, yk, dk = spline_knots(torch.zeros(5), torch.zeros(5), torch.zeros(4), 2.5)
    torch.testing.assert_close(xk, torch.linspace(-2.5, 2.5, 6))
    torch.testing.assert_close(yk, torch.linspace(-2.5, 2.5, 6))
    torch.testing.assert_close(dk, torch.ones(6))


def test_search_bins_closed_at_both_ends() -> None:
    knots = torch.tensor([-1.0, -0.5, 0.0, 1.0]).expand(7, 4)
    v = torch.tensor([-1.0, -0.75, -0.5, -1e-7, 0.0, 0.5, 1.0])
    assert search_bins(knots, v).tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_rational_quadratic_interpolates_knots_and_derivatives() -> None:
    _, _, _, (xk, yk, dk) = random_knots(50, 6, 2.0, spread=2.0)
    for j in range(7):
        y, log_derivative = rational_quadratic(xk[:, j], xk, yk, dk)
        torch.testing.assert_close(y, yk[:, j], atol=1e-12, rtol=0)
        torch.testing.assert_close(log_derivative, dk[:, j].log(), atol=1e-9, rtol=0)


def test_rational_quadratic_log_derivative_matches_autograd() -> None:
    _, _, _, (xk, yk, dk) = random_knots(200, 6, 2.0, spread=2.0)
    x = torch.rand(200, generator=torch.Generator().manual_seed(3), dtype=F64) * 4 - 2
    x.requires_grad_(True)
    y, log_derivative = rational_quadratic(x, xk, yk, dk)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert bool((grad > 0).all())  # monotonic
    torch.testing.assert_close(log_derivative.detach(), grad.log(), atol=1e-10, rtol=0)


def test_rational_quadratic_inverse_stable_near_bin_edges() -> None:
    _, _, _, (xk, yk, dk) = random_knots(400, 6, 3.0, spread=3.0)
    for j in range(7):
        for offset in (0.0, 1e-13, -1e-13, 1e-9, -1e-9):
            y = (yk[:, j] + offset).clamp(-3.0, 3.0)
            x, log_derivative = rational_quadratic_inverse(y, xk, yk, dk)
            assert bool(torch.isfinite(x).all() and torch.isfinite(log_derivative).all())
            # within one bin of the knot, |x - x_k| <= |y - y_k| / min derivative of that region
            assert float((x - xk[:, j]).abs().max()) <= 1e-9 / 1e-3 * 1.01 + 1e-12
            y_again, _ = rational_quadratic(x, xk, yk, dk)
            torch.testing.assert_close(y_again, y, atol=1e-11, rtol=0)


def test_rational_quadratic_inverse_exact_where_the_textbook_root_is_nan() -> None:
    # Equal bins and unit derivatives: a = 0 in every bin, (-b + sqrt(b² - 4ac)) / 2a is 0/0.
    xk, yk, dk = spline_knots(torch.zeros(10, 4), torch.zeros(10, 4), torch.zeros(10, 3), 1.0)
    y = torch.linspace(-1, 1, 10)
    x, log_derivative = rational_quadratic_inverse(y, xk, yk, dk)
    torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_derivative, torch.zeros(10), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(bins=1), "bins must be an integer >= 2"),
        (dict(bins=2.5), "bins must be an integer >= 2"),
        (dict(bound=0.0), "bound must be positive"),
        (dict(mask="diagonal"), "mask must be 'channel' or 'checkerboard'"),
        (dict(parity=2), "parity must be 0 or 1"),
    ],
)
def test_spline_coupling_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SplineCoupling(4, mlp(hidden=8), **kwargs)


def test_spline_coupling_bad_inputs_raise() -> None:
    layer = SplineCoupling(4, mlp(hidden=8), bins=3)
    with pytest.raises(ValueError, match=r"SplineCoupling: expected 4 channels"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"checkerboard mask needs images"):
        SplineCoupling(4, conv_net(hidden=8), mask="checkerboard")(torch.randn(2, 4))
    wrong = SplineCoupling(4, lambda c_in, c_out: torch.nn.Linear(c_in, c_out + 1), bins=3)
    with pytest.raises(ValueError, match=r"subnet returned shape \(2, 17\), expected \(2, 16\)"):
        wrong(torch.randn(2, 4))


def test_spline_knots_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"derivatives \(\.\.\., K - 1\)"):
        spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="bound must be positive"):
        spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match=r"min_bin \* K must be in \[0, 1\)"):
        spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(3), 1.0, min_bin=0.25)


def wrong_root_inverse(y: Tensor, xk: Tensor, yk: Tensor, dk: Tensor) -> tuple[Tensor, Tensor]:
    """The other root of the quadratic, 2c / (-b + sqrt(b² - 4ac))."""
    k = search_bins(yk, y).unsqueeze(-1)
    x_lo, x_hi = xk.gather(-1, k).squeeze(-1), xk.gather(-1, k + 1).squeeze(-1)
    y_lo, y_hi = yk.gather(-1, k).squeeze(-1), yk.gather(-1, k + 1).squeeze(-1)
    d_lo, d_hi = dk.gather(-1, k).squeeze(-1), dk.gather(-1, k + 1).squeeze(-1)
    w, h = x_hi - x_lo, y_hi - y_lo
    s, dy = h / w, y - y_lo
    gamma = d_hi + d_lo - 2 * s
    a, b, c = h * (s - d_lo) + dy * gamma, h * d_lo - dy * gamma, -s * dy
    xi = 2 * c / (-b + torch.sqrt((b**2 - 4 * a * c).clamp_min(0)))
    x = x_lo + xi * w
    return x, -rational_quadratic(x.clamp(-3, 3), xk, yk, dk)[1]


class WrongRootSpline(SplineCoupling):
    """A spline whose inverse takes the other root of the quadratic."""

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        import flowlearn.layers.spline as spline

        original = spline.rational_quadratic_inverse
        spline.rational_quadratic_inverse = wrong_root_inverse  # type: ignore[assignment]
        try:
            return super().inverse(y)
        finally:
            spline.rational_quadratic_inverse = original  # type: ignore[assignment]


def spline_2d(cls: type[SplineCoupling] = SplineCoupling) -> SplineCoupling:
    return cls(2, mlp(hidden=16), bins=5, bound=3.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WrongSign(spline_2d()), "brute-force Jacobian"),
        (lambda: BatchMean(spline_2d()), "brute-force Jacobian"),
        (lambda: spline_2d(WrongRootSpline), "round trip"),
    ],
    ids=["wrong-sign", "batch-mean", "wrong-root"],
)
def test_checker_catches_broken_splines(make: Callable[[], Bijector], message: str) -> None:
    torch.manual_seed(0)
    layer = jitter_parameters(make(), scale=0.3).double()
    report = check_bijector(layer, sample(4, 2))
    assert not report.ok
    assert any(message in failure for failure in report.failures), report.failures


@pytest.mark.parametrize(
    "case", [c for c in builtin_cases() if "Spline" in c[0]], ids=lambda c: c[0]
)
def test_flowlearn_check_includes_spline_coupling(case) -> None:
    name, make, shape = case
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        layer = jitter_parameters(make().to(dtype), scale=0.05, seed=0)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        assert check_bijector(layer, x).ok, name


def test_spline_coupling_parameter_count() -> None:
    # (3K - 1) subnet outputs per transformed value: K = 8, 3 transformed values -> 69
    layer = SplineCoupling(5, lambda c_in, c_out: torch.nn.Linear(c_in, c_out), bins=8)
    assert layer.subnet.out_features == 3 * (3 * 8 - 1)
    assert math.isclose(layer.bound, 3.0)
