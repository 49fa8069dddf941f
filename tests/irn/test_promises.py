"""What the IRN command line and API promise a careful (or careless) user, one test per promise.

1. Every failure is one line and an exit status, Ctrl-C included; `train` saves on Ctrl-C and
   a resumed run ends with the same weights as one never stopped.
2. Nothing is lost: no output overwrites a file without `--overwrite`, inputs are never
   outputs, `--save-images` refuses the data folder, one training run per run folder.
5. LR images made by `downscale` say so; `upscale` warns about others.
6. `irn test` goes on past bad files and still writes its JSON.
7. The API validates its input and options.
8. Any image (size, mode, format) either round-trips or fails in one line, leaving no file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowlearn.images.io import write_image
from flowlearn.irn.config import load_config
from flowlearn.irn.train import train
from tests.conftest import ROOT, smooth_image

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def flowlearn(*argv: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    r"""Run `python -m flowlearn ARGV...` and return the finished process (stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "flowlearn", *map(str, argv)],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    r"""The process failed with exactly one `flowlearn …: error: …` line and no traceback."""
    assert done.returncode not in (0, None), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


TINY = {"data.patch_size": 16, "data.batch_size": 2, "optim.steps": 40, "run.checkpoint_every": 15}


def tiny_args(images: Path, output: Path, settings: dict[str, int] = TINY) -> list[str]:
    args = ["irn", "train", "--config", "tiny", "--data", images, "--output", output, "--quiet"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return [str(a) for a in args]


def tiny_config(images: Path, output: Path, settings: dict[str, int] = TINY) -> object:
    return load_config(
        "tiny", overrides={**settings, "data.train": str(images), "run.output": str(output)}
    )


# 1. One line and an exit status -----------------------------------------------------------------


def test_train_sigint_saves_and_resume_matches_uninterrupted_run(
    images: Path, tmp_path: Path
) -> None:
    # long enough that every delay below lands before the end, on a fast idle machine too
    # (40 steps took under 0.4 s there)
    long = {**TINY, "optim.steps": 400}
    straight = train(tiny_config(images, tmp_path / "straight", long), progress=False)
    expected = straight.model.state_dict()
    interrupted = 0
    for k, delay in enumerate([0.0, 0.4, 1.5]):
        out = tmp_path / f"run{k}"
        process = subprocess.Popen(
            [sys.executable, "-m", "flowlearn", *tiny_args(images, out, long)],
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists() and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        assert "Traceback" not in err, err
        if process.returncode == 0:  # finished before the signal
            continue
        assert process.returncode == 130, err
        assert err.strip().splitlines()[-1].startswith("flowlearn irn train: interrupted"), err
        saved = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
        assert f"checkpoint of step {saved}" in err
        interrupted += 1
        resumed = train(tiny_config(images, out, long), resume=True, progress=False)
        assert resumed.step == long["optim.steps"]
        got = resumed.model.state_dict()
        assert all(torch.equal(expected[name], got[name]) for name in expected), f"delay {delay}"
    assert interrupted >= 2


def test_ctrl_c_during_shutdown_keeps_the_finished_commands_status(tmp_path: Path) -> None:
    # A Ctrl-C that arrives after the command has returned (its outputs written), while the
    # interpreter shuts down, must neither print a traceback nor turn status 0 into a kill.
    # The atexit callback delivers it at exactly that moment, every time.
    code = (
        "import atexit, os, signal, sys, time\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.2)))\n"
        "sys.argv = ['flowlearn', 'check', '--help']\n"
        "from flowlearn.cli import run\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage: flowlearn check" in done.stdout
    assert "KeyboardInterrupt" not in done.stderr, done.stderr


def test_cli_damaged_checkpoint_is_one_line(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    assert_one_line_error(flowlearn(*tiny_args(images, out), "--resume"), "damaged")
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    assert cli(*tiny_args(images, out), "--resume") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "checkpoint.pt" in errors[0] and "damaged" in errors[0]


def test_cli_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowlearn.irn.config import ConfigError

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("- a list\n")
    train_args = ["irn", "train", "--config", bad_yaml]
    assert cli(*train_args) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"flowlearn irn train: error: {bad_yaml}")
    with pytest.raises(ConfigError, match="top level is a list"):
        cli(*train_args, "--debug")
    assert "FLOWLEARN_DEBUG" not in os.environ  # --debug is for that command only
    monkeypatch.setenv("FLOWLEARN_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli(*train_args)


# 2. Nothing is lost ----------------------------------------------------------------------------


def test_train_second_run_into_one_folder_fails_at_once(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / ".lock"):  # as a running `train` holds it (another process)
        done = flowlearn(*tiny_args(images, out), timeout=120)
        assert_one_line_error(done, "another training run", str(out))
    assert not (out / "checkpoint.pt").exists()


def cli(*argv: object) -> int:
    r"""`flowlearn ARGV...` in this process; returns the exit status."""
    from flowlearn.cli import main

    return main([str(a) for a in argv])


def test_cli_downscale_never_overwrites_without_flag_nor_an_input(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, mine = tmp_path / "a.png", tmp_path / "a_x2_lr.png"
    write_image(a, smooth_image(16, 16, 0))
    write_image(mine, smooth_image(8, 8, 1))
    before = mine.read_bytes()
    assert cli("irn", "downscale", a, "-m", model_path, "--out", tmp_path) == 1
    assert f"{mine} exists; pass --overwrite" in capsys.readouterr().err
    assert mine.read_bytes() == before
    # even with --overwrite, an input is never an output; the other files are processed
    assert cli("irn", "downscale", a, mine, "-m", model_path, "-o", tmp_path, "--overwrite") == 1
    assert f"{mine} is also an input" in capsys.readouterr().err
    assert mine.read_bytes() == before
    assert (tmp_path / "a_x2_lr_x2_lr.png").is_file()
    assert cli("irn", "downscale", a, "-m", model_path, "-o", tmp_path, "--overwrite") == 0
    assert mine.read_bytes() != before


def test_demo_never_overwrites_without_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "hr.png"  # the name of one of the demo's outputs
    write_image(photo, smooth_image(64, 64, 2))
    before = photo.read_bytes()
    assert cli("demo", photo, "--out", tmp_path, "--scales", "2") == 1
    assert "is the input image" in capsys.readouterr().err
    assert photo.read_bytes() == before
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "demo.png").write_bytes(b"mine")
    assert cli("demo", photo, "--out", tmp_path / "out", "--scales", "2") == 1
    assert "demo.png exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "demo.png").read_bytes() == b"mine"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.png"]
    blocker = tmp_path / "out" / "demo.png"  # a file where the output folder should be
    for out in [blocker, blocker / "sub"]:
        assert cli("demo", photo, "--out", out, "--scales", "2") == 1
        err = capsys.readouterr().err
        assert f"the output folder {out} is a file or inside one; expected a folder" in err
        assert "Errno" not in err and blocker.read_bytes() == b"mine"


def test_cli_test_save_images_refuses_the_data_folder(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_image(data / "a.png", smooth_image(16, 16, 3))
    for inside in [data, data / "saved" / "deeper"]:
        assert cli("irn", "test", "-m", model_path, "--data", data, "--save-images", inside) == 1
        assert "is inside the data folder" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["a.png"]
    report = tmp_path / "r.json"
    report.write_text("mine")
    assert cli("irn", "test", "-m", model_path, "--data", data, "--json", report) == 1
    assert "r.json exists; pass --overwrite" in capsys.readouterr().err
    assert report.read_text() == "mine"
    folder = tmp_path / "results"
    folder.mkdir()
    for extra in [[], ["--overwrite"]]:  # refused before any image is evaluated
        argv = ["irn", "test", "-m", model_path, "--data", data, "--json", folder, *extra]
        assert cli(*argv) == 1
        captured = capsys.readouterr()
        assert f"--json {folder} is a folder; expected a file name" in captured.err
        assert "a.png" not in captured.out and list(folder.iterdir()) == []


# 6. `irn test` goes on past bad files ----------------------------------------------------------


def test_cli_test_goes_on_past_bad_files_and_writes_json(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    data = tmp_path / "data"
    write_image(data / "a.png", smooth_image(16, 16, 4))
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_image(data / "c.png", smooth_image(16, 20, 5))
    report = tmp_path / "r.json"
    args = ["irn", "test", "-m", model_path, "--data", data, "--json", report, "--draws", "1"]
    assert cli(*args) == 1
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "broken.png skipped" in errors[0]
    result = json.loads(report.read_text())
    assert [r["name"] for r in result["images"]] == ["a.png", "c.png"]
    assert [f["name"] for f in result["failed"]] == ["broken.png"]
    assert result["failed"][0]["reason"]
    assert "failed: broken.png" in out


# 7. The API validates --------------------------------------------------------------------------


def test_irn_api_rejects_what_it_would_turn_into_nonsense() -> None:
    from flowlearn.irn.model import IRN

    net = IRN(2, blocks=[1], growth=4)
    x = torch.rand(1, 3, 8, 8)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    cases = [
        (lambda: net.downscale(nan), ValueError, "NaN or infinite"),
        (lambda: net.forward(nan), ValueError, "NaN or infinite"),
        (lambda: net.upscale(nan[..., :4, :4]), ValueError, "NaN or infinite"),
        (lambda: net.downscale(x * 255), ValueError, r"values in \[0, 1\]"),
        (lambda: net.upscale(x * 255), ValueError, r"values in \[0, 1\]"),
        (lambda: net.downscale((x * 255).to(torch.uint8)), TypeError, "divide|/ 255"),
        (lambda: net.downscale(x.double()), TypeError, "float64 but the weights are"),
        (lambda: net.downscale(x[:0]), ValueError, "empty"),
        (lambda: net.upscale(x, temperature=float("nan")), ValueError, "temperature"),
        (lambda: net.upscale(x, temperature=-1.0), ValueError, "temperature"),
        (lambda: net.upscale(x, generator=0), TypeError, "torch.Generator"),  # type: ignore[arg-type]
        (lambda: IRN(2, clamp=float("nan")), ValueError, "clamp"),
        (lambda: IRN(2, clamp=0.0), ValueError, "clamp"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()
    assert net.double().downscale(x.double()).dtype == torch.float64  # asked for: it works


def test_assert_bijector_says_what_it_needs() -> None:
    from flowlearn.checks import assert_bijector

    with pytest.raises(TypeError, match="Bijector"):
        assert_bijector(torch.nn.Linear(3, 3), torch.randn(2, 3))


# Configuration edge cases ----------------------------------------------------------------------


def test_config_edge_cases_are_one_line_config_errors(tmp_path: Path) -> None:
    from flowlearn.irn.config import ConfigError

    for text, message in [
        ("- a list\n", "top level is a list"),
        ("3\n", "top level is a int"),
        ("model:\n  scale: 2\n  scale: 4\n", "duplicate key 'scale'"),
    ]:
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("tiny", overrides=["optim.lr=[1"])
    with pytest.raises(ConfigError, match="--set"):  # not "in .../irn_tiny.yaml"
        load_config("tiny", overrides=["optim.nokey=1"])
    with pytest.raises(ConfigError, match=r"optim\.lr must be .*given with --set"):
        load_config("tiny", overrides=["optim.lr=abc"])


def test_cli_train_refuses_zero_steps_and_resume_changes(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line
        cli(*tiny_args(images, tmp_path / "run"), "--steps", "0")
    assert exit_info.value.code == 2 and "--steps" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert cli(*tiny_args(images, tmp_path / "run"), "--steps", "1") == 0
    resume = [*tiny_args(images, tmp_path / "run"), "--resume", "--steps", "2"]
    capsys.readouterr()
    assert cli(*resume, "--set", "optim.lr=0.5") == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and "optim.lr" in errors[0] and "would be ignored" in errors[0]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 1
    assert cli(*resume) == 0  # the same settings again: fine


# 5. IRN-made LR images say so ------------------------------------------------------------------


def test_cli_downscale_marks_lr_and_upscale_warns_on_unmarked(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from flowlearn.images.io import read_png_text

    a, thumb = tmp_path / "a.png", tmp_path / "thumb.png"
    write_image(a, smooth_image(16, 16, 6))
    write_image(thumb, smooth_image(8, 8, 7))  # a bicubic-like thumbnail IRN did not make
    assert cli("irn", "downscale", a, "-m", model_path, "-o", tmp_path / "lr") == 0
    lr = tmp_path / "lr" / "a_x2_lr.png"
    mark = json.loads(read_png_text(lr)["flowlearn"])
    assert mark["scale"] == 2 and len(mark["model"]) == 12
    capsys.readouterr()
    assert cli("irn", "upscale", lr, "-m", model_path, "-o", tmp_path / "sr") == 0
    assert "warning" not in capsys.readouterr().err
    assert cli("irn", "upscale", thumb, "-m", model_path, "-o", tmp_path / "sr") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if ": warning: " in line]
    assert len(warnings) == 1 and "no flowlearn mark" in warnings[0]
    assert "not a super-resolution model" in warnings[0]
    # without --model and --scale the mark picks the scale; another model's mark is named
    assert cli("irn", "upscale", lr, "-o", tmp_path / "sr2") == 0
    err = capsys.readouterr().err
    assert "shipped x2 model" in err and "made by another model" in err


# 8. Any image either round-trips or fails in one line ------------------------------------------


def test_cli_random_images_round_trip_or_fail_in_one_line(model_path: Path) -> None:
    import contextlib
    import io
    import tempfile

    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from PIL import Image

    @settings(max_examples=12, deadline=None, derandomize=True)
    @given(
        height=st.integers(1, 20),
        width=st.integers(1, 20),
        mode=st.sampled_from(["RGB", "L", "RGBA", "P", "I;16", "1", "CMYK"]),
        suffix=st.sampled_from([".png", ".jpg", ".tif"]),
        pad=st.booleans(),
    )
    def check(height: int, width: int, mode: str, suffix: str, pad: bool) -> None:
        if suffix == ".jpg" and mode in ("RGBA", "P", "I;16", "1"):
            mode = "RGB"  # JPEG cannot hold these
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            pixels = np.random.default_rng(height * 31 + width).integers(0, 255, (height, width, 3))
            image = Image.fromarray(pixels.astype(np.uint8), "RGB").convert(mode)
            source = root / f"in{suffix}"
            image.save(source)
            err = io.StringIO()
            args = ["irn", "downscale", source, "-m", model_path, "-o", root / "lr"]
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = cli(*args, *(["--pad"] if pad else []))
            outputs = sorted(p.name for p in (root / "lr").glob("*")) if status == 0 else []
            if status != 0:
                errors = [line for line in err.getvalue().splitlines() if ": error: " in line]
                assert len(errors) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
                assert not (root / "lr").exists() or not any((root / "lr").iterdir())
                return
            assert outputs == ["in_x2_lr.png"], outputs
            lr = root / "lr" / "in_x2_lr.png"
            args = ["irn", "upscale", lr, "-m", model_path, "-o", root / "sr", "--seed", "0"]
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                assert cli(*args) == 0, err.getvalue()
            sr = Image.open(root / "sr" / "in_x2_sr.png")
            assert sr.size == (width + width % 2, height + height % 2)

    check()


def test_cli_ctrl_c_in_any_command_is_interrupted_130(
    model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flowlearn.images.io as image_io

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    write_image(tmp_path / "a.png", smooth_image(16, 16, 8))
    monkeypatch.setattr(image_io, "read_image", interrupted)
    assert cli("irn", "downscale", tmp_path / "a.png", "-m", model_path, "-o", tmp_path) == 130
    assert capsys.readouterr().err.splitlines() == ["flowlearn irn downscale: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_train_run_files_get_the_users_umask(images: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        train(tiny_config(images, tmp_path / "run"), progress=False, max_steps=1)
    finally:
        os.umask(old)
    for name in ["checkpoint.pt", "model.pt", "config.yaml", "log.csv"]:
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name
