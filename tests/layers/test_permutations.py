from __future__ import annotations

import pytest
import torch

from flowlearn.checks import assert_bijector
from flowlearn.layers.permutations import Reverse, Shuffle

DTYPES = (torch.float32, torch.float64)
SHAPES = [(2, 5), (1, 1), (2, 3, 4, 6), (1, 4, 1, 3)]


def sample(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_reverse_bijector(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    report = assert_bijector(Reverse(), sample(shape, dtype))
    assert report.logdet == [0.0] * shape[0]
    assert report.roundtrip_error == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_shuffle_bijector(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    report = assert_bijector(Shuffle(shape[1], seed=3), sample(shape, dtype))
    assert report.logdet == [0.0] * shape[0]
    assert report.roundtrip_error == 0.0


def test_reverse_values() -> None:
    x = torch.arange(24.0).reshape(2, 3, 2, 2)
    y, _ = Reverse()(x)
    assert torch.equal(y[:, 0], x[:, 2]) and torch.equal(y[:, 2], x[:, 0])
    assert Reverse()(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))[0].tolist() == [[4.0, 3.0, 2.0, 1.0]]


def test_shuffle_is_a_fixed_seeded_permutation() -> None:
    a, b, c = Shuffle(10, seed=0), Shuffle(10, seed=0), Shuffle(10, seed=1)
    assert torch.equal(a.perm, b.perm)
    assert not torch.equal(a.perm, c.perm)
    assert sorted(a.perm.tolist()) == list(range(10))
    assert torch.equal(a.perm[a.inv_perm], torch.arange(10))
    x = torch.arange(10.0).reshape(1, 10)
    assert torch.equal(a(x)[0], a.perm.to(x.dtype).reshape(1, 10))  # y_c = x_perm(c)


def test_shuffle_leaves_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Shuffle(7, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_shuffle_buffers_in_state_dict() -> None:
    layer = Shuffle(6, seed=2)
    assert set(layer.state_dict()) == {"perm", "inv_perm"}
    assert list(layer.parameters()) == []
    other = Shuffle(6, seed=9)
    other.load_state_dict(layer.state_dict())
    x = torch.randn(2, 6)
    assert torch.equal(other(x)[0], layer(x)[0])


def test_permutations_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"Shuffle: expected 4 channels.*\(2, 5\)"):
        Shuffle(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"Shuffle: expected 4 channels"):
        Shuffle(4).inverse(torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"Reverse: expected input of shape.*\(2, 3, 4\)"):
        Reverse()(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"Shuffle: channels must be positive"):
        Shuffle(0)
