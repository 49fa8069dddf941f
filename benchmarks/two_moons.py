"""Benchmark: NICE, RealNVP and neural spline flow density estimation on two moons (noise 0.1).

Trains the three models from scratch and prints one JSON line on stdout:

    {"nice": {"test_nll": ..., "train_seconds": ..., ...}, "realnvp": {...}, "spline": {...}}

`test_nll` is the mean negative log-likelihood in nats of the test points (lower is better; the
true distribution's entropy, about 1.008 nats, is the floor); `train_seconds` is the wall-clock
time of the training loop alone. Progress and the machine's load average go to stderr.

Configuration (fixed, seeded):

* data: 20,000 training points `two_moons(20000, noise=0.1, seed=0)` (identical to
  scikit-learn's `make_moons`); 10,000 test points from `seed=1`, or the `(N, 2)` float array in
  `--test-data FILE.npy`, points this script did not generate.
* RealNVP: `RealNVP(2, couplings=8, hidden=64, depth=2)` (affine couplings, log-scales
  soft-clamped at 2), standard normal base.
* NICE: `NICE(2, couplings=8, hidden=64, depth=3)` (additive couplings + diagonal scaling),
  standard logistic base as in the paper. Eight couplings instead of the paper's four: in two
  dimensions four volume-preserving shears reach only about 1.19 nats at this budget.
* spline: `NeuralSplineFlow(2, couplings=4, bins=8, bound=4.0, hidden=64, depth=2)`
  (rational-quadratic spline couplings, identity outside [-4, 4]), standard normal base,
  2,000 steps: a step of its four spline couplings costs more than one of RealNVP's eight
  affine couplings, and half the steps already train in less time than RealNVP's 4,000.
* training: Adam, lr 2e-3 with cosine decay to 0, batch 256, 4,000 steps (2,000 for the
  spline; `--steps N` sets every model to N), seed 0, one CPU thread (`--threads`; on a shared
  2-core machine a second thread only adds contention).

Usage:

    python benchmarks/two_moons.py [--test-data test.npy] [--steps N] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from flowlearn import Flow, StandardLogistic, StandardNormal
from flowlearn.density.datasets import two_moons
from flowlearn.density.distributions import nats_to_bits_per_dim
from flowlearn.density.models import NICE, NeuralSplineFlow, RealNVP
from flowlearn.density.training import evaluate_nll, fit


def load_test_data(path: Path) -> torch.Tensor:
    array = np.load(path)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.floating):
        raise SystemExit(
            f"--test-data: expected an (N, 2) float array, got {array.dtype} {array.shape}"
        )
    if not np.isfinite(array).all():
        raise SystemExit("--test-data: the array contains NaN or inf")
    return torch.from_numpy(array.astype(np.float32))


STEPS = {"nice": 4000, "realnvp": 4000, "spline": 2000}


def build(name: str) -> Flow:
    if name == "nice":
        return Flow(NICE(2, couplings=8, hidden=64, depth=3), StandardLogistic(2))
    if name == "spline":
        spline = NeuralSplineFlow(2, couplings=4, bins=8, bound=4.0, hidden=64, depth=2)
        return Flow(spline, StandardNormal(2))
    return Flow(RealNVP(2, couplings=8, hidden=64, depth=2), StandardNormal(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-data", type=Path, help="(N, 2) float .npy file of test points")
    parser.add_argument("--steps", type=int, help="steps for every model (default: STEPS)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    train = two_moons(20000, noise=0.1, seed=0)
    test = load_test_data(args.test_data) if args.test_data else two_moons(10000, noise=0.1, seed=1)
    results = {}
    for name in ("nice", "realnvp", "spline"):
        steps = args.steps or STEPS[name]
        torch.manual_seed(args.seed)
        flow = build(name)
        history = fit(
            flow,
            train,
            steps=steps,
            batch_size=256,
            lr=2e-3,
            lr_schedule="cosine",
            seed=args.seed,
            progress=sys.stderr.isatty(),
        )
        nll = evaluate_nll(flow, test)
        results[name] = {
            "test_nll": round(nll, 4),
            "test_bits_per_dim": round(nats_to_bits_per_dim(nll, 2), 4),
            "train_seconds": round(history.seconds, 1),
            "train_cpu_seconds": round(history.cpu_seconds, 1),
            "steps": steps,
            "parameters": sum(p.numel() for p in flow.parameters()),
        }
        print(f"{name}: {results[name]}", file=sys.stderr)
    print(
        f"load average (1, 5, 15 min) at the end: {os.getloadavg()}, cpus: {os.cpu_count()}, "
        f"torch threads: {torch.get_num_threads()}, test points: {len(test)}",
        file=sys.stderr,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
