"""Every coupling round-trips under both masks, both parities, vectors and images."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlearn.core import Bijector
from flowlearn.layers.nice import AdditiveCoupling
from flowlearn.layers.realnvp import AffineCoupling
from tests.layers.conftest import make_coupling, sample


@pytest.mark.parametrize(
    ("cls", "preserves_volume"), [(AdditiveCoupling, True), (AffineCoupling, False)]
)
@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(2, 5),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    image=st.booleans(),
    mask=st.sampled_from(["channel", "checkerboard"]),
    parity=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_coupling_roundtrip_property(
    cls: type[Bijector],
    preserves_volume: bool,
    batch: int,
    channels: int,
    h: int,
    w: int,
    image: bool,
    mask: str,
    parity: int,
    seed: int,
) -> None:
    image = image or mask == "checkerboard"
    layer = make_coupling(cls, channels, mask, parity, image, torch.float64, seed=seed)
    shape = (batch, channels, h, w) if image else (batch, channels)
    x = 3 * sample(shape, torch.float64, seed=seed)
    with torch.no_grad():
        y, ld = layer(x)
        x_rec, ld_inv = layer.inverse(y)
    assert (x_rec - x).abs().max() <= 1e-10
    assert (ld + ld_inv).abs().max() <= 1e-10
    if preserves_volume:
        zeros = torch.zeros(batch, dtype=torch.float64)
        assert torch.equal(ld, zeros) and torch.equal(ld_inv, zeros)
