"""The checker must pass correct layers and catch each kind of broken one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from flowlearn.checks import assert_bijector, brute_force_logdet, check_bijector
from flowlearn.core import Bijector
from tests.core.broken import BatchMean, WrongSign


class Affine(Bijector):
    """y = a ⊙ x + b with a learnable log-scale: a correct layer with a non-zero log-det."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_a = nn.Parameter(torch.linspace(-0.5, 0.7, dim))
        self.b = nn.Parameter(torch.linspace(0.1, 0.3, dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x * self.log_a.exp() + self.b
        return y, self.log_a.sum().to(x.dtype).expand(x.shape[0]).clone()

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = (y - self.b) * (-self.log_a).exp()
        return x, -self.log_a.sum().to(y.dtype).expand(y.shape[0]).clone()


class Cube(Bijector):
    """y = x³ + x: non-linear, log-det depends on the sample."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x**3 + x, torch.log(3 * x**2 + 1).sum(dim=1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y.clone()
        for _ in range(60):  # Newton's method; x³ + x is strictly increasing
            x = x - (x**3 + x - y) / (3 * x**2 + 1)
        return x, -torch.log(3 * x**2 + 1).sum(dim=1)


class NotInvertible(Bijector):
    """Drops the last coordinate; 'inverse' just returns what it is given."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = torch.cat([x[:, :-1], torch.zeros_like(x[:, -1:])], dim=1)
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[0])


class Mutating(Bijector):
    """Correct maths, but halves its input in place (as FrEIA's Haar inverse did)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x.mul_(2.0)
        return x.clone(), x.new_full((x.shape[0],), x[0].numel() * math.log(2.0))

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y / 2, y.new_full((y.shape[0],), -y[0].numel() * math.log(2.0))


class MixesSamples(Bijector):
    """Adds the batch mean of the other samples: invertible for the batch, not per sample."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x + 0.5 * x.roll(1, dims=0), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        # Solve (I + 0.5 R) x = y by the Neumann series; exact enough for a 2-sample batch.
        x = y.clone()
        for _ in range(80):
            x = y - 0.5 * x.roll(1, dims=0)
        return x, y.new_zeros(y.shape[0])


class WrongShape(Cube):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super().forward(x)
        return y, logdet.sum()


def _x(dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layer", [Affine(5), Cube()], ids=["affine", "cube"])
def test_check_bijector_passes_correct_layers(layer: Bijector, dtype: torch.dtype) -> None:
    report = assert_bijector(layer.to(dtype), _x(dtype))
    assert report.ok
    assert report.logdet_error is not None and report.logdet_error < report.tol_logdet
    assert report.cross_sample_error == 0.0


def test_brute_force_logdet_matches_closed_form() -> None:
    x = _x()
    logdet, cross = brute_force_logdet(Cube(), x)
    torch.testing.assert_close(logdet, torch.log(3 * x**2 + 1).sum(dim=1), rtol=0, atol=1e-12)
    assert float(cross) == 0.0


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (WrongSign(Cube()), "brute-force Jacobian"),
        (BatchMean(Cube()), "brute-force Jacobian"),
        (NotInvertible(), "round trip"),
        (Mutating(), "wrote into its input"),
        (MixesSamples(), "other samples"),
        (WrongShape(), "one value per sample"),
    ],
    ids=["wrong-sign", "batch-mean", "not-invertible", "mutates-input", "mixes-samples", "shape"],
)
def test_check_bijector_catches_broken_layers(layer: Bijector, message: str) -> None:
    report = check_bijector(layer, _x())
    assert not report.ok
    assert any(message in failure for failure in report.failures), report.failures
    with pytest.raises(AssertionError, match=type(layer).__name__):
        assert_bijector(layer, _x())


def test_check_report_str_names_each_property() -> None:
    text = str(check_bijector(WrongSign(Cube()), _x()))
    assert "FAIL" in text
    for key in ("round trip", "brute force", "between samples", "input modified"):
        assert key in text
