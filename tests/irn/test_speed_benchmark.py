"""The IRN speed benchmark (`benchmarks/irn_speed.py`): its modes and checks, and how it pools."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, benchmark_script

pytestmark = pytest.mark.usefixtures("one_thread")
ORIGINAL = os.environ.get("FLOWLEARN_IRN_ORIGINAL")  # a checkout of the authors' repository


def _args(modes: list[str], baseline: str, original: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        modes=modes, baseline=baseline, original=original, threads=1, device="cpu"
    )


def test_benchmark_modes_compute_the_same_training_step() -> None:
    bench = benchmark_script("irn_speed")
    args = _args(["paper", "default", "nchw", "memory_saving"], baseline="paper")
    errors = bench.check_float64(args, 2, patch=16)  # stops the benchmark above 1e-9
    assert set(errors) == {"default", "nchw", "memory_saving"}
    assert all(0 <= e["loss_rel"] < 1e-12 and 0 <= e["grad_rel"] < 1e-12 for e in errors.values())


def test_benchmark_check_stops_on_a_different_step() -> None:
    bench = benchmark_script("irn_speed")
    loss = {"fit": 1.0, "distr": 2.0, "rec": 3.0}
    grads = {"w": bench.torch.ones(3)}
    other = {"w": bench.torch.tensor([1.0, 1.0, 1.1])}
    assert bench._compare((loss, grads), (loss, grads)) == {"loss_rel": 0.0, "grad_rel": 0.0}
    assert bench._compare((loss, grads), (loss, other))["grad_rel"] == pytest.approx(0.1)
    with pytest.raises(SystemExit, match="gradients of"):
        bench._compare((loss, grads), (loss, {"v": bench.torch.ones(3)}))


def test_benchmark_original_path_is_checked(tmp_path: Path) -> None:
    bench = benchmark_script("irn_speed")
    with pytest.raises(SystemExit, match=r"codes/models/IRN_model\.py"):
        bench.original_codes(str(tmp_path))
    (tmp_path / "codes" / "models").mkdir(parents=True)
    (tmp_path / "codes" / "models" / "IRN_model.py").touch()
    assert bench.original_codes(str(tmp_path)) == tmp_path / "codes"


@pytest.mark.skipif(ORIGINAL is None, reason="set FLOWLEARN_IRN_ORIGINAL to the original repo")
def test_benchmark_original_code_trains_as_the_paper_form() -> None:
    bench = benchmark_script("irn_speed")
    errors = bench.check_float64(
        _args(["original", "paper", "default"], "original", ORIGINAL), 2, patch=16
    )
    assert set(errors) == {"paper", "default"}
    assert all(e["loss_rel"] < 1e-12 and e["grad_rel"] < 1e-12 for e in errors.values())


def test_benchmark_pools_processes_keeping_rounds_paired() -> None:
    bench = benchmark_script("irn_speed")

    def run(original: list[float], default: list[float]) -> dict[str, Any]:
        def mode(steps: list[float]) -> dict[str, Any]:
            return {"train_steps_s": steps, "infer_runs_s": [0.5], "train_step_s": steps[0]}

        return {"original": mode(original), "default": mode(default), "checks": {}}

    pooled = bench.pooled_time([run([1.0, 3.0], [0.5, 1.2]), run([2.0, 2.0], [1.0, 0.8])])
    assert set(pooled) == {"original", "default"}
    assert pooled["original"]["train_steps_s"] == [1.0, 3.0, 2.0, 2.0]  # process order
    assert pooled["default"]["train_steps_s"] == [0.5, 1.2, 1.0, 0.8]  # same rounds
    assert pooled["original"]["train_step_s"] == 2.0  # median of all four steps
    assert pooled["default"]["train_step_min_s"] == 0.5
    assert pooled["original"]["train_step_s_per_process"] == [1.0, 2.0]
    ratios = bench.ratios_to("original", {"x2": pooled})["x2"]
    assert set(ratios) == {"default"}
    assert ratios["default"]["train_step_paired"] == 0.45  # median of 0.5, 0.4, 0.5, 0.4
    assert ratios["default"]["train_step_min"] == 0.5


def test_performance_page_shows_the_stored_results() -> None:
    bench = benchmark_script("irn_speed")
    # the page's time, memory and profile tables are the ones the benchmark prints from the
    # stored JSON, and the baseline of the time and memory tables is the original code
    page = (ROOT / "docs" / "performance.md").read_text()
    for line in bench.tables().splitlines():  # type: ignore[attr-defined]
        assert line in page, line
    for name in ("irn_speed_time_cpu.json", "irn_speed_memory_cpu.json"):
        data = json.loads((bench.RESULTS / name).read_text())  # type: ignore[attr-defined]
        assert data["meta"]["baseline"] == "original", name


def test_benchmark_without_inference_timing_pools_and_tabulates_steps_only() -> None:
    bench = benchmark_script("irn_speed")
    runs = [
        {
            "original": {"train_steps_s": [2.0], "train_step_s": 2.0},
            "default": {"train_steps_s": [1.0], "train_step_s": 1.0},
            "checks": {},
        }
    ]
    pooled = bench.pooled_time(runs)  # --infer-repeats 0: no inference entries
    assert "infer_s" not in pooled["default"]
    data = {
        "x4": pooled,
        "ratios": bench.ratios_to("original", {"x4": pooled}),
        "meta": {"baseline": "original"},
    }
    assert data["ratios"]["x4"]["default"] == {
        "train_step_s": 0.5,
        "train_step_paired": 0.5,
        "train_step_min": 0.5,
    }
    row = next(line for line in bench.time_table(data) if line.startswith("| `default`"))
    assert row == "| `default` | 1.000 | 0.500 |"  # no inference columns
