import math

import pytest
import torch

from flowlearn import (
    DiagonalScaling,
    Flow,
    FlowSequential,
    StandardNormal,
    UniformDequantization,
)
from flowlearn.density.datasets import two_moons
from flowlearn.density.models import RealNVP
from flowlearn.density.training import evaluate_bits_per_dim, evaluate_nll, fit

BOX = ((-4.0, 5.0), (-4.0, 4.5))


pytestmark = pytest.mark.usefixtures("one_thread")


def _scaling_flow() -> Flow:
    return Flow(FlowSequential(DiagonalScaling(2)), StandardNormal(2))


@pytest.fixture(scope="module")
def trained_moons() -> Flow:
    """A small RealNVP trained briefly on two moons (shared by the density tests)."""
    torch.manual_seed(0)
    flow = Flow(RealNVP(2, couplings=4, hidden=32, depth=2), StandardNormal(2))
    fit(flow, two_moons(4000, seed=0), steps=300, batch_size=256, lr=3e-3, progress=False)
    return flow.eval()


def _grid_log_density(flow: Flow, n: int = 300) -> tuple[torch.Tensor, float]:
    xs, ys = torch.linspace(*BOX[0], n), torch.linspace(*BOX[1], n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        log_p = flow.log_prob(torch.stack([gx.ravel(), gy.ravel()], 1)).double()
    area = ((xs[1] - xs[0]) * (ys[1] - ys[0])).item()
    return log_p, area


def test_fit_trained_density_integrates_to_one(trained_moons):
    log_p, area = _grid_log_density(trained_moons)
    mass = (log_p.exp() * area).sum().item()
    assert abs(mass - 1) < 0.01
    # and it has learned something: far better than the untrained standard normal
    assert evaluate_nll(trained_moons, two_moons(2000, seed=1)) < 1.6


def test_fit_sample_and_log_prob_agree(trained_moons):
    # the model's entropy two ways: -E_{x ~ model}[log p(x)] by Monte Carlo through `sample`,
    # and -∫ p log p on a grid through `log_prob` alone
    with torch.no_grad():
        x = trained_moons.sample(20000, generator=torch.Generator().manual_seed(0))
        log_p_samples = trained_moons.log_prob(x).double()
    mc = -log_p_samples.mean().item()
    stderr = log_p_samples.std().item() / math.sqrt(len(x))
    log_p, area = _grid_log_density(trained_moons)
    grid = -(log_p.exp() * log_p * area).sum().item()
    assert abs(mc - grid) < 4 * stderr + 0.01
    # histogram test: the sample frequency of each cell matches the integrated density
    n = 300
    cells = 10
    p_grid = (log_p.exp() * area).reshape(n, n)  # rows follow y
    p_cells = p_grid.reshape(cells, n // cells, cells, n // cells).sum((1, 3))
    ix = ((x[:, 0] - BOX[0][0]) / (BOX[0][1] - BOX[0][0]) * cells).long().clamp(0, cells - 1)
    iy = ((x[:, 1] - BOX[1][0]) / (BOX[1][1] - BOX[1][0]) * cells).long().clamp(0, cells - 1)
    freq = torch.bincount(iy * cells + ix, minlength=cells * cells).double() / len(x)
    assert (freq - p_cells.reshape(-1)).abs().max().item() < 0.01


def test_fit_reduces_loss_and_records_history():
    flow = _scaling_flow()
    data = torch.randn(1024, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [3.0, 0.2]
    )
    history = fit(flow, data, steps=300, batch_size=128, lr=0.05, progress=False)
    assert len(history.loss) == len(history.lr) == 300
    assert history.seconds > 0
    # the scaling learns the inverse standard deviations
    torch.testing.assert_close(
        flow.transform[0].s.exp(), torch.tensor([1 / 3, 5.0]), rtol=0.1, atol=0
    )
    assert len(history.smoothed(50)) == 300


def test_fit_is_reproducible_and_leaves_global_rng_alone():
    data = torch.randint(0, 4, (256, 2)).float()

    def run(seed: int) -> list[float]:
        flow = Flow(FlowSequential(UniformDequantization(4), DiagonalScaling(2)), StandardNormal(2))
        return fit(flow, data, steps=20, batch_size=32, lr=0.01, seed=seed, progress=False).loss

    torch.manual_seed(123)
    a = run(0)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # fit restored the global random state
    assert run(0) == a
    assert run(1) != a


def test_fit_nan_loss_stops_naming_the_step():
    flow = _scaling_flow()
    data = torch.randn(64, 2)

    def blow_up(step: int) -> float:
        return math.inf if step == 2 else 1.0

    with pytest.raises(FloatingPointError, match=r"at step 3 \(of 10\)"):
        fit(
            flow,
            data,
            steps=10,
            batch_size=64,
            lr=0.1,
            optimizer="sgd",
            lr_schedule=blow_up,
            progress=False,
        )


def test_fit_nan_in_data_stops_at_step_zero():
    data = torch.randn(64, 2)
    data[5, 1] = math.nan
    with pytest.raises(FloatingPointError, match="at step 0"):
        fit(_scaling_flow(), data, steps=5, batch_size=64, lr=0.1, progress=False)


def test_fit_cosine_schedule_grad_clip_and_custom_optimizer():
    flow = _scaling_flow()
    data = torch.randn(256, 2)
    history = fit(
        flow,
        data,
        steps=50,
        batch_size=64,
        lr=0.1,
        lr_schedule="cosine",
        grad_clip=1.0,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        progress=True,
    )
    assert history.lr[0] == pytest.approx(0.1)
    assert history.lr[-1] < 0.001
    assert all(a >= b for a, b in zip(history.lr, history.lr[1:]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "must be positive"),
        ({"batch_size": 1000}, "larger than the data set"),
        ({"optimizer": "lbfgs"}, "optimizer must be"),
        ({"lr_schedule": "linear"}, "lr_schedule must be"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, message):
    args = {"steps": 5, "batch_size": 16, "lr": 0.1, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit(_scaling_flow(), torch.randn(64, 2), **args)


def test_evaluate_nll_and_bits_per_dim_match_the_flow():
    flow = _scaling_flow().train()
    with torch.no_grad():
        flow.transform[0].s.fill_(0.5)
    data = torch.randn(300, 2)
    expected = -flow.log_prob(data).mean().item()
    assert evaluate_nll(flow, data, batch_size=64) == pytest.approx(expected, rel=1e-6)
    assert evaluate_bits_per_dim(flow, data) == pytest.approx(
        expected / (2 * math.log(2)), rel=1e-6
    )
    assert flow.training  # mode restored


def test_evaluate_nll_seeds_the_dequantisation_noise():
    flow = Flow(FlowSequential(UniformDequantization(17), DiagonalScaling(4)), StandardNormal(4))
    data = torch.randint(0, 17, (50, 4)).float()
    assert evaluate_nll(flow, data, seed=0) == evaluate_nll(flow, data, seed=0)
    assert evaluate_nll(flow, data, seed=0) != evaluate_nll(flow, data, seed=1)
