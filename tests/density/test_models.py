import pytest
import torch

from flowlearn import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    DiagonalScaling,
    InvertibleConv1x1,
    SplineCoupling,
    Squeeze,
)
from flowlearn.checks import assert_bijector, jitter_parameters
from flowlearn.density.models import NICE, Glow, MultiScaleRealNVP, NeuralSplineFlow, RealNVP
from flowlearn.layers.nets import MLP


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    "model, x",
    [
        (NICE(4, hidden=8, depth=2), _x(3, 4)),
        (NICE(5, couplings=3, hidden=8, depth=1), _x(2, 5)),
        (RealNVP(4, couplings=4, hidden=8), _x(3, 4)),
        (MultiScaleRealNVP(1, scales=2, hidden=4), _x(2, 1, 4, 4)),
        (MultiScaleRealNVP(2, scales=3, hidden=4, checker=2, channel=2, final=2), _x(2, 2, 4, 4)),
        (MultiScaleRealNVP(3, scales=1, hidden=4, final=2), _x(2, 3, 2, 2)),
    ],
    ids=["nice", "nice-odd", "realnvp", "multiscale-2", "multiscale-3", "multiscale-1"],
)
def test_models_pass_checker(model, x):
    torch.manual_seed(0)
    jitter_parameters(model, scale=0.1)
    report = assert_bijector(model.double(), x)
    assert report.ok


def test_nice_paper_defaults():
    model = NICE(784)
    assert len(model) == 5
    couplings = list(model)[:4]
    assert all(isinstance(c, AdditiveCoupling) for c in couplings)
    assert [c.parity for c in couplings] == [0, 1, 0, 1]
    assert isinstance(model[4], DiagonalScaling)
    mlp = couplings[0].subnet
    assert isinstance(mlp, MLP)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [1000] * 5 + [392]


def test_nice_log_det_is_the_scaling_only():
    model = jitter_parameters(NICE(4, hidden=8, depth=2), scale=0.3)
    _, logdet = model(_x(5, 4).float())
    torch.testing.assert_close(logdet, model[4].s.sum().expand(5))


def test_realnvp_alternates_affine_couplings():
    model = RealNVP(2, couplings=6, hidden=8, clamp=1.5)
    assert all(isinstance(c, AffineCoupling) and c.clamp == 1.5 for c in model)
    assert [c.parity for c in model] == [0, 1, 0, 1, 0, 1]


def test_multiscale_architecture_follows_realnvp():
    model = MultiScaleRealNVP(1, scales=2, hidden=4)
    outer = model.outer
    assert [c.mask for c in outer.checker] == ["checkerboard"] * 3
    assert [c.mask for c in outer.channel] == ["channel"] * 3
    assert [c.channels for c in outer.channel] == [4] * 3
    inner = outer.inner
    assert inner.inner is None
    assert [(c.mask, c.channels) for c in inner.checker] == [("checkerboard", 2)] * 4


def test_multiscale_latent_layout():
    torch.manual_seed(0)
    model = jitter_parameters(MultiScaleRealNVP(1, scales=2, hidden=4), scale=0.1)
    x = _x(3, 1, 8, 8).float()
    y, _ = model(x)
    assert y.shape == x.shape
    # recompute the factored-out z1 by hand from the first scale's layers
    outer = model.outer
    h, _ = outer.checker(x)
    h, _ = Squeeze()(h)
    h, _ = outer.channel(h)
    z1, rest = h.chunk(2, dim=1)
    z2, _ = outer.inner(rest)
    squeezed, _ = Squeeze()(y)
    torch.testing.assert_close(squeezed[:, :2], z1)
    torch.testing.assert_close(squeezed[:, 2:], z2)
    parts = model.split_latent(y)
    torch.testing.assert_close(parts[0], z1)
    torch.testing.assert_close(parts[1], z2)


def test_multiscale_rejects_bad_shapes():
    model = MultiScaleRealNVP(1, scales=3, hidden=4)
    with pytest.raises(ValueError, match=r"divisible by 4 \(3 scales\)"):
        model(torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, H, W\)"):
        model(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="MultiScaleRealNVP"):
        model(torch.zeros(1, 64))


def test_models_reject_bad_sizes():
    with pytest.raises(ValueError, match="couplings must be positive"):
        NICE(2, couplings=0)
    with pytest.raises(ValueError, match="scales must be positive"):
        MultiScaleRealNVP(1, scales=0)


def _initialised(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Run once on a batch, so that every ActNorm takes its data-dependent initialisation."""
    with torch.no_grad():
        model(x)
    return model


@pytest.mark.parametrize(
    ("levels", "steps", "shape"),
    [(2, 2, (2, 1, 4, 4)), (1, 3, (2, 3, 2, 2)), (3, 1, (2, 2, 8, 8))],
    ids=["glow-2-levels", "glow-1-level", "glow-3-levels"],
)
def test_glow_passes_checker(levels: int, steps: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = Glow(shape[1], levels=levels, steps=steps, hidden=4).double()
    _initialised(model, 3 * _x(8, *shape[1:], seed=5) + 1)
    jitter_parameters(model, scale=0.1)
    report = assert_bijector(model, _x(*shape))
    assert max(abs(v) for v in report.logdet) > 1e-2


def test_glow_architecture_follows_the_paper() -> None:
    model = Glow(1, levels=2, steps=3, hidden=4)
    outer, inner = model.outer, model.outer.inner
    assert inner is not None and inner.inner is None
    for level, channels in ((outer, 4), (inner, 8)):  # 4 C after each squeeze
        assert isinstance(level.squeeze, Squeeze) and len(level.steps) == 3
        for step in level.steps:
            actnorm, conv, coupling = step
            assert isinstance(actnorm, ActNorm) and isinstance(conv, InvertibleConv1x1)
            assert isinstance(coupling, AffineCoupling) and coupling.mask == "channel"
            assert actnorm.channels == conv.channels == coupling.channels == channels


def test_glow_shapes_round_trip_and_latent_layout() -> None:
    torch.manual_seed(0)
    model = Glow(1, levels=2, steps=2, hidden=4)
    x = _x(3, 1, 8, 8).float()
    y, logdet = model(x)  # initialises the actnorms
    jitter_parameters(model, scale=0.1)
    y, logdet = model(x)
    assert y.shape == x.shape and logdet.shape == (3,)
    torch.testing.assert_close(model.inverse(y)[0], x, atol=1e-5, rtol=0)
    # the first level's split by hand: squeeze, steps, first half of the channels
    h, _ = Squeeze()(x)
    h, _ = model.outer.steps(h)
    z1, rest = h.chunk(2, dim=1)
    parts = model.split_latent(y)
    assert [tuple(p.shape) for p in parts] == [(3, 2, 4, 4), (3, 8, 2, 2)]
    torch.testing.assert_close(parts[0], z1)
    inner_out, _ = model.outer.inner(rest)  # (3, 2, 4, 4), un-squeezed by the inner level
    torch.testing.assert_close(parts[1], Squeeze()(inner_out)[0])


def test_glow_rejects_bad_shapes_and_sizes() -> None:
    model = Glow(1, levels=2, steps=1, hidden=4)
    with pytest.raises(ValueError, match=r"divisible by 4 \(2 levels\)"):
        model(torch.zeros(2, 1, 6, 6))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, H, W\)"):
        model(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="levels and steps must be positive"):
        Glow(1, levels=0)
    with pytest.raises(ValueError, match="levels and steps must be positive"):
        Glow(1, steps=0)


@pytest.mark.parametrize("dim", [2, 5])
def test_neural_spline_flow_passes_checker(dim: int) -> None:
    torch.manual_seed(0)
    model = jitter_parameters(NeuralSplineFlow(dim, couplings=3, bins=4, hidden=8), scale=0.3)
    report = assert_bijector(model.double(), 2 * _x(3, dim))
    assert max(abs(v) for v in report.logdet) > 1e-2


def test_neural_spline_flow_alternates_spline_couplings() -> None:
    model = NeuralSplineFlow(2, couplings=4, bins=6, bound=2.5, hidden=8)
    assert all(isinstance(c, SplineCoupling) for c in model)
    assert [c.parity for c in model] == [0, 1, 0, 1]
    assert {(c.bins, c.bound) for c in model} == {(6, 2.5)}
    x = _x(5, 2).float()
    y, logdet = model(x)  # zero-initialised subnets: the identity
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(5), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="couplings must be positive"):
        NeuralSplineFlow(2, couplings=0)
