from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from flowlearn.images.io import read_image, write_image
from flowlearn.images.metrics import modcrop, psnr
from flowlearn.irn import tiling
from flowlearn.irn.evaluate import evaluate_pair
from flowlearn.irn.model import IRN
from flowlearn.irn.tiling import (
    MARGINS,
    check_pixels,
    downscale_tiled,
    map_tiles,
    plan_tiles,
    upscale_tiled,
)
from tests.conftest import ROOT, benchmark_script, shared_path, tiny_irn

pytestmark = pytest.mark.usefixtures("one_thread")

RESULTS = ROOT / "benchmarks" / "results" / "irn_tiling_cpu.json"


def _haar_only(scale: int) -> IRN:
    # Haar levels only: every output pixel depends on one s x s block, so tiles need no margin
    # and the tiled results must equal the whole-image ones exactly.
    return IRN(scale, blocks=[0] * (scale.bit_length() - 1)).eval()


@pytest.fixture(scope="module")
def pretrained() -> dict[int, IRN]:
    from flowlearn.irn.checkpoint import load

    return {s: load(f"x{s}").eval() for s in (2, 4)}


# ----------------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("h", "w", "tile", "margin"), [(37, 23, 10, 3), (5, 5, 2, 0), (64, 40, 64, 8), (9, 30, 7, 20)]
)
def test_plan_tiles_cover_the_grid_once(h: int, w: int, tile: int, margin: int) -> None:
    plan = plan_tiles(h, w, 2, tile=tile, margin=margin)
    covered = torch.zeros(h, w, dtype=torch.int64)
    sides = set()
    for t in plan.tiles:
        covered[t.top : t.bottom, t.left : t.right] += 1
        sides |= {t.bottom - t.top, t.right - t.left}
        assert (t.region_top, t.region_left) == (max(t.top - margin, 0), max(t.left - margin, 0))
        assert (t.region_bottom, t.region_right) == (
            min(t.bottom + margin, h),
            min(t.right + margin, w),
        )
    assert bool((covered == 1).all())
    assert max(sides) <= tile
    assert len(plan) == math.ceil(h / tile) * math.ceil(w / tile)
    # as equal as possible along each axis: sizes differ by at most one
    rows = {t.bottom - t.top for t in plan.tiles}
    cols = {t.right - t.left for t in plan.tiles}
    assert max(rows) - min(rows) <= 1 and max(cols) - min(cols) <= 1


def test_plan_tiles_tile_larger_than_image_is_one_tile() -> None:
    plan = plan_tiles(30, 50, 4, tile=1000, margin=16)
    assert len(plan) == 1
    assert plan.tiles[0] == tiling.Tile(0, 0, 30, 50, 0, 0, 30, 50)


def test_plan_tiles_memory_budget_picks_the_tile() -> None:
    small = plan_tiles(1000, 1500, 4, memory_mb=600, margin=20)
    large = plan_tiles(1000, 1500, 4, memory_mb=1500, margin=20)
    assert small.tile < large.tile and len(small) > len(large)
    for plan, budget in ((small, 600), (large, 1500)):
        region = ((plan.tile + 2 * plan.margin) * 4) ** 2
        needed = tiling.WORKSPACE_MB * 2**20 + tiling.BYTES_PER_PIXEL * region
        assert needed <= budget * 2**20
    # what the caller reserves is taken off the budget
    reserved = plan_tiles(1000, 1500, 4, memory_mb=1500, margin=20, reserved_bytes=900 * 2**20)
    assert reserved.tile < large.tile
    # a float64 batch of two needs four times the memory per pixel
    wide = plan_tiles(1000, 1500, 4, memory_mb=1500, margin=20, batch=2, itemsize=8)
    assert wide.tile < large.tile


def test_plan_tiles_memory_too_small_says_what_is_enough() -> None:
    with pytest.raises(ValueError, match=r"memory_mb=50 is too small .* memory_mb >= \d+"):
        plan_tiles(1000, 1500, 4, memory_mb=50, margin=20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 0}, "tile must be"),
        ({"margin": -1}, "margin must be"),
        ({"memory_mb": -5}, "memory_mb must be"),
    ],
)
def test_plan_tiles_bad_arguments_raise(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_tiles(10, 10, 2, **kwargs)


def test_map_tiles_wrong_output_size_raises() -> None:
    plan = plan_tiles(4, 4, 2, tile=2, margin=1)
    with pytest.raises(ValueError, match="map_tiles: fn returned"):
        map_tiles(lambda t: t, [torch.zeros(1, 3, 8, 8)], plan, factor_in=2, factor_out=1)


# ------------------------------------------------------------------------------ pixel limit


def test_check_pixels_refuses_with_the_limit_named() -> None:
    check_pixels(4000, 6000)
    with pytest.raises(ValueError, match=r"12000x12000 .* max_pixels=100000000 .*--max-pixels"):
        check_pixels(12000, 12000)
    check_pixels(12000, 12000, None)
    with pytest.raises(ValueError, match="max_pixels must be"):
        check_pixels(10, 10, 0)


def test_downscale_tiled_refuses_before_allocating() -> None:
    # a 144-megapixel image that takes no memory: a broadcast view of one value
    huge = torch.zeros(1, 1, 1, 1).expand(1, 3, 12000, 12000)
    with pytest.raises(ValueError, match=r"max_pixels=100000000"):
        downscale_tiled(_haar_only(2), huge)
    lr = torch.zeros(1, 1, 1, 1).expand(1, 3, 3000, 3000)  # x4: 144 megapixels of HR
    with pytest.raises(ValueError, match=r"max_pixels=100000000"):
        upscale_tiled(_haar_only(4), lr)
    with pytest.raises(ValueError, match=r"max_pixels=1000 "):
        downscale_tiled(_haar_only(2), torch.rand(1, 3, 40, 40), max_pixels=1000)


# ------------------------------------------------------------------ tiled equals whole image


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_haar_only_equals_whole_image_exactly(scale: int) -> None:
    # odd tile boundaries: a 37 x 23 LR grid cut into tiles of at most 10, no margin
    net = _haar_only(scale)
    hr = torch.rand(1, 3, 37 * scale, 23 * scale, generator=torch.Generator().manual_seed(0))
    lr = downscale_tiled(net, hr, tile=10, margin=0)
    assert torch.equal(lr, net.downscale(hr))
    sr = upscale_tiled(net, lr, tile=10, margin=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sr, net.upscale(lr, generator=torch.Generator().manual_seed(1)))


def test_upscale_tiled_same_seed_same_z() -> None:
    # the Haar inverse is linear in z, so equal results mean equal latents; the generator is
    # left in the same state too
    net = _haar_only(4)
    lr = torch.rand(2, 3, 19, 26)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    tiled = upscale_tiled(net, lr, generator=g1, tile=6, margin=0, temperature=0.8)
    whole = net.upscale(lr, generator=g2, temperature=0.8)
    assert torch.equal(tiled, whole)
    assert torch.equal(g1.get_state(), g2.get_state())
    # and another seed gives another result
    other = upscale_tiled(net, lr, generator=torch.Generator().manual_seed(8), tile=6, margin=0)
    assert not torch.allclose(other, whole)


def test_upscale_tiled_given_z() -> None:
    net = tiny_irn(2)
    lr = torch.rand(1, 3, 12, 14)
    z = torch.randn(net.latent_shape(lr.shape), generator=torch.Generator().manual_seed(3))
    drawn = upscale_tiled(net, lr, generator=torch.Generator().manual_seed(3), tile=5)
    given = upscale_tiled(net, lr, z=z, tile=5)
    assert torch.equal(given, drawn)
    with pytest.raises(ValueError, match="not both"):
        upscale_tiled(net, lr, z=z, generator=torch.Generator())
    with pytest.raises(ValueError, match="expected z of shape"):
        upscale_tiled(net, lr, z=z[..., :-1])


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_tiny_irn_within_round_off_of_whole_image(scale: int) -> None:
    # one coupling per level reaches 10 pixels of its level: a margin of 10 LR pixels covers it
    net = tiny_irn(scale).eval()
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, 29 * scale, 34 * scale, generator=g)
    whole_lr = net.downscale(hr)
    lr = downscale_tiled(net, hr, tile=9, margin=10)
    assert (lr - whole_lr).abs().max() <= 1 / 255 + 1e-7
    assert (lr != whole_lr).float().mean() < 0.01  # only values at a rounding boundary
    z = torch.randn(net.latent_shape(lr.shape), generator=g)
    sr = upscale_tiled(net, whole_lr, z=z, tile=9, margin=10)
    with torch.no_grad():
        assert torch.allclose(sr, net.inverse(net.join(whole_lr, z))[0], atol=1e-5)
    # without a margin the seams show: the test above could fail
    seams = upscale_tiled(net, whole_lr, z=z, tile=9, margin=0)
    with torch.no_grad():
        assert not torch.allclose(seams, net.inverse(net.join(whole_lr, z))[0], atol=1e-3)


def test_tiled_one_tile_is_the_whole_image_call() -> None:
    net = tiny_irn(2).eval()
    hr = torch.rand(1, 3, 24, 20)
    assert torch.equal(downscale_tiled(net, hr), net.downscale(hr))
    lr = net.downscale(hr)
    sr = upscale_tiled(net, lr, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(sr, net.upscale(lr, generator=torch.Generator().manual_seed(0)))


def test_downscale_tiled_size_not_a_multiple_raises() -> None:
    with pytest.raises(ValueError, match="multiples of the scale 4"):
        downscale_tiled(_haar_only(4), torch.rand(1, 3, 30, 32))


@pytest.mark.parametrize(
    ("scale", "dataset", "name"),
    [
        (2, "set5", "butterfly.png"),
        pytest.param(4, "set5", "bird.png", marks=pytest.mark.slow),
        pytest.param(2, "set14", "ppt3.png", marks=pytest.mark.slow),
    ],
)
def test_tiled_pretrained_matches_whole_image_within_001_db(
    pretrained: dict[int, IRN], scale: int, dataset: str, name: str
) -> None:
    # the shipped model, the default margin and tiles of half the image: 2 x 2 tiles or more
    net = pretrained[scale]
    hr = modcrop(read_image(shared_path("datasets", dataset, name))[0], scale)[None]
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    tile = max(h, w) // 2
    lr_whole = net.downscale(hr)
    lr = downscale_tiled(net, hr, tile=tile)
    assert len(plan_tiles(h, w, scale, tile=tile)) >= 4
    assert (lr - lr_whole).abs().max() <= 1 / 255 + 1e-7
    assert (lr != lr_whole).float().mean() < 1e-3

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    with torch.no_grad():
        sr_whole = net.upscale(lr_whole, generator=seeded())
    sr = upscale_tiled(net, lr_whole, generator=seeded(), tile=tile)
    between = float(psnr(sr.double(), sr_whole.double()))
    assert between > 60, between  # the two results are nearly the same image
    ours, theirs = evaluate_pair(hr, sr, scale), evaluate_pair(hr, sr_whole, scale)
    for metric in ("psnr_y", "psnr_rgb"):
        assert abs(ours[metric] - theirs[metric]) < 0.01, (metric, ours, theirs)


# --------------------------------------------------------------- constants from measurements


def test_tiling_constants_follow_the_measurements() -> None:
    data = json.loads(RESULTS.read_text())
    for key in ("x2", "x4"):
        sweep = data["margin"][key]["tile_error_vs_margin"]
        scale = data["margin"][key]["scale"]
        chosen = [row for row in sweep if row["margin"] <= MARGINS[scale]][-1]
        assert max(chosen["forward_max_err"], chosen["inverse_max_err"]) < tiling.TILE_ERROR
    assert MARGINS[8] >= MARGINS[4]
    # margin and agreement were measured on the models shipped now, not on earlier ones
    bench = benchmark_script("irn_tiling")
    for key in ("x2", "x4"):
        shipped = bench._weights(int(key[1:]))  # type: ignore[attr-defined]
        assert data["margin"][key]["weights"] == shipped, key
        assert data["agreement"]["weights"][key] == shipped, key
    # the stored run over every Set5 and Set14 image (--agreement): within 0.01 dB
    rows = data["agreement"]["rows"]
    assert {r["image"] for r in rows} >= {"set5/baby.png", "set14/zebra.png"}
    assert {r["scale"] for r in rows} == {2, 4} and min(r["tiles"] for r in rows) >= 4
    for r in rows:
        for c in ("y", "rgb"):
            assert abs(r[f"psnr_{c}_tiled"] - r[f"psnr_{c}_whole"]) < 0.01, r
    # the 24-megapixel photo at x4 (the command line at its default budget): under 2 GB each
    photo = data["photo"]
    assert photo["size"] == [6000, 4000] and photo["memory_mb"] is None
    for step in ("downscale", "upscale"):
        assert 0 < photo["runs"]["x4"][step]["peak_rss_mb"] < 2048, step
    fits = data["calibrate"]["fits"]
    assert tiling.BYTES_PER_PIXEL >= max(f["bytes_per_pixel"] for f in fits)
    assert tiling.WORKSPACE_MB >= max(f["workspace_mb"] for f in fits)
    # the docstring's and the how-to's tables are the ones the benchmark prints from the results
    bench = benchmark_script("irn_tiling")
    assert tiling.__doc__ is not None
    for line in bench.tables(data).splitlines():  # type: ignore[attr-defined]
        assert line in tiling.__doc__, line
    how_to = (ROOT / "docs" / "how-to" / "upscale.md").read_text()
    for line in bench.tables(data, ("margin", "photo")).splitlines():  # type: ignore[attr-defined]
        assert line in how_to, line


def test_tiling_benchmark_replaces_only_the_measured_scale() -> None:
    merge = benchmark_script("irn_tiling").merge_scales  # type: ignore[attr-defined]
    meta = {"machine": "old", "date": "then"}
    margin = {"x2": {"scale": 2, "v": 1}, "x4": {"scale": 4, "v": 2}, "meta": meta}
    new = {"x4": {"scale": 4, "v": 3}, "meta": {"x4": {"machine": "new"}}}
    merged = merge(margin, new, 4)
    assert merged["x2"] == {"scale": 2, "v": 1} and merged["x4"]["v"] == 3
    assert merged["meta"] == {"x2": meta, "x4": {"machine": "new"}}
    assert "x4" not in margin["meta"]  # the stored part is not changed in place
    # a scale measured for the first time joins the others; a second merge keeps both metas
    merged = merge(merged, {"x8": {"scale": 8}, "meta": {"x8": {"machine": "m8"}}}, 8)
    assert list(merged["meta"]) == ["x2", "x4", "x8"] and merged["x4"]["v"] == 3

    def row(scale: int, image: str, tiled: float) -> dict[str, object]:
        y = {"psnr_y_tiled": tiled, "psnr_y_whole": 30.0}
        return {"scale": scale, "image": image, **y, "psnr_rgb_tiled": 30, "psnr_rgb_whole": 30}

    agreement = {
        "rows": [row(2, "a", 30.004), row(4, "a", 30.009)],
        "max_abs_psnr_difference_db": 0.009,
        "weights": {"x2": {"sha256": "2"}, "x4": {"sha256": "4"}},
        "meta": meta,
    }
    new = {"rows": [row(4, "a", 30.001), row(4, "b", 30.0)], "weights": {"x4": {"sha256": "n"}}}
    merged = merge(agreement, {**new, "meta": {"x4": {"machine": "new"}}}, 4)
    assert [(r["scale"], r["image"]) for r in merged["rows"]] == [(2, "a"), (4, "a"), (4, "b")]
    assert merged["max_abs_psnr_difference_db"] == pytest.approx(0.004)  # the old x4 row is gone
    assert merged["weights"] == {"x2": {"sha256": "2"}, "x4": {"sha256": "n"}}
    assert merged["meta"] == {"x2": meta, "x4": {"machine": "new"}}


# ------------------------------------------------------------------------------ command line


def _run_cli(*argv: object) -> int:
    import argparse

    from flowlearn.irn.cli import register

    parser = argparse.ArgumentParser(prog="flowlearn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["irn", *map(str, argv)])
    return int(args.func(args))


def _png_claiming(path: Path, width: int, height: int) -> None:
    # a small PNG whose header claims width x height: only a decoder would find it truncated
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_cli_max_pixels_refused_before_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 12000, 12000)
    assert _run_cli("downscale", bomb, "--model", "x2", "--out", tmp_path) == 1
    err = capsys.readouterr().err
    assert "12000x12000 = 144 megapixels" in err and "--max-pixels" in err
    # upscale counts the HR pixels it would write: 3000 x 3000 at x4 is 144 megapixels too
    lr = tmp_path / "lr.png"
    _png_claiming(lr, 3000, 3000)
    assert _run_cli("upscale", lr, "--model", "x4", "--out", tmp_path) == 1
    assert "12000x12000 = 144 megapixels" in capsys.readouterr().err
    # and 2600 x 2400 at x4 (99.84 megapixels) is under the limit: only the decoder objects
    _png_claiming(lr, 2600, 2400)
    assert _run_cli("upscale", lr, "--model", "x4", "--out", tmp_path) == 1
    err = capsys.readouterr().err
    assert "max_pixels=" not in err and "cannot read image" in err
    # with the limit lifted the header passes, and the decoder finds the file truncated
    assert _run_cli("downscale", bomb, "--out", tmp_path, "--max-pixels", "0") == 1
    err = capsys.readouterr().err
    assert "max_pixels=" not in err and "cannot read image" in err


def test_cli_memory_budget_tiles_and_agrees(tmp_path: Path) -> None:
    from flowlearn.irn.checkpoint import save

    net = tiny_irn(2).eval()
    save(net, tmp_path / "tiny.pt")
    hr = torch.rand(1, 3, 160, 192, generator=torch.Generator().manual_seed(0))
    write_image(tmp_path / "hr.png", hr[0])
    hr = read_image(tmp_path / "hr.png")[0][None]
    # a budget that leaves room for a tile of 24 x 24 LR pixels with its margins
    reserved = hr.numel() * 4 * (1 + 1 / 4)
    region = ((24 + 2 * MARGINS[2]) * 2) ** 2
    memory = (reserved + tiling.WORKSPACE_MB * 2**20 + tiling.BYTES_PER_PIXEL * region) / 2**20
    plan = plan_tiles(80, 96, 2, memory_mb=memory, reserved_bytes=int(reserved))
    assert len(plan) > 1
    for budget, folder in ((memory, tmp_path / "tiled"), (1024, tmp_path / "whole")):
        args = ("--model", tmp_path / "tiny.pt", "--out", folder, "--memory", budget)
        assert _run_cli("downscale", tmp_path / "hr.png", *args) == 0
        assert _run_cli("upscale", folder / "hr_x2_lr.png", "--seed", "0", *args) == 0
    lr_tiled = read_image(tmp_path / "tiled" / "hr_x2_lr.png")[0]
    lr_whole = read_image(tmp_path / "whole" / "hr_x2_lr.png")[0]
    assert torch.equal(lr_whole, net.downscale(hr)[0])
    assert (lr_tiled - lr_whole).abs().max() <= 1 / 255 + 1e-7
    sr_tiled = read_image(tmp_path / "tiled" / "hr_x2_sr.png")[0]
    sr_whole = read_image(tmp_path / "whole" / "hr_x2_sr.png")[0]
    assert float(psnr(sr_tiled, sr_whole)) > 45


@pytest.mark.parametrize("memory", ["0", "-5", "nan", "inf", "lots"])
def test_cli_memory_must_be_a_positive_number_of_mib(
    memory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run_cli("downscale", tmp_path / "a.png", "--out", tmp_path, "--memory", memory)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --memory: expected a positive number of MiB, got '{memory}'" in err
    assert list(tmp_path.iterdir()) == []
