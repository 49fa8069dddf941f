from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowlearn import FlowSequential, Reverse
from flowlearn.checks import assert_bijector
from flowlearn.layers.squeeze import Squeeze


def test_squeeze_golden_arange16() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # x = [[ 0,  1,  2,  3],
    #      [ 4,  5,  6,  7],
    #      [ 8,  9, 10, 11],
    #      [12, 13, 14, 15]]; channel 2i + j holds pixel (2h + i, 2w + j)
    expected = torch.tensor(
        [
            [
                [[0.0, 2.0], [8.0, 10.0]],  # i = 0, j = 0: top-left of each 2x2 block
                [[1.0, 3.0], [9.0, 11.0]],  # i = 0, j = 1: top-right
                [[4.0, 6.0], [12.0, 14.0]],  # i = 1, j = 0: bottom-left
                [[5.0, 7.0], [13.0, 15.0]],  # i = 1, j = 1: bottom-right
            ]
        ]
    )
    y, logdet = Squeeze()(x)
    assert torch.equal(y, expected)
    assert torch.equal(logdet, torch.zeros(1))
    assert torch.equal(Squeeze().inverse(expected)[0], x)


def test_squeeze_golden_two_channels() -> None:
    x = torch.arange(8.0).reshape(1, 2, 2, 2)  # channel 0: [[0, 1], [2, 3]], 1: [[4, 5], [6, 7]]
    y, _ = Squeeze()(x)
    assert y.shape == (1, 8, 1, 1)
    # channel-major: 4c + 2i + j
    assert y.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    x = torch.stack((torch.zeros(4, 4), torch.arange(16.0).reshape(4, 4))).unsqueeze(0)
    y, _ = Squeeze()(x)
    assert torch.equal(y[0, :4], torch.zeros(4, 2, 2))
    assert y[0, 4:, 0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # block at rows 0-1, cols 2-3


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 2, 6, 2), (3, 1, 2, 2)])
def test_squeeze_matches_pixel_unshuffle(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    y, _ = Squeeze()(x)
    assert torch.equal(y, F.pixel_unshuffle(x, 2))
    assert torch.equal(Squeeze().inverse(y)[0], F.pixel_shuffle(y, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 1, 2, 2), (2, 5, 2, 4)])
def test_squeeze_bijector(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    report = assert_bijector(Squeeze(), x)
    assert report.output_shape == (shape[0], 4 * shape[1], shape[2] // 2, shape[3] // 2)
    assert report.roundtrip_error == 0.0 and report.logdet == [0.0] * shape[0]


def test_squeeze_in_flow_sequential() -> None:
    flow = FlowSequential(Squeeze(), Reverse(), Squeeze())
    x = torch.randn(2, 3, 8, 4)
    y, logdet = flow(x)
    assert y.shape == (2, 48, 2, 1) and logdet.tolist() == [0.0, 0.0]
    assert torch.equal(flow.inverse(y)[0], x)


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (2, 3, 4, 5), (1, 1, 33, 33)])
def test_squeeze_odd_size_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"Squeeze: expected height and width divisible by 2"):
        Squeeze()(torch.randn(*shape))


def test_squeeze_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"Squeeze: expected input of shape \(B, C, H, W\)"):
        Squeeze()(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"Squeeze: expected a channel count divisible by 4"):
        Squeeze().inverse(torch.randn(1, 6, 2, 2))
    with pytest.raises(ValueError, match=r"Squeeze: expected input of shape"):
        Squeeze().inverse(torch.randn(1, 8, 2))
