"""Tests of `flowlearn irn ...`: downscale/upscale round trips, test, train and bad inputs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowlearn.images.io import read_image, write_image
from flowlearn.images.metrics import psnr
from flowlearn.irn.checkpoint import load
from flowlearn.irn.cli import register
from tests.conftest import ROOT, shared_path, smooth_image

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(*argv: str | os.PathLike[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowlearn")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["irn", *map(str, argv)])
    return args.func(args)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def test_cli_downscale_upscale_round_trip_set5(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bird = shared_path("datasets", "set5", "bird.png")
    assert run_cli("downscale", bird, "--model", model_path, "--out", tmp_path) == 0
    lr_file = tmp_path / "bird_x2_lr.png"
    lr, note = read_image(lr_file)
    hr, _ = read_image(bird)
    assert note is None and lr.shape == (3, hr.shape[1] // 2, hr.shape[2] // 2)
    assert torch.equal(lr, load(model_path).downscale(hr[None])[0])  # 8-bit, as computed
    # z = 0 (temperature 0): an untrained IRN is the Haar transform, so this is a close
    # (nearest-neighbour-like) reconstruction; sampled z adds noise, repeatable with a seed.
    args = ["upscale", lr_file, "--model", model_path, "--out", tmp_path]
    assert run_cli(*args, "--temperature", "0") == 0
    sr_file = tmp_path / "bird_x2_sr.png"
    sr, _ = read_image(sr_file)
    assert sr.shape == hr.shape
    assert psnr(sr, hr).item() > 25
    assert run_cli(*args, "--seed", "3", "--overwrite") == 0
    first = sr_file.read_bytes()
    assert run_cli(*args, "--seed", "3", "--overwrite") == 0
    assert sr_file.read_bytes() == first
    out = capsys.readouterr()
    assert "bird_x2_sr.png" in out.out and out.err == ""


def test_cli_bad_inputs_one_line_each_and_others_processed(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "good.png", smooth_image(16, 24, 0))
    write_image(src / "odd.png", smooth_image(15, 24, 1))
    pixels = (smooth_image(16, 16, 2).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels).convert("L").save(src / "grey.png")
    Image.fromarray(pixels).convert("RGBA").save(src / "rgba.png")
    Image.fromarray(pixels).convert("P").save(src / "palette.png")
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(src / "deep.png")
    (src / "notes.png").write_text("not an image")
    names = ["good", "odd", "notes", "missing", "grey", "rgba", "palette", "deep"]
    files = [src / f"{name}.png" for name in names]
    status = run_cli("downscale", *files, "--model", model_path, "--out", tmp_path / "out")
    assert status == 1
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert len(errors) == 3
    assert "odd.png: size 24x15 is not a multiple of the scale 2" in errors[0]
    assert "notes.png" in errors[1] and "not an image" in errors[1]
    assert "missing.png" in errors[2] and "no such file" in errors[2]
    for name, word in [("grey", "greyscale"), ("rgba", "alpha"), ("palette", "palette")]:
        assert any(f"note: {src / name}.png" in line and word in line for line in err.splitlines())
    assert "Traceback" not in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    expected = ["deep", "good", "grey", "palette", "rgba"]
    assert written == [f"{name}_x2_lr.png" for name in expected]


def test_cli_pad_then_crop_restores_size(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "odd.png", smooth_image(15, 21, 0))
    assert (
        run_cli("downscale", tmp_path / "odd.png", "--pad", "-m", model_path, "-o", tmp_path) == 0
    )
    assert read_image(tmp_path / "odd_x2_lr.png")[0].shape == (3, 8, 11)
    assert "reflect-padded 21x15 to 22x16" in capsys.readouterr().err
    lr = tmp_path / "odd_x2_lr.png"
    assert run_cli("upscale", lr, "-m", model_path, "-o", tmp_path, "--crop", "21x15") == 0
    assert read_image(tmp_path / "odd_x2_sr.png")[0].shape == (3, 15, 21)
    again = ["upscale", lr, "-m", model_path, "-o", tmp_path, "--overwrite"]
    assert run_cli(*again, "--crop", "40x15") == 1
    assert "larger than the upscaled 22x16" in capsys.readouterr().err


def test_cli_model_errors_are_one_line(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    write_image(image, smooth_image(16, 16, 0))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    cases = [
        (["--model", model_path, "--scale", "4"], "holds a x2 model, expected scale 4"),
        (["--model", tmp_path / "nothing.pt"], "nothing.pt does not exist"),
        (["--model", tmp_path / "junk.pt"], "junk.pt is a text file ('not a checkpoint'"),
        (["--model", tmp_path / "empty.pth"], "empty.pth is empty (0 bytes)"),
    ]
    for extra, message in cases:
        assert run_cli("downscale", image, *extra, "--out", tmp_path / "o") == 1
        errors = error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and message in errors[0]
        assert "weights_only" not in errors[0]


def test_cli_unwritable_output_folder(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    write_image(image, smooth_image(16, 16, 0))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    for out in [blocker, blocker / "sub"]:
        assert run_cli("downscale", image, "--model", model_path, "--out", out) == 1
        errors = error_lines(capsys.readouterr().err)
        message = f"the output folder {out} is a file or inside one; expected a folder"
        assert len(errors) == 1 and message in errors[0]


def test_cli_test_bicubic_and_model_with_json(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    for i in range(2):
        write_image(data / f"v{i}.png", smooth_image(24, 20, i))
    report = tmp_path / "reports" / "bicubic.json"
    assert run_cli("test", "--bicubic", "--scale", "2", "--data", data, "--json", report) == 0
    out = capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["method"] == "bicubic" and result["num_images"] == 2
    assert f"{result['mean']['psnr_y']:.2f}" in out.splitlines()[-1]
    saved = tmp_path / "saved"
    args = ["test", "--model", model_path, "--data", data, "--draws", "2", "--json", report]
    assert run_cli(*args, "--save-images", saved, "--overwrite") == 0
    result = json.loads(report.read_text())
    assert result["method"] == "irn" and result["draws"] == 2
    assert len(result["images"][0]["psnr_y_draws"]) == 2
    assert sorted(p.name for p in saved.iterdir())[:2] == ["v0_LR.png", "v0_SR.png"]
    assert "std over draws" in capsys.readouterr().out


def test_cli_test_argument_errors(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("test", "--bicubic", "--data", tmp_path) == 2
    assert "--bicubic needs --scale" in capsys.readouterr().err
    assert run_cli("test", "--bicubic", "--model", model_path, "--data", tmp_path) == 2
    assert "exactly one of --model M and --bicubic" in capsys.readouterr().err
    assert run_cli("test", "--model", model_path, "--scale", "8", "--data", tmp_path) == 1
    assert "holds a x2 model, expected scale 8" in capsys.readouterr().err
    assert run_cli("test", "--bicubic", "--scale", "2", "--data", tmp_path / "none") == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "none does not exist" in errors[0]


def test_cli_train_resume_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "photos"
    for i in range(2):
        write_image(data / f"p{i}.png", smooth_image(32, 32, i))
    run = tmp_path / "run"
    args = ["train", "--config", "tiny", "--data", data, "--output", run, "--quiet"]
    small = ["--set", "data.patch_size=16", "--set", "data.batch_size=2"]
    assert run_cli(*args, *small, "--steps", "2", "--device", "cpu") == 0
    assert "step 2: weights in" in capsys.readouterr().out
    assert load(run / "model.pt", scale=2).scale == 2
    assert run_cli(*args, *small, "--steps", "2") == 1
    assert "already holds a run" in capsys.readouterr().err
    assert run_cli(*args, *small, "--steps", "3", "--resume") == 0
    assert "step 3: weights in" in capsys.readouterr().out
    assert run_cli(*args, "--set", "optim.learning_rate=1") == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "unknown key 'optim.learning_rate'" in errors[0]
    assert run_cli("train", "--config", "tiny", "--output", tmp_path / "r2") == 1
    assert "set data.train to a folder of training images" in capsys.readouterr().err


def test_cli_entry_point_reports_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "flowlearn", "irn", "upscale", str(tmp_path / "x.png")]
    done = subprocess.run(
        [*command, "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"flowlearn irn upscale: error: model file {tmp_path / 'm.pt'} does not exist"
    ]
