"""`benchmarks/irn_learning_curve.py` and `irn_patch_size.py`: the training runs they make."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from flowlearn.irn.config import load_config
from flowlearn.irn.train import build_model, validate
from tests.conftest import ROOT, benchmark_script

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


def test_patch_size_benchmark_trains_each_size_for_the_time_given(
    tmp_path: Path, images: Path
) -> None:
    bench = benchmark_script("irn_patch_size")
    out = tmp_path / "patch.json"
    argv = ["--config", "tiny", "--data", str(images), "--val", str(images), "--minutes", "0.02"]
    argv += ["--patch-sizes", "8", "16", "--batch-size", "2", "--out", str(out)]
    assert bench.main([*argv, "--run-dir", str(tmp_path / "runs")]) == 0
    data = json.loads(out.read_text())
    assert [r["patch"] for r in data["runs"]] == [8, 16]
    for run in data["runs"]:
        assert run["steps"] >= 1 and run["hr_pixels"] == run["steps"] * 2 * run["patch"] ** 2
        assert 0.02 * 60 <= run["seconds"] < 60  # stopped by the wall-time budget
        assert (tmp_path / "runs" / f"patch{run['patch']}" / "checkpoint.pt").is_file()
    cfg = load_config("tiny", overrides=[f"data.train={images}"])
    assert data["before"] == pytest.approx(
        validate(build_model(cfg), images, 2, draws=1)["psnr_y_sampled"]
    )
    assert bench.table(data).count("\n") == 3  # header, rule, two rows


def test_benchmarks_page_shows_the_stored_patch_size_result() -> None:
    bench = benchmark_script("irn_patch_size")
    stored = json.loads((ROOT / "benchmarks/results/irn_patch_size_cpu.json").read_text())
    assert bench.table(stored) in (ROOT / "docs" / "benchmarks.md").read_text()
