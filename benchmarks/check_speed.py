"""Time the full brute-force check of an 8-layer image flow on a 1×3×16×16 float64 input.

Usage: python benchmarks/check_speed.py [--repeats 5] [--threads N]

Prints JSON: the median and all timings of `flowlearn.checks.check_bijector` (round trips,
log-det cancellation, the full float64 Jacobian with `slogdet`, cross-sample blocks, gradients).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from flowlearn import (
    AdditiveCoupling,
    AffineCoupling,
    FlowSequential,
    HaarDownsampling,
    InvertibleConv1x1,
    Squeeze,
    nets,
)
from flowlearn.checks import check_bijector, jitter_parameters


def build_flow() -> FlowSequential:
    conv = nets.conv_net(hidden=32)
    return FlowSequential(
        AffineCoupling(3, conv, mask="checkerboard", parity=0),
        AffineCoupling(3, conv, mask="checkerboard", parity=1),
        AdditiveCoupling(3, conv, mask="checkerboard", parity=0),
        Squeeze(),  # (1, 12, 8, 8)
        AffineCoupling(12, conv, mask="channel", parity=0),
        AffineCoupling(12, conv, mask="channel", parity=1),
        InvertibleConv1x1(12),
        HaarDownsampling(12, normalization="mean"),  # (1, 48, 4, 4)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    flow = jitter_parameters(build_flow(), scale=0.05).double()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    check_bijector(flow, x)  # warm-up
    times, report = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = check_bijector(flow, x)
        times.append(time.perf_counter() - start)
    assert report is not None and report.ok, str(report)
    print(json.dumps({
        "flow": "8 layers: 3 checkerboard couplings, squeeze, 2 channel couplings, 1x1 conv, Haar",
        "input": [1, 3, 16, 16], "dtype": "float64",
        "median_s": round(statistics.median(times), 3), "times_s": [round(t, 3) for t in times],
        "logdet_error": report.logdet_error, "roundtrip_error": report.roundtrip_error,
        "threads": args.threads, "torch": torch.__version__, "machine": platform.processor()
        or platform.machine(), "cpus": __import__("os").cpu_count(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
