"""What one convolution call costs on CPU, and when running two as one grouped call pays.

Usage:
    python benchmarks/conv_calls.py [--threads 2] [--batch 4] [--repeats 60] [--out FILE]
        [--parts fixed_cost grouped throughput]

Times forward + backward (input, weight and bias gradients) of 3×3 convolutions of the sizes in
an IRN dense block, channels-last unless stated, float32. Three parts:

* `fixed_cost`: a convolution on 2×2 maps, where the arithmetic is negligible: what remains is
  the cost of the call itself (oneDNN primitive set-up, weight reorders, dispatch). An IRN ×4
  training step makes several hundred convolution calls forward and as many backward.
* `grouped`: ρ and η of an IRN coupling read the same input and have the same shapes, so each of
  their convolutions can run as one grouped convolution (`groups=2`) instead of two calls. For
  each size: two separate channels-last calls, one grouped channels-last call, and one grouped
  contiguous (NCHW) call; `grouped_vs_two` is the ratio of the grouped channels-last time to
  the two calls.

* `throughput`: forward and backward timed apart, on 32×32 maps, with the arithmetic rate they
  reach (GFLOP/s: 2 flops per multiply-add, forward one product per weight and output pixel,
  backward two: input and weight gradients). Sizes around those of the dense block show how the
  rate depends on the channel counts: oneDNN's CPU kernels work on blocks of 16 output
  channels, so 35 outputs cost about what 48 do.

Calls of one size are interleaved (round robin), so a load change on a shared machine hits them
alike; medians of `--repeats` after 5 warm-up rounds. Prints JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from irn_speed import machine_meta, print_json  # this folder: run as a script

CL = torch.channels_last
NCHW = torch.contiguous_format

# (height = width, input channels per group, output channels per group): the convolutions of
# rho / eta in IRN x4 at batch 4 of 64x64 patches (16x16 maps: second Haar level; 32x32: first)
GROUPED_SIZES = [
    (16, 35, 32),
    (16, 67, 32),
    (16, 99, 77),
    (16, 32, 45),
    (32, 35, 32),
    (32, 67, 32),
    (32, 99, 41),
    (32, 32, 9),
]
FIXED_SIZES = [(3, 32), (67, 32), (99, 41)]
# (input, output channels) on 32x32 maps: conv4 alone and with conv5's first part (35 = 32 + 3,
# 41 = 32 + 9 outputs), the same padded to multiples of 16, and narrow conv5-like outputs
THROUGHPUT_SIZES = [
    (96, 32),
    (99, 32),
    (105, 32),
    (112, 32),
    (105, 35),
    (99, 41),
    (99, 48),
    (112, 48),
    (137, 3),
    (137, 16),
    (131, 9),
]
PARTS = ["fixed_cost", "grouped", "throughput"]


def conv_step(
    batch: int, c_in: int, c_out: int, size: int, layout: torch.memory_format, groups: int = 1
) -> Callable[[], None]:
    """Forward and backward of one convolution, with its tensors made once."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in * groups, size, size, generator=g).contiguous(memory_format=layout)
    w = torch.randn(c_out * groups, c_in, 3, 3, generator=g).contiguous(memory_format=layout)
    b = torch.zeros(c_out * groups)
    grad = torch.randn(batch, c_out * groups, size, size, generator=g)
    grad = grad.contiguous(memory_format=layout)
    for t in (x, w, b):
        t.requires_grad_(True)

    def step() -> None:
        F.conv2d(x, w, b, padding=1, groups=groups).backward(grad)
        x.grad = w.grad = b.grad = None

    return step


def conv_halves(
    batch: int, c_in: int, c_out: int, size: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """Forward alone, and backward alone (input, weight and bias gradients), channels-last."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, size, size, generator=g).contiguous(memory_format=CL)
    w = torch.randn(c_out, c_in, 3, 3, generator=g).contiguous(memory_format=CL)
    b = torch.zeros(c_out)
    grad = torch.randn(batch, c_out, size, size, generator=g).contiguous(memory_format=CL)

    def forward() -> None:
        F.conv2d(x, w, b, padding=1)

    def backward() -> None:
        torch.ops.aten.convolution_backward(
            grad, x, w, [c_out], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]
        )

    return forward, backward


def interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each step, the steps run round robin."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats + 5):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if r >= 5:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {}
    if "fixed_cost" in args.parts:
        result["fixed_cost"] = fixed_cost(args)
    if "grouped" in args.parts:
        result["grouped"] = grouped(args)
    if "throughput" in args.parts:
        result["throughput"] = throughput(args)
    result["meta"] = {
        "threads": args.threads,
        "batch": args.batch,
        "repeats": args.repeats,
        **machine_meta(),
    }
    print_json(result, args.out)


def fixed_cost(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    fixed: dict[str, dict[str, object]] = {}
    for c_in, c_out in FIXED_SIZES:
        t = interleaved(
            {
                "channels_last": conv_step(args.batch, c_in, c_out, 2, CL),
                "nchw": conv_step(args.batch, c_in, c_out, 2, NCHW),
            },
            args.repeats,
        )
        fixed[f"{c_in}->{c_out}"] = {k: round(v * 1e6, 1) for k, v in t.items()} | {"unit": "us"}
    return fixed


def grouped(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    result: dict[str, dict[str, object]] = {}
    for size, c_in, c_out in GROUPED_SIZES:
        one = conv_step(args.batch, c_in, c_out, size, CL)
        other = conv_step(args.batch, c_in, c_out, size, CL)

        def two(one: Callable[[], None] = one, other: Callable[[], None] = other) -> None:
            one()
            other()

        t = interleaved(
            {
                "two_calls": two,
                "grouped": conv_step(args.batch, c_in, c_out, size, CL, groups=2),
                "grouped_nchw": conv_step(args.batch, c_in, c_out, size, NCHW, groups=2),
            },
            args.repeats,
        )
        result[f"{size}x{size} 2x({c_in}->{c_out})"] = {
            k: round(v * 1e3, 3) for k, v in t.items()
        } | {"grouped_vs_two": round(t["grouped"] / t["two_calls"], 3), "unit": "ms"}
    return result


def throughput(args: argparse.Namespace, size: int = 32) -> dict[str, dict[str, object]]:
    result: dict[str, dict[str, object]] = {}
    for c_in, c_out in THROUGHPUT_SIZES:
        forward, backward = conv_halves(args.batch, c_in, c_out, size)
        t = interleaved({"forward": forward, "backward": backward}, args.repeats)
        macs = args.batch * size * size * c_in * c_out * 9
        result[f"{size}x{size} {c_in}->{c_out}"] = {
            "forward_ms": round(t["forward"] * 1e3, 3),
            "backward_ms": round(t["backward"] * 1e3, 3),
            "forward_gflops": round(2 * macs / t["forward"] / 1e9, 1),
            "backward_gflops": round(4 * macs / t["backward"] / 1e9, 1),
        }
    return result


if __name__ == "__main__":
    main()
