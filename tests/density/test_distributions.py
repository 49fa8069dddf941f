import math

import pytest
import torch

from flowlearn import DiagonalScaling, Flow, FlowSequential, StandardLogistic, StandardNormal
from flowlearn.density.distributions import nats_to_bits_per_dim


def test_standard_normal_log_prob_matches_torch():
    z = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    got = StandardNormal((3, 2, 2)).log_prob(z)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected)


def test_standard_logistic_log_prob_matches_closed_form():
    z = torch.linspace(-30, 30, 13).reshape(13, 1)
    # log p(z) = -z - 2 log(1 + e^{-z}); at large |z| it must stay finite
    expected = (-z - 2 * torch.log1p(torch.exp(-z.double())).float()).sum(1)
    got = StandardLogistic(1).log_prob(z)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_standard_logistic_density_integrates_to_one():
    z = torch.linspace(-40, 40, 200001, dtype=torch.float64).reshape(-1, 1)
    p = StandardLogistic(1).double().log_prob(z).exp()
    assert abs(torch.trapezoid(p, z[:, 0]).item() - 1) < 1e-6


@pytest.mark.parametrize(
    "base, var", [(StandardNormal(4), 1.0), (StandardLogistic(4), math.pi**2 / 3)]
)
def test_base_sample_moments_and_temperature(base, var):
    g = torch.Generator().manual_seed(1)
    z = base.sample(50000, generator=g)
    assert z.shape == (50000, 4)
    assert abs(z.mean().item()) < 0.03
    assert abs(z.var().item() / var - 1) < 0.03
    g = torch.Generator().manual_seed(1)
    cold = base.sample(50000, temperature=0.5, generator=g)
    torch.testing.assert_close(cold, 0.5 * z)


def test_base_sample_follows_dtype_and_generator():
    base = StandardNormal((1, 2)).double()
    a = base.sample(3, generator=torch.Generator().manual_seed(7))
    b = base.sample(3, generator=torch.Generator().manual_seed(7))
    assert a.dtype == torch.float64 and a.shape == (3, 1, 2)
    assert torch.equal(a, b)


def test_base_log_prob_wrong_shape_raises():
    with pytest.raises(ValueError, match=r"StandardNormal: expected input of shape \(B, 2\)"):
        StandardNormal(2).log_prob(torch.zeros(4, 3))


def test_base_rejects_bad_shape():
    with pytest.raises(ValueError, match="event shape"):
        StandardNormal((0, 2))


def _scaled_flow(scale: tuple[float, float]) -> Flow:
    layer = DiagonalScaling(2)
    with torch.no_grad():
        layer.s.copy_(torch.log(torch.tensor(scale)))
    return Flow(FlowSequential(layer), StandardNormal(2))


def test_flow_log_prob_is_change_of_variables():
    # y = x * (2, 0.5): x ~ N(0, diag(1/4, 4))
    flow = _scaled_flow((2.0, 0.5))
    x = torch.randn(6, 2)
    expected = torch.distributions.Normal(0.0, torch.tensor([0.5, 2.0])).log_prob(x).sum(1)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_flow_sample_goes_through_the_inverse():
    flow = _scaled_flow((2.0, 0.5))
    with torch.no_grad():
        x = flow.sample(40000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.std(0), torch.tensor([0.5, 2.0]), rtol=0.02, atol=0.0)


def test_flow_nll_is_the_batch_mean_in_nats():
    flow = _scaled_flow((1.0, 1.0))
    x = torch.zeros(3, 2)
    nll = flow.nll(x)
    assert nll.shape == ()
    torch.testing.assert_close(nll, torch.tensor(math.log(2 * math.pi)))


def test_nats_to_bits_per_dim_divides_by_d_ln2():
    assert nats_to_bits_per_dim(8 * math.log(2), 4) == pytest.approx(2.0)
    value = nats_to_bits_per_dim(torch.tensor([math.log(2), 0.0]), 1)
    torch.testing.assert_close(value, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="dims must be positive"):
        nats_to_bits_per_dim(1.0, 0)


def test_flow_requires_a_bijector():
    with pytest.raises(TypeError, match="Bijector"):
        Flow(torch.nn.Linear(2, 2), StandardNormal(2))  # type: ignore[arg-type]
