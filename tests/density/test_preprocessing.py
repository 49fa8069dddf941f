import math

import pytest
import torch

from flowlearn import (
    DiagonalScaling,
    Flow,
    FlowSequential,
    LogitTransform,
    StandardLogistic,
    StandardNormal,
    UniformDequantization,
    bits_per_dim,
)
from flowlearn.checks import assert_bijector, jitter_parameters


def _levels(k: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, shape, generator=torch.Generator().manual_seed(seed)).float()


def test_dequantization_range_roundtrip_and_logdet():
    x = _levels(17, (64, 1, 8, 8))
    v, logdet = UniformDequantization(17)(x)
    assert ((v >= 0) & (v < 1)).all()
    assert torch.equal(torch.floor(v * 17), x)
    torch.testing.assert_close(logdet, torch.full((64,), -64 * math.log(17)))
    back, inv_logdet = UniformDequantization(17).inverse(v)
    assert torch.equal(back, x)
    torch.testing.assert_close(inv_logdet, -logdet)


def test_dequantization_does_not_modify_input():
    x = _levels(4, (8, 3))
    copy = x.clone()
    UniformDequantization(4)(x)
    assert torch.equal(x, copy)


@pytest.mark.parametrize("bad", [torch.tensor([[0.5, 1.0]]), torch.tensor([[4.0, 0.0]])])
def test_dequantization_rejects_non_levels(bad):
    with pytest.raises(ValueError, match=r"UniformDequantization: expected integer levels"):
        UniformDequantization(4)(bad)


@pytest.mark.parametrize("symmetric", [False, True])
def test_logit_transform_passes_checker(symmetric):
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_bijector(LogitTransform(0.05, symmetric=symmetric), x)


def test_logit_transform_matches_paper_formula():
    x = torch.tensor([[0.0, 0.25, 0.9]])
    y, logdet = LogitTransform(0.05)(x)
    s = 0.05 + 0.95 * x  # RealNVP §4.1: logit(alpha + (1 - alpha) x)
    torch.testing.assert_close(y, torch.log(s / (1 - s)))
    torch.testing.assert_close(logdet, (math.log(0.95) - torch.log(s * (1 - s))).sum(1))
    y_sym, _ = LogitTransform(0.05, symmetric=True)(torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(y_sym, torch.tensor([[-1.0, 1.0]]) * math.log(0.95 / 0.05))


def test_logit_transform_rejects_out_of_range():
    with pytest.raises(ValueError, match="LogitTransform: expected inputs in"):
        LogitTransform(0.05)(torch.tensor([[1.2]]))


def test_bits_per_dim_of_uniform_model_is_log2_bins():
    # logit followed by a logistic base is exactly the uniform density on [0, 1)^D, so the
    # whole likelihood comes from the discrete-to-[0,1) scaling: log2(K) bits per dimension,
    # whatever the noise draw. Dropping the -D log K term would report 0 bits instead of 8.
    x = _levels(256, (32, 3, 4, 4))
    flow = Flow(FlowSequential(LogitTransform(alpha=0.0)), StandardLogistic((3, 4, 4)))
    bpd = bits_per_dim(flow, x, preprocess=UniformDequantization(256))
    torch.testing.assert_close(bpd, torch.tensor(8.0))
    v, _ = UniformDequantization(256)(x)
    assert abs(bits_per_dim(flow, v).item()) < 1e-4  # the "+8 bits" pitfall


def test_bits_per_dim_hand_computed():
    # D = 2 dimensions, K = 2 levels, a standard normal density on the dequantised values:
    # bpd = -(mean_b [log N(v_b)] - D log K) / (D log 2) with the same noise draw u.
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    flow = Flow(FlowSequential(), StandardNormal(2))
    torch.manual_seed(3)
    bpd = bits_per_dim(flow, x, preprocess=UniformDequantization(2))
    torch.manual_seed(3)
    v = (x + torch.rand_like(x)) / 2
    log_p = (-0.5 * v**2 - 0.5 * math.log(2 * math.pi)).sum(1) - 2 * math.log(2)
    expected = -log_p.mean() / (2 * math.log(2))
    torch.testing.assert_close(bpd, expected)


def test_bits_per_dim_same_with_logit_inside_or_outside_the_flow():
    x = _levels(17, (16, 1, 4, 4))
    scale = jitter_parameters(DiagonalScaling(1), scale=0.3)
    base = StandardNormal((1, 4, 4))
    deq, logit = UniformDequantization(17), LogitTransform(0.05)
    layouts = [
        (Flow(FlowSequential(deq, logit, scale), base), None),
        (Flow(FlowSequential(logit, scale), base), deq),
        (Flow(FlowSequential(scale), base), FlowSequential(deq, logit)),
    ]
    results = []
    for flow, pre in layouts:
        torch.manual_seed(11)
        results.append(bits_per_dim(flow, x, preprocess=pre))
    torch.testing.assert_close(results[1], results[0])
    torch.testing.assert_close(results[2], results[0])
    # and the logit's own log-det matters: leaving it out changes the answer
    torch.manual_seed(11)
    v, ld = deq(x)
    y, _ = logit(v)
    without = -(Flow(FlowSequential(scale), base).log_prob(y) + ld).mean() / (16 * math.log(2))
    assert abs(without - results[0]).item() > 0.1
