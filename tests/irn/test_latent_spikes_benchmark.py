"""The latent-spike benchmark (`benchmarks/irn_latent_spikes.py`): its measures, the card's text."""

from __future__ import annotations

import json

import pytest
import torch

from flowlearn import IRN
from tests.conftest import ROOT, benchmark_script


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports its neighbours
    return benchmark_script("irn_latent_spikes")


def test_latent_energy_is_the_squared_latent_per_lr_pixel(bench) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = IRN(2, blocks=[1], growth=4)
    for p in net.parameters():  # conv5 starts at zero; give the couplings something to do
        torch.nn.init.normal_(p, std=0.05)
    hr = torch.rand(3, 8, 6)
    lr, energy = bench.latent_energy(net, hr)
    with torch.no_grad():
        y = net(hr[None])[0][0]
    torch.testing.assert_close(lr, y[:3])
    assert energy.shape == (4, 3)
    torch.testing.assert_close(energy, y[3:].pow(2).sum(0))


def test_where_and_top_share_find_a_hot_spot(bench) -> None:  # type: ignore[no-untyped-def]
    energy = torch.full((20, 10), 0.01)
    energy[13, 7] = 6.0
    assert bench._where(energy) == (13, 7)
    assert bench._top_share(energy) == pytest.approx((6.0 + 0.01) / (6.0 + 199 * 0.01))
    assert bench._top_share(torch.ones(20, 10)) == pytest.approx(0.01)  # 2 of 200 pixels


def test_model_card_states_the_stored_spikes() -> None:
    """The card's table of spiking patches and its numbers for baby.png are the stored run's."""
    data = json.loads((ROOT / "benchmarks/results/irn_latent_spikes_cpu.json").read_text())
    card = (ROOT / "docs" / "model-card.md").read_text()
    section = card[card.index("### What the noisy spot is") :].split("\n## ")[0]
    text = " ".join(section.split())
    rows = [line for line in section.splitlines() if line.startswith("| ") and "jpg" in line]
    # the patches whose own noise draw gives 100x the latent energy of every fresh draw
    spikes = [
        s for s in data["batches"]["spikes"] if s["z2"] > 100 * max(s["z2_fresh_noise_same_level"])
    ]
    assert len(rows) == len(spikes) == 3 and "Three patches stand out" in text
    side = data["meta"]["patch"] // 4 - 1  # the last LR row and column
    for row, s in zip(rows, spikes, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:2] == [str(s["batch"]), s["image"]]
        assert cells[3] == f"{s['z2']:,.0f}" and cells[4] == f"{s['z2_without_noise']:.2f}"
        fresh = s["z2_fresh_noise_same_level"]
        assert cells[5] == f"{min(fresh):.2f}–{max(fresh):.2f}"
        assert cells[6] == f"{100 * s['z2_share_top_1pc_pixels']:.0f} %"
        assert cells[7] == f"{s['lr_error_max_near_z2_max_levels']:.0f}"
        assert min(*s["z2_max_at"], *(side - v for v in s["z2_max_at"])) <= 5  # near the border
    assert data["meta"]["batches"] == [250, 300] and "the 50 batches" in text
    baby = next(r for r in data["noisy_test_images"] if r["image"] == "baby.png")
    assert f"{baby['lr_error_max_levels']:.0f} levels off and {baby['distance']} pixels" in text
    assert f"hold {100 * baby['z2_share_within_2px_of_lr_error_max']:.0f} % of the latent" in text
    for other in data["noisy_test_images"]:
        if other is not baby:  # no more latent energy near its worst pixel than its share
            share = other["z2_share_within_2px_of_lr_error_max"]
            assert share <= other["share_of_lr_pixels_within_2px"], other["image"]
