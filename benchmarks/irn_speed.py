"""Training-step time, inference time and peak memory of IRN, plain computation vs speed options.

Usage:
    python benchmarks/irn_speed.py [--scales 2 4] [--batch 4] [--patch 64] [--threads 2]
        [--modes plain default memory_saving ...] [--repeats 10] [--device cpu|cuda]
        [--measure time memory] [--infer-size 512] [--out results.json]
    python benchmarks/irn_speed.py --profile default [plain ...] [--scales 2] [--batch 4]
    python benchmarks/irn_speed.py --drift [--threads 1]

Prints JSON `{"x2": {"plain": {"train_step_s": …, "infer_s": …, "peak_mb": …}, "default": {…},
…}, "x4": {…}, "ratios": {…}, "meta": {…}}`; `ratios` divides every mode by `plain`
(`train_step_paired`: the median over rounds of the ratio within one round; `train_step_min`:
the ratio of the fastest steps, least disturbed by other jobs). One training step is the
original IRN step: forward HR → [LR, z], the three losses, the inverse pass from [quantised LR,
sampled z], backward, global gradient clipping at 10 and Adam (lr 2e-4, weight decay 1e-5).
Inference is `downscale` then `upscale` of one `--infer-size`² image without gradients.

Modes (every one computes the same map from the same weights):

* `plain`: the plainest computation, written out here and independent of the speed work in
  flowlearn: Haar as a grouped stride-2 convolution, dense blocks that concatenate before every
  convolution, contiguous (NCHW) float32, ordinary backprop, PyTorch's default Adam and
  gradient clipping (loops over the parameter tensors on a CPU).
  Every other mode steps with what `flowlearn irn train` uses: `irn_optimizer` (fused Adam) and
  `clip_gradients` (multi-tensor kernels).
* `nchw`: flowlearn's `IRN(channels_last=False)` in one shard: `one_shard` without channels-last.
* `default`: `IRN(scale)` as shipped, trained as `flowlearn irn train` does: `irn_backward`,
  which on a CPU cuts the batch into one shard per thread, run in parallel threads.
* `one_shard`: `default` with the whole batch in one shard (`irn_backward(..., shards=1)`).
* `memory_saving`: `IRN(scale, memory_saving=True)`, backpropagation by inversion.
* `bf16`: `IRN(scale, bf16=True)`, dense blocks under bfloat16 autocast.
* `compile`: `default` plus `flowlearn.irn.speed.compile_subnets` (`torch.compile`).
* `cudnn_benchmark` (CUDA): `default` with `torch.backends.cudnn.benchmark` on.

Timing: all modes of one scale live in one process and their steps are interleaved (round
robin, rotating the order), so a load change on a shared machine hits every mode alike; medians
of `--repeats` steps after `--warmup`. Ratios also move between processes (by a few hundredths
on a shared 2-core machine: memory placement, neighbours); `--processes N` runs the timing in N
fresh processes one after the other and pools their steps (paired ratios are paired within a
process). Peak memory: each (scale, mode) runs its training steps in
a fresh process: peak resident set size (`ru_maxrss`, which includes the ~300 MiB of the PyTorch
runtime; `baseline_mb` is the value before the first step) on CPU, `max_memory_allocated` on
CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlearn.core.memory import inversion_drift
from flowlearn.irn import IRN, IRNCoupling, irn_backward, irn_losses, quantize
from flowlearn.irn.speed import compile_subnets, configure_backends
from flowlearn.irn.train import clip_gradients, irn_optimizer
from flowlearn.layers.haar import HaarDownsampling, haar_kernel

CPU_MODES = ["plain", "nchw", "default", "one_shard", "memory_saving", "bf16"]
CUDA_MODES = [*CPU_MODES, "cudnn_benchmark"]


# ---------------------------------------------------------------------------------- plain IRN


def _plain_dense(block: nn.Module, x: Tensor) -> Tensor:
    """IRN's dense block as written in the paper: concatenate, convolve, LeakyReLU(0.2)."""

    def conv(k: int, v: Tensor) -> Tensor:
        layer = getattr(block, f"conv{k}")
        return F.conv2d(v, layer.weight, layer.bias, padding=1)

    x1 = F.leaky_relu(conv(1, x), 0.2, inplace=True)
    x2 = F.leaky_relu(conv(2, torch.cat((x, x1), 1)), 0.2, inplace=True)
    x3 = F.leaky_relu(conv(3, torch.cat((x, x1, x2), 1)), 0.2, inplace=True)
    x4 = F.leaky_relu(conv(4, torch.cat((x, x1, x2, x3), 1)), 0.2, inplace=True)
    return conv(5, torch.cat((x, x1, x2, x3, x4), 1))


def _plain_coupling(op: IRNCoupling, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    a, b = x.narrow(1, 0, op.split), x.narrow(1, op.split, op.channels - op.split)
    if not reverse:
        y1 = a + _plain_dense(op.F, b)
        s = op.clamp * (torch.sigmoid(_plain_dense(op.H, y1)) * 2 - 1)
        y2 = b.mul(torch.exp(s)) + _plain_dense(op.G, y1)
        return torch.cat((y1, y2), 1), s.flatten(1).sum(1)
    s = op.clamp * (torch.sigmoid(_plain_dense(op.H, a)) * 2 - 1)
    x2 = (b - _plain_dense(op.G, a)).div(torch.exp(s))
    x1 = a - _plain_dense(op.F, x2)
    return torch.cat((x1, x2), 1), -s.flatten(1).sum(1)


def _plain_haar(x: Tensor, kernel: Tensor, reverse: bool) -> Tensor:
    """IRN's Haar transform as a grouped convolution with the ±1 filters (1/4 normalisation)."""
    if not reverse:
        b, c, h, w = x.shape
        out = F.conv2d(x, kernel, stride=2, groups=c) / 4  # (B, 4C, H/2, W/2) channel-major
        out = out.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2)  # (B, 4, C, H/2, W/2)
        return out.reshape(b, 4 * c, h // 2, w // 2)  # band-major
    b, c4, h, w = x.shape
    out = x.reshape(b, 4, c4 // 4, h, w).transpose(1, 2).reshape(b, c4, h, w)  # channel-major
    return F.conv_transpose2d(out, kernel, stride=2, groups=c4 // 4)  # (B, C, 2h, 2w)


class PlainIRN(nn.Module):
    """The IRN map of `net`, computed the plain way (see `plain` in the module docstring)."""

    def __init__(self, net: IRN) -> None:
        super().__init__()
        self.net, self.scale, self.channels = net, net.scale, net.channels
        self.kernels = [
            haar_kernel(op.channels) if isinstance(op, HaarDownsampling) else None
            for op in net.operations
        ]

    def _run(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        steps = list(zip(self.net.operations, self.kernels))
        for op, kernel in reversed(steps) if reverse else steps:
            if kernel is not None:  # log-det -CHW ln 2 forward, +CHW ln 2 inverse
                logdet = logdet + (1 if reverse else -1) * x[0].numel() * math.log(2)
                x = _plain_haar(x, kernel.to(x), reverse)
            else:
                x, ld = _plain_coupling(op, x, reverse)  # type: ignore[arg-type]
                logdet = logdet + ld
        return x, logdet

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, reverse=False)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(y, reverse=True)

    def split(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, : self.channels], y[:, self.channels :]

    def join(self, lr: Tensor, z: Tensor) -> Tensor:
        return torch.cat((lr, z), 1)

    def downscale(self, hr: Tensor) -> Tensor:
        return quantize(self.split(self(hr)[0])[0])

    def upscale(self, lr: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        b, c, h, w = lr.shape
        shape = (b, c * (self.scale**2 - 1), h, w)
        z = torch.randn(shape, generator=generator, device=lr.device, dtype=lr.dtype)
        return self.inverse(self.join(lr, z))[0]


# ---------------------------------------------------------------------------------- modes


def base_irn(scale: int, device: str) -> IRN:
    """Seed-0 IRN with small random last convolutions (at init they are zero: no coupling)."""
    torch.manual_seed(0)
    net = IRN(scale, channels_last=False)
    g = torch.Generator().manual_seed(2020)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".conv5." in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return net.to(device)


def build_mode(mode: str, scale: int, device: str) -> tuple[nn.Module, Callable[[], Any]]:
    """The model of `mode` and a context factory that step runs in."""
    base = base_irn(scale, device)
    if mode == "plain":
        return PlainIRN(base), nullcontext
    options: dict[str, Any] = {
        "nchw": {"channels_last": False},
        "one_shard": {},
        "memory_saving": {"memory_saving": True},
        "bf16": {"bf16": True},
    }.get(mode, {})
    if mode not in (*CUDA_MODES, "compile"):
        raise SystemExit(f"irn_speed: unknown mode {mode!r}")
    net = IRN(scale, **options).to(device)
    net.load_state_dict(base.state_dict())
    if mode == "compile":
        compile_subnets(net, device=device)
    if mode == "cudnn_benchmark":
        return net, lambda: _cudnn_benchmark()
    return net, nullcontext


@contextmanager
def _cudnn_benchmark() -> Iterator[None]:
    previous = configure_backends(cudnn_benchmark=True)
    try:
        yield
    finally:
        configure_backends(**previous)


def make_batch(scale: int, batch: int, patch: int, device: str) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(batch, 3, patch, patch, generator=g).to(device)
    return hr, F.avg_pool2d(hr, scale)  # a stand-in for the bicubic LR reference


class Trainer:
    """One model, its optimiser and its training step."""

    def __init__(self, mode: str, scale: int, device: str) -> None:
        self.model, self.context = build_mode(mode, scale, device)
        self.plain = mode == "plain"
        self.shards = 1 if mode in ("one_shard", "nchw") else None
        if self.plain:  # PyTorch's defaults: a loop over the parameter tensors
            self.opt = torch.optim.Adam(self.model.parameters(), lr=2e-4, weight_decay=1e-5)
        else:  # what `flowlearn irn train` uses: fused Adam, multi-tensor clipping
            self.opt = irn_optimizer(self.model.parameters(), lr=2e-4, weight_decay=1e-5)
        self.device = device

    def step(self, hr: Tensor, lr_ref: Tensor) -> None:
        gen = torch.Generator(device=self.device).manual_seed(3)
        with self.context():
            self.opt.zero_grad(set_to_none=True)
            if self.plain:
                losses = irn_losses(self.model, hr, lr_ref, generator=gen)  # type: ignore[arg-type]
                losses.total.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
            else:
                irn_backward(self.model, hr, lr_ref, generator=gen, shards=self.shards)  # type: ignore[arg-type]
                clip_gradients(self.model.parameters(), 10.0)
            self.opt.step()

    @torch.no_grad()
    def infer(self, image: Tensor) -> Tensor:
        gen = torch.Generator(device=self.device).manual_seed(4)
        with self.context():
            lr = self.model.downscale(image)  # type: ignore[operator]
            return self.model.upscale(lr, generator=gen)  # type: ignore[operator]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------- workers


def worker_time(args: argparse.Namespace) -> dict[str, Any]:
    """All modes of one scale in this process, steps interleaved; medians per mode."""
    device, scale = args.device, args.scale
    trainers = {mode: Trainer(mode, scale, device) for mode in args.modes}
    hr, lr_ref = make_batch(scale, args.batch, args.patch, device)
    with torch.no_grad():  # every mode computes the same map (bf16: to bfloat16 precision)
        ref = trainers[args.modes[0]].model(hr)[0]
        for mode, t in trainers.items():
            err = float((t.model(hr)[0] - ref).abs().max())
            if err > (5e-2 if mode == "bf16" else 1e-4):
                raise SystemExit(f"irn_speed: mode {mode} differs from {args.modes[0]} by {err}")
    times: dict[str, list[float]] = {m: [] for m in trainers}
    for _ in range(args.warmup):
        for t in trainers.values():
            t.step(hr, lr_ref)
    order = list(trainers)
    for r in range(args.repeats):
        for mode in order[r % len(order) :] + order[: r % len(order)]:
            times[mode].append(_timed(partial(trainers[mode].step, hr, lr_ref), device))
    image = torch.rand(
        1, 3, args.infer_size, args.infer_size, generator=torch.Generator().manual_seed(5)
    )
    image = image.to(device)
    infer: dict[str, list[float]] = {m: [] for m in trainers}
    for r in range(args.infer_repeats + 1):
        for mode in order[r % len(order) :] + order[: r % len(order)]:
            elapsed = _timed(partial(trainers[mode].infer, image), device)
            if r > 0:  # the first round is a warm-up
                infer[mode].append(elapsed)
    return {
        mode: {
            "train_step_s": round(statistics.median(times[mode]), 4),
            "train_step_min_s": round(min(times[mode]), 4),
            "infer_s": round(statistics.median(infer[mode]), 4),
            "train_steps_s": [round(t, 4) for t in times[mode]],
            "infer_runs_s": [round(t, 4) for t in infer[mode]],
        }
        for mode in trainers
    }


def pooled_time(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The timing results of several worker processes, pooled.

    Medians and minimum over all steps of all processes; the step lists are concatenated in
    process order, so that step i of every mode still comes from the same round.
    """
    pooled: dict[str, Any] = {}
    for mode in runs[0]:
        steps = [t for run in runs for t in run[mode]["train_steps_s"]]
        infer = [t for run in runs for t in run[mode]["infer_runs_s"]]
        pooled[mode] = {
            "train_step_s": round(statistics.median(steps), 4),
            "train_step_min_s": round(min(steps), 4),
            "infer_s": round(statistics.median(infer), 4),
            "train_steps_s": steps,
            "train_step_s_per_process": [run[mode]["train_step_s"] for run in runs],
        }
    return pooled


def worker_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of training steps of one (scale, mode), alone in this fresh process."""
    device, scale, mode = args.device, args.scale, args.modes[0]
    trainer = Trainer(mode, scale, device)
    hr, lr_ref = make_batch(scale, args.batch, args.patch, device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    for _ in range(2):
        trainer.step(hr, lr_ref)
    _sync(device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_mb": round(peak, 1), "baseline_mb": round(baseline, 1)}


def worker_drift(args: argparse.Namespace) -> dict[str, Any]:
    """Relative error of inputs recomputed by inversion vs stored ones, after k inversions."""
    out: dict[str, Any] = {}
    for std in (0.02, 0.03, 0.05):  # 0.05: activations explode and so does the inverse
        for dtype in (torch.float32, torch.float64):
            torch.manual_seed(0)
            net = IRN(2, blocks=[64], channels_last=False).to(dtype)
            g = torch.Generator().manual_seed(2020)
            with torch.no_grad():
                for name, p in net.named_parameters():
                    if ".conv5." in name:
                        p.copy_(std * torch.randn(p.shape, generator=g, dtype=dtype))
            x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=dtype)
            errors = inversion_drift(net.bijectors, x)
            with torch.no_grad():
                largest = float(net(x)[0].abs().max())
            key = f"conv5_std{std}_{str(dtype).removeprefix('torch.')}"
            out[key] = {"max_abs_output": float(f"{largest:.3g}")} | {
                f"after_{k}": float(f"{errors[k - 1]:.3g}") for k in (1, 2, 4, 8, 16, 32, 64, 65)
            }
    return out


def profile(args: argparse.Namespace, mode: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    for scale in args.scales:
        trainer = Trainer(mode, scale, args.device)
        hr, lr_ref = make_batch(scale, args.batch, args.patch, args.device)
        for _ in range(args.warmup):
            trainer.step(hr, lr_ref)
        activities = [ProfilerActivity.CPU] + (
            [ProfilerActivity.CUDA] if args.device == "cuda" else []
        )
        with profile(activities=activities, record_shapes=False) as prof:
            for _ in range(3):
                trainer.step(hr, lr_ref)
        key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print(f"== x{scale} {mode}: 3 training steps, batch {args.batch}, {args.patch}² ==")
        print(prof.key_averages().table(sort_by=key, row_limit=args.profile_rows))


# ---------------------------------------------------------------------------------- main


def _run_worker(
    kind: str, args: argparse.Namespace, scale: int, modes: list[str]
) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--scale", str(scale)]
    cmd += ["--modes", *modes, "--batch", str(args.batch), "--patch", str(args.patch)]
    cmd += ["--threads", str(args.threads), "--device", args.device]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    cmd += ["--infer-size", str(args.infer_size), "--infer-repeats", str(args.infer_repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"irn_speed: worker {kind} x{scale} {modes} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=64, help="HR patch side")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--modes", nargs="+", default=None)
    parser.add_argument(
        "--measure", nargs="+", choices=["time", "memory"], default=["time", "memory"]
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--processes", type=int, default=1, help="timing processes to pool (fresh each)"
    )
    parser.add_argument("--infer-size", type=int, default=512)
    parser.add_argument("--infer-repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    parser.add_argument("--profile", metavar="MODE", nargs="+", default=None)
    parser.add_argument("--profile-rows", type=int, default=20)
    parser.add_argument("--drift", action="store_true", help="measure inversion drift instead")
    hidden = argparse.SUPPRESS  # worker processes only
    parser.add_argument("--worker", choices=["time", "memory"], default=None, help=hidden)
    parser.add_argument("--scale", type=int, default=2, help=hidden)
    args = parser.parse_args()
    configure_backends(threads=args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("irn_speed: --device cuda but CUDA is not available")
    if args.processes < 1:
        raise SystemExit(f"irn_speed: --processes must be at least 1, got {args.processes}")
    if args.patch % max([*args.scales, args.scale]) or args.infer_size % 8:
        raise SystemExit("irn_speed: --patch must be divisible by the scales, --infer-size by 8")
    args.modes = args.modes or (CUDA_MODES if args.device == "cuda" else CPU_MODES)
    if args.worker is not None:
        result = worker_time(args) if args.worker == "time" else worker_memory(args)
        print(json.dumps(result))
        return
    if args.profile is not None:
        for mode in args.profile:  # one process: the modes see the same machine
            profile(args, mode)
        return
    if args.drift:
        print(json.dumps(worker_drift(args), indent=2))
        return
    load_before = _load()
    results: dict[str, Any] = {f"x{s}": {m: {} for m in args.modes} for s in args.scales}
    for scale in args.scales:
        if "time" in args.measure:
            runs = [_run_worker("time", args, scale, args.modes) for _ in range(args.processes)]
            for mode, values in pooled_time(runs).items():
                results[f"x{scale}"][mode].update(values)
        if "memory" in args.measure:
            for mode in args.modes:
                results[f"x{scale}"][mode].update(_run_worker("memory", args, scale, [mode]))
    ratios: dict[str, Any] = {}
    for scale_key, modes in results.items():
        plain = modes.get("plain", {})
        ratios[scale_key] = {}
        for mode, values in modes.items():
            if mode == "plain":
                continue
            ratio = {
                key: round(values[key] / plain[key], 3)
                for key in ("train_step_s", "infer_s", "peak_mb")
                if key in values and plain.get(key)
            }
            if "train_steps_s" in values and "train_steps_s" in plain:
                # median over rounds of the ratio within a round: robust to load drift
                pairs = zip(values["train_steps_s"], plain["train_steps_s"])
                ratio["train_step_paired"] = round(statistics.median(a / b for a, b in pairs), 3)
                ratio["train_step_min"] = round(
                    values["train_step_min_s"] / plain["train_step_min_s"], 3
                )
            ratios[scale_key][mode] = ratio
    results["ratios"] = ratios
    results["meta"] = {
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "batch": args.batch,
        "patch": args.patch,
        "threads": args.threads,
        "repeats": args.repeats,
        "processes": args.processes,
        "infer_size": args.infer_size,
        **machine_meta(),
        "load_before": load_before,
        "load_after": _load(),
    }
    print_json(results, args.out)


def machine_meta() -> dict[str, Any]:
    """torch version, processor and CPU count, for the `meta` of a benchmark's JSON."""
    return {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def print_json(result: dict[str, Any], out: str | None) -> None:
    """Print `result` as JSON and, when `out` is given, write it there atomically."""
    text = json.dumps(result, indent=2)
    if out:
        tmp = f"{out}.tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)
    print(text)


if __name__ == "__main__":
    main()
