"""`benchmarks/irn_learning_curve.py`: the CSV it writes, fresh and resumed."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from flowlearn.irn.config import load_config
from flowlearn.irn.train import build_model, validate
from tests.conftest import benchmark_script

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: Path, *extra: str) -> list[dict]:
    argv = ["irn_learning_curve.py", "--config", "tiny", "--data", str(images)]
    argv += ["--val", str(images), "--steps", "2", "--validate-every", "2", "--threads", "1"]
    argv += ["--patch-size", "16", "--batch-size", "2"]
    argv += ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "curve.csv"), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    benchmark_script("irn_learning_curve").main()
    with (tmp_path / "curve.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_curve_starts_with_the_initial_model_and_ends_with_the_last_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: Path
) -> None:
    rows = _run(monkeypatch, tmp_path, images)
    assert [int(r["step"]) for r in rows] == [0, 2]
    assert rows[0]["fit"] == "" and rows[1]["fit"] != ""  # losses exist from the first step on
    cfg = load_config("tiny", overrides=[f"data.train={images}", "data.seed=0"])
    expected = validate(build_model(cfg), images, 2, draws=1)["psnr_y_sampled"]
    assert float(rows[0]["psnr_y_sampled"]) == pytest.approx(expected, abs=1e-3)
    assert float(rows[0]["psnr_y_sampled"]) != pytest.approx(float(rows[1]["psnr_y_sampled"]))

    resumed = _run(monkeypatch, tmp_path, images, "--resume", "--set", "optim.steps=4")
    assert [r["step"] for r in resumed[:2]] == ["0", "2"]  # the first call's rows are kept
