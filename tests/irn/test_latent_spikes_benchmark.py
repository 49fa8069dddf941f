"""The latent-spike benchmark (`benchmarks/irn_latent_spikes.py`): its measures, the card's text."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_with_context_changes_only_the_pixels_near_the_border(bench) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = IRN(2, blocks=[1], growth=4).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    hr = torch.rand(3, 96, 80, dtype=torch.float64)
    lr, energy = bench.latent_energy(net, hr)
    context_lr, context_energy = bench.with_context(net, hr)
    assert context_lr.shape == lr.shape and context_energy.shape == energy.shape == (48, 40)
    # one coupling of three 5-convolution blocks sees 15 LR pixels each way: the middle is
    # the same map with or without the mirrored context, and aligned pixel for pixel
    torch.testing.assert_close(context_energy[16:-16, 16:-16], energy[16:-16, 16:-16])
    torch.testing.assert_close(context_lr[:, 16:-16, 16:-16], lr[:, 16:-16, 16:-16])
    assert not torch.allclose(context_energy[0], energy[0])  # the border does change


def test_in_photo_puts_the_patch_back_where_it_was_cut(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from flowlearn.images.io import write_image
    from flowlearn.irn.data import FLIPS, IRNTrainSet

    write_image(
        tmp_path / "noise.png", torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0))
    )
    data = IRNTrainSet(tmp_path, scale=2, patch_size=12)
    net = IRN(2, blocks=[1], growth=4)
    seen: list[torch.Tensor] = []

    def capture(model: IRN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(x)
        return x[:, ::2, ::2], x[0, ::2, ::2]

    monkeypatch.setattr(bench, "latent_energy", capture)
    photo = data.image(0)
    for seed in range(24):
        item = (0, seed)
        patch = data[item][0]
        lr, energy, context = bench.in_photo(net, data, item, patch, sigma=0.0, lr_pixels=3)
        x = seen[-1]
        assert torch.equal(lr, patch[:, ::2, ::2])  # cropped back to the patch
        assert torch.equal(energy, patch[0, ::2, ::2])
        top, bottom, left, right = context
        assert x.shape[-2:] == (12 + 2 * (top + bottom), 12 + 2 * (left + right))
        assert all(0 <= c <= 3 for c in context) and sum(context) > 0
        flipped = photo
        for flag, op in zip(data.placement(item)[2], FLIPS, strict=True):
            if flag:
                flipped = op(flipped)
        # without noise, the widened crop with the patch pasted in is one piece of the photo
        h, w = x.shape[-2:]
        assert any(
            torch.equal(flipped[:, u : u + h, v : v + w], x)
            for u in range(flipped.shape[-2] - h + 1)
            for v in range(flipped.shape[-1] - w + 1)
        ), item


def test_where_and_top_share_find_a_hot_spot(bench) -> None:  # type: ignore[no-untyped-def]
    energy = torch.full((20, 10), 0.01)
    energy[13, 7] = 6.0
    assert bench._where(energy) == (13, 7)
    assert bench._top_share(energy) == pytest.approx((6.0 + 0.01) / (6.0 + 199 * 0.01))
    assert bench._top_share(torch.ones(20, 10)) == pytest.approx(0.01)  # 2 of 200 pixels


def test_model_card_states_the_stored_spikes() -> None:
    """The card's table of spiking patches and its numbers for baby.png are the stored runs'."""
    results = ROOT / "benchmarks/results"
    data = json.loads((results / "irn_latent_spikes_cpu.json").read_text())
    later = json.loads((results / "irn_latent_spikes_300_cpu.json").read_text())
    card = (ROOT / "docs" / "model-card.md").read_text()
    section = card[card.index("### What the noisy spot is") :].split("\n## ")[0]
    text = " ".join(section.split())
    rows = [line for line in section.splitlines() if line.startswith("| ") and "jpg" in line]

    def alone(s: dict) -> bool:  # type: ignore[type-arg]
        # the patch's own noise draw gives 100x the latent energy of every fresh draw
        return s["z2"] > 100 * max(s["z2_fresh_noise_same_level"])

    spikes = [s for s in data["batches"]["spikes"] if alone(s)]
    more = [s for s in later["batches"]["spikes"] if alone(s)]
    assert len(spikes) == 3 and len(more) == 1 and len(rows) == 4
    assert "Three patches stand out" in text and "finds one more, the last row" in text
    side = data["meta"]["patch"] // 4 - 1  # the last LR row and column
    for row, s in zip(rows, spikes + more, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:3] == [str(s["batch"]), s["image"], f"{s['noise_sigma_levels']:.1f}"]
        assert cells[3] == f"{s['z2']:,.0f}" and cells[4] == f"{s['z2_without_noise']:.2f}"
        fresh = s["z2_fresh_noise_same_level"]
        assert cells[5] == f"{min(fresh):.2f}–{max(fresh):.2f}"
        assert cells[6] == f"{100 * s['z2_share_top_1pc_pixels']:.0f} %"
        assert cells[7] == f"{s['lr_error_max_near_z2_max_levels']:.0f}"
        assert cells[8] == f"{s['lr_error_max_without_noise_levels']:.0f}"
        assert cells[9] == f"{s['z2_in_photo']:.2f}"
        assert cells[10] == f"{s['lr_error_max_in_photo_levels']:.0f}"
        assert min(*s["z2_max_at"], *(side - v for v in s["z2_max_at"])) <= 5  # near the border
        # inside its photo: no more energy than a fresh draw, the LR as good as without noise
        assert s["z2_in_photo"] < min(fresh) + 1
        assert s["lr_error_max_in_photo_levels"] < s["lr_error_max_without_noise_levels"] + 5
    assert data["meta"]["batches"] == [250, 300] and "the 50 batches" in text
    assert later["meta"]["batches"] == [300, 400] and "over the 100 batches" in text
    # the two that do not fit
    odd = {s["batch"]: s for s in data["batches"]["spikes"] + later["batches"]["spikes"]}
    assert sorted(odd) == [250, 256, 289, 293, 308, 363]
    quiet, worse = odd[308], odd[250]
    assert not alone(quiet) and not alone(worse)
    assert (
        f"370036.jpg with almost no noise has $\\|z\\|^2$ of {quiet['z2']:.0f} "
        f"({quiet['z2_without_noise']:.0f} without the noise)" in text
    )
    assert f"{quiet['lr_error_max_levels']:.0f} levels off" in text
    assert f"this patch too drops to {quiet['z2_in_photo']:.2f}" in text
    assert f"{worse['z2']:.0f} on its own, {worse['z2_in_photo']:.0f} inside its photo" in text
    baby = next(r for r in data["noisy_test_images"] if r["image"] == "baby.png")
    i, j = baby["lr_error_max_at"]
    edge = min(i, j, baby["lr_size"][0] - 1 - i, baby["lr_size"][1] - 1 - j)
    assert f"{baby['lr_error_max_levels']:.0f} levels off, {edge} pixels from" in text
    assert f"and {baby['distance']} pixels from the LR pixel with the most" in text
    assert f"hold {100 * baby['z2_share_within_2px_of_lr_error_max']:.0f} % of the latent" in text
    assert f"that pixel is {baby['lr_error_with_context_levels']:.0f} levels off" in text
    assert baby["lr_error_with_context_levels"] == baby["lr_error_max_with_context_levels"]
    for other in data["noisy_test_images"]:
        if other is not baby:  # no more latent energy near its worst pixel than its share
            share = other["z2_share_within_2px_of_lr_error_max"]
            assert share <= other["share_of_lr_pixels_within_2px"], other["image"]


def test_model_card_states_stage_11s_spikes() -> None:
    """Stage 11's paragraph: baby.png's worst LR pixel and batch 256's patch under each model."""
    results = ROOT / "benchmarks/results"
    before = json.loads((results / "irn_latent_spikes_cpu.json").read_text())
    after = json.loads((results / "irn_latent_spikes_stage11_cpu.json").read_text())
    assert after["meta"]["model"].endswith("x4_p144j_step600.safetensors")
    assert after["meta"]["batches"] == before["meta"]["batches"] == [250, 300]
    card = (ROOT / "docs" / "model-card.md").read_text()
    text = " ".join(card[card.index("**Stage 11: noise on every patch") :].split("\n\n")[2].split())
    babies = [
        next(r for r in data["noisy_test_images"] if r["image"] == "baby.png")
        for data in (before, after)
    ]
    assert (
        f"whose worst LR pixel is {babies[1]['lr_error_max_levels']:.0f} levels off against "
        f"{babies[0]['lr_error_max_levels']:.0f}" in text
    )
    worst = {r["image"]: r["lr_error_max_levels"] for r in after["noisy_test_images"]}
    assert max(worst, key=worst.__getitem__) != "baby.png"
    spikes = [{s["batch"]: s for s in d["batches"]["spikes"]}[256] for d in (before, after)]
    assert spikes[0]["image"] == spikes[1]["image"] == "227040.jpg"
    assert (
        f"batch 256 has $\\|z\\|^2$ of {spikes[1]['z2']:,.0f} under this model "
        f"(stage 8's: {spikes[0]['z2']:,.0f})" in text
    )
