"""Training-step time, inference time and peak memory of IRN: the original code vs flowlearn.

Usage:
    python benchmarks/irn_speed.py --original PATH/TO/Invertible-Image-Rescaling
        [--scales 2 4] [--batch 4] [--patch 64] [--threads 2] [--modes original paper default ...]
        [--repeats 10] [--processes 1] [--device cpu|cuda] [--measure time memory]
        [--infer-size 512] [--note TEXT] [--out results.json]
    python benchmarks/irn_speed.py [--original PATH] --profile default [original paper ...]
    python benchmarks/irn_speed.py --drift

Prints JSON `{"x2": {"original": {"train_step_s": …, "infer_s": …, "peak_mb": …}, "paper":
{…}, …}, "x4": {…}, "ratios": {…}, "checks": {…}, "meta": {…}}`; `ratios` divides every mode
by `original` (`train_step_paired`: the median over rounds of the ratio within one round;
`train_step_min`: the ratio of the fastest steps, least disturbed by other jobs). Without
`--original` the modes are divided by `paper` instead (`meta.baseline` says which). One
training step is the original IRN step: forward HR → [LR, z], the three losses with the
recipe's weights, the inverse pass from [quantised LR, sampled z], backward, global gradient
clipping at 10 and Adam (lr 2e-4, weight decay 1e-5). Inference is `downscale` then `upscale`
of one `--infer-size`² image without gradients.

Modes (every one computes the same map from the same weights):

* `original`: the authors' code itself, imported from the checkout given with `--original`
  (its `codes/` folder goes on `sys.path`; nothing of it is copied here): `IRNModel` built
  from the repository's own `options/train/train_IRN_x{scale}.yml` on this device, the
  weights loaded with `flowlearn.irn.checkpoint.to_official`, and each step one call of
  `IRNModel.optimize_parameters` (its losses, `clip_grad_norm_` and `torch.optim.Adam`).
* `paper`: flowlearn's `IRN(scale)`, the paper form, trained the plain way: `irn_losses`,
  `.backward()`, `torch.nn.utils.clip_grad_norm_` and `torch.optim.Adam` with their defaults.
* `default`: what `flowlearn irn train` runs: `flowlearn.irn.fast.accelerate(IRN(scale))`
  (channels-last float32), `irn_backward` (on a CPU the batch cut into one shard per thread,
  run in parallel threads), `irn_optimizer` (fused Adam) and `clip_gradients` (multi-tensor).
* `one_shard`: `default` with the whole batch in one shard (`irn_backward(..., shards=1)`).
* `nchw`: `one_shard` without channels-last (`accelerate(net, channels_last=False)`).
* `memory_saving`: `default` with `IRN(scale, memory_saving=True)`, backprop by inversion.
* `bf16`: `default` with `accelerate(net, bf16=True)`, dense blocks under bfloat16 autocast
  (what the shipped models were trained with on a CPU with AMX; not the training default).
* `compile`: `default` plus `flowlearn.irn.speed.compile_subnets` (`torch.compile`).
* `cudnn_benchmark` (CUDA): `default` with `torch.backends.cudnn.benchmark` on.

Checks before timing (they stop the run when they fail; their numbers go to `checks`): in
float64, on a small batch, one training step's three losses and its clipped gradients in every
mode that runs in float64 against the original's (relative error of the losses, largest
gradient difference over the largest gradient); in float32, on the timed models, the forward
output `[LR, z]` and the clipped gradients against the original's.

Timing: all modes of one scale live in one process and their steps are interleaved (round
robin, rotating the order), so a load change on a shared machine hits every mode alike; medians
of `--repeats` steps after `--warmup`. Ratios also move between processes (by a few hundredths
on a shared 2-core machine: memory placement, neighbours); `--processes N` runs the timing in N
fresh processes one after the other and pools their steps (paired ratios are paired within a
process). Peak memory: each (scale, mode) runs its training steps in a fresh process: peak
resident set size (`ru_maxrss`, which includes the ~300 MiB of the PyTorch runtime;
`baseline_mb` is the value before the first step) on CPU, `max_memory_allocated` on CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
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
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from flowlearn.core.memory import inversion_drift
from flowlearn.images.io import atomic_write
from flowlearn.irn import IRN, irn_losses
from flowlearn.irn.checkpoint import to_official
from flowlearn.irn.fast import accelerate, irn_backward
from flowlearn.irn.speed import compile_subnets, configure_backends
from flowlearn.irn.train import clip_gradients, irn_optimizer

BASELINE = "original"
CPU_MODES = ["original", "paper", "default", "one_shard", "nchw", "memory_saving", "bf16"]
CUDA_MODES = [*CPU_MODES, "cudnn_benchmark"]
FAST_MODES: dict[str, tuple[dict[str, bool], bool, int | None]] = {
    # mode: (options of accelerate, memory_saving, shards of irn_backward)
    "default": ({}, False, None),
    "one_shard": ({}, False, 1),
    "nchw": ({"channels_last": False}, False, 1),
    "memory_saving": ({}, True, None),
    "bf16": ({"bf16": True}, False, None),
    "compile": ({}, False, None),
    "cudnn_benchmark": ({}, False, None),
}
LR, WEIGHT_DECAY, GRAD_CLIP = 2e-4, 1e-5, 10.0  # the recipe (train_IRN_x*.yml)
LOSS_NAMES = {"l_forw_fit": "fit", "l_forw_ce": "distr", "l_back_rec": "rec"}  # original: ours


# ---------------------------------------------------------------------------------- original code


class _NoneDict(dict[str, Any]):
    """Options whose missing keys read `None`, as the original training script reads them.

    Its `train.py` passes the parsed YAML through `options.dict_to_nonedict`, so that optional
    keys a file leaves out (`add_noise_on_y`, `gaussian_scale`, …) mean "off".
    """

    def __missing__(self, key: str) -> None:
        return None


def _none_dict(obj: Any) -> Any:
    if isinstance(obj, dict):
        return _NoneDict({k: _none_dict(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_none_dict(v) for v in obj]
    return obj


def original_codes(path: str) -> Path:
    """The `codes/` folder of the original repository checked out at `path` (or `path` itself)."""
    root = Path(path).expanduser().resolve()
    codes = root / "codes" if (root / "codes").is_dir() else root
    if not (codes / "models" / "IRN_model.py").is_file():
        raise SystemExit(
            f"irn_speed: --original {path}: expected a checkout of the original IRN repository "
            "(github.com/pkuxmq/Invertible-Image-Rescaling) with codes/models/IRN_model.py"
        )
    return codes


def import_original(codes: Path) -> ModuleType:
    """The original `models.IRN_model`, imported from `codes` (put first on `sys.path`)."""
    if str(codes) not in sys.path:
        sys.path.insert(0, str(codes))
    loaded = sys.modules.get("models")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(codes)):
        raise SystemExit(f"irn_speed: a module `models` from {loaded.__file__} is already loaded")
    # models/networks.py imports the GAN discriminator's module, which imports torchvision for
    # VGG features that IRN never builds: an empty stand-in where torchvision cannot be imported
    try:
        importlib.import_module("torchvision")
    except Exception:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.modules["torchvision"] = ModuleType("torchvision")
    logging.getLogger("base").setLevel(logging.ERROR)  # its "will not optimize" Haar notices
    return importlib.import_module("models.IRN_model")


def original_options(codes: Path, scale: int, device: str) -> Any:
    """The repository's own training options for `scale`, on `device`, without a checkpoint."""
    with open(codes / "options" / "train" / f"train_IRN_x{scale}.yml") as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=True, dist=False, gpu_ids=[0] if device == "cuda" else None)
    opt["network_G"]["scale"] = opt["scale"]  # as its options.parse sets it
    opt["path"]["pretrain_model_G"] = None
    train = opt["train"]
    recipe = (train["lr_G"], train["weight_decay_G"], train["gradient_clipping"])
    if recipe != (LR, WEIGHT_DECAY, GRAD_CLIP) or train["lambda_fit_forw"] != scale**2:
        raise SystemExit(f"irn_speed: unexpected recipe in train_IRN_x{scale}.yml: {train}")
    return _none_dict(opt)


class OriginalTrainer:
    """The original `IRNModel` with flowlearn's seed-0 weights; a step is `optimize_parameters`."""

    def __init__(self, codes: Path, scale: int, device: str, dtype: torch.dtype) -> None:
        self.codes, self.scale, self.device, self.dtype = codes, scale, device, dtype
        self.module = import_original(codes)
        self.irn = self._build(to_official(base_irn(scale, device, dtype)))
        self.model = self.irn.netG.module  # InvRescaleNet
        self.context: Callable[[], Any] = nullcontext

    def _build(self, weights: dict[str, Tensor]) -> Any:
        irn = self.module.IRNModel(original_options(self.codes, self.scale, self.device))
        irn.netG.module.to(self.dtype).load_state_dict(weights)
        return irn

    def step(self, hr: Tensor, lr_ref: Tensor) -> None:
        self.irn.feed_data({"LQ": lr_ref, "GT": hr})
        self.irn.optimize_parameters(0)

    def output(self, hr: Tensor) -> Tensor:
        return self.irn.netG(x=hr)

    def gradients(
        self, hr: Tensor, lr_ref: Tensor, z: Tensor
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Losses and clipped gradients of one `optimize_parameters` with the latent `z`.

        Run on a copy of the model (same weights, fresh optimiser), which the step changes.
        """
        irn = self._build(self.model.state_dict())
        irn.gaussian_batch = lambda dims: z.clone()  # the step's one random draw
        irn.feed_data({"LQ": lr_ref, "GT": hr})
        irn.optimize_parameters(0)
        grads = {
            name: p.grad for name, p in irn.netG.module.named_parameters() if p.grad is not None
        }
        return {LOSS_NAMES[k]: float(v) for k, v in irn.log_dict.items()}, grads

    @torch.no_grad()
    def infer(self, image: Tensor) -> Tensor:
        torch.manual_seed(4)  # the original draws z from the global generator
        return self.irn.upscale(self.irn.downscale(image), self.scale)


# ---------------------------------------------------------------------------------- flowlearn


def base_irn(
    scale: int, device: str, dtype: torch.dtype = torch.float32, *, memory_saving: bool = False
) -> IRN:
    """Seed-0 IRN with small random last convolutions (at init they are zero: no coupling)."""
    torch.manual_seed(0)
    net = IRN(scale, memory_saving=memory_saving)
    g = torch.Generator().manual_seed(2020)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".conv5." in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return net.to(device=device, dtype=dtype)


@contextmanager
def _cudnn_benchmark() -> Iterator[None]:
    previous = configure_backends(cudnn_benchmark=True)
    try:
        yield
    finally:
        configure_backends(**previous)


class Trainer:
    """One flowlearn mode: its model, optimiser and training step."""

    def __init__(self, mode: str, scale: int, device: str, dtype: torch.dtype) -> None:
        if mode != "paper" and mode not in FAST_MODES:
            raise SystemExit(f"irn_speed: unknown mode {mode!r}")
        self.paper, self.device = mode == "paper", device
        self.context: Callable[[], Any] = (
            _cudnn_benchmark if mode == "cudnn_benchmark" else nullcontext
        )
        if self.paper:  # PyTorch's defaults, as the original code uses them
            self.model = base_irn(scale, device, dtype)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
            return
        options, memory_saving, self.shards = FAST_MODES[mode]
        self.model = accelerate(
            base_irn(scale, device, dtype, memory_saving=memory_saving), **options
        )
        if mode == "compile":
            compile_subnets(self.model, device=device)
        self.opt = irn_optimizer(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def _backward(
        self, hr: Tensor, lr_ref: Tensor, z: Tensor | None, gen: torch.Generator | None
    ) -> dict[str, float]:
        if self.paper:
            losses = irn_losses(self.model, hr, lr_ref, z=z, generator=gen)
            losses.total.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        else:
            losses = irn_backward(self.model, hr, lr_ref, z=z, generator=gen, shards=self.shards)
            clip_gradients(self.model.parameters(), GRAD_CLIP)
        return {name: float(getattr(losses, name).detach()) for name in LOSS_NAMES.values()}

    def step(self, hr: Tensor, lr_ref: Tensor) -> None:
        gen = torch.Generator(device=self.device).manual_seed(3)
        with self.context():
            self.opt.zero_grad(set_to_none=True)
            self._backward(hr, lr_ref, None, gen)
            self.opt.step()

    def output(self, hr: Tensor) -> Tensor:
        with self.context():
            return self.model(hr)[0]

    def gradients(
        self, hr: Tensor, lr_ref: Tensor, z: Tensor
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Losses and clipped gradients of one training step with the latent `z` (no update)."""
        with self.context():
            self.opt.zero_grad(set_to_none=True)
            losses = self._backward(hr, lr_ref, z, None)
            grads = {
                n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None
            }
            self.opt.zero_grad(set_to_none=True)
        return losses, grads

    @torch.no_grad()
    def infer(self, image: Tensor) -> Tensor:
        gen = torch.Generator(device=self.device).manual_seed(4)
        with self.context():
            return self.model.upscale(self.model.downscale(image), generator=gen)


AnyTrainer = Trainer | OriginalTrainer


def make_trainer(
    mode: str, scale: int, args: argparse.Namespace, dtype: torch.dtype = torch.float32
) -> AnyTrainer:
    if mode == "original":
        if args.original is None:
            raise SystemExit("irn_speed: mode original needs --original PATH (the original repo)")
        return OriginalTrainer(original_codes(args.original), scale, args.device, dtype)
    return Trainer(mode, scale, args.device, dtype)


def make_batch(
    scale: int, batch: int, patch: int, device: str, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(batch, 3, patch, patch, generator=g, dtype=dtype).to(device)
    return hr, F.avg_pool2d(hr, scale)  # a stand-in for the bicubic LR reference


# ---------------------------------------------------------------------------------- checks

FLOAT64_TOL = 1e-9  # losses and gradients, relative: the same arithmetic, summed in another order
FLOAT32_TOL = {"output": 1e-4, "grad": 2e-2}  # an LR value rounding the other way
BF16_TOL = {"output": 5e-2, "grad": 0.5}  # bfloat16 sub-networks: a different computation
NO_FLOAT64 = ("bf16", "compile", "cudnn_benchmark")


def _compare(
    ref: tuple[dict[str, float], dict[str, Tensor]], got: tuple[dict[str, float], dict[str, Tensor]]
) -> dict[str, float]:
    """Largest relative loss difference, and largest gradient difference / largest gradient."""
    (loss_ref, grad_ref), (loss, grad) = ref, got
    if set(grad) != set(grad_ref):
        raise SystemExit(f"irn_speed: gradients of {sorted(set(grad) ^ set(grad_ref))[:4]} differ")
    scale = max(float(g.abs().max()) for g in grad_ref.values())
    return {
        "loss_rel": max(abs(loss[k] - v) / abs(v) for k, v in loss_ref.items()),
        "grad_rel": max(float((grad[k] - g).abs().max()) for k, g in grad_ref.items()) / scale,
    }


def check_float64(
    args: argparse.Namespace, scale: int, patch: int = 32
) -> dict[str, dict[str, float]]:
    """One step's losses and clipped gradients of each float64-capable mode vs the baseline's."""
    modes = [m for m in args.modes if m not in NO_FLOAT64]
    dtype, batch = torch.float64, max(2, args.threads)
    hr, lr_ref = make_batch(scale, batch, patch, args.device, dtype)
    shape = (batch, 3 * (scale**2 - 1), patch // scale, patch // scale)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(6), dtype=dtype)
    z = z.to(args.device)
    results = {m: make_trainer(m, scale, args, dtype).gradients(hr, lr_ref, z) for m in modes}
    out = {m: _compare(results[args.baseline], r) for m, r in results.items() if m != args.baseline}
    for mode, err in out.items():
        if max(err.values()) > FLOAT64_TOL:
            raise SystemExit(
                f"irn_speed: float64 step of {mode} differs from {args.baseline}: {err}"
            )
    return out


def check_float32(
    trainers: dict[str, AnyTrainer], baseline: str, hr: Tensor, lr_ref: Tensor, scale: int
) -> dict[str, dict[str, float]]:
    """Forward outputs and clipped gradients of the timed models vs the baseline's."""
    shape = (hr.shape[0], 3 * (scale**2 - 1), hr.shape[2] // scale, hr.shape[3] // scale)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(6)).to(hr.device)
    with torch.no_grad():
        y_ref = trainers[baseline].output(hr)
    ref = trainers[baseline].gradients(hr, lr_ref, z)
    out: dict[str, dict[str, float]] = {}
    for mode, t in trainers.items():
        if mode == baseline:
            continue
        with torch.no_grad():
            err = {"output_max_abs": float((t.output(hr) - y_ref).abs().max())}
        err |= _compare(ref, t.gradients(hr, lr_ref, z))
        tol = BF16_TOL if mode == "bf16" else FLOAT32_TOL
        if err["output_max_abs"] > tol["output"] or err["grad_rel"] > tol["grad"]:
            raise SystemExit(f"irn_speed: mode {mode} differs from {baseline}: {err}")
        out[mode] = {k: float(f"{v:.3g}") for k, v in err.items()}
    return out


# ---------------------------------------------------------------------------------- workers


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def worker_time(args: argparse.Namespace) -> dict[str, Any]:
    """All modes of one scale in this process, checked, then steps interleaved; medians."""
    device, scale = args.device, args.scale
    checks = {"float64": check_float64(args, scale)}
    trainers = {mode: make_trainer(mode, scale, args) for mode in args.modes}
    hr, lr_ref = make_batch(scale, args.batch, args.patch, device)
    checks["float32"] = check_float32(trainers, args.baseline, hr, lr_ref, scale)
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
    for r in range(args.infer_repeats + 1 if args.infer_repeats > 0 else 0):  # 0: no inference
        for mode in order[r % len(order) :] + order[: r % len(order)]:
            elapsed = _timed(partial(trainers[mode].infer, image), device)
            if r > 0:  # the first round is a warm-up
                infer[mode].append(elapsed)
    result: dict[str, Any] = {
        mode: {
            "train_step_s": round(statistics.median(times[mode]), 4),
            "train_step_min_s": round(min(times[mode]), 4),
            "train_steps_s": [round(t, 4) for t in times[mode]],
        }
        | _inference(infer[mode])
        for mode in trainers
    }
    return result | {"checks": checks}


def _inference(runs: list[float]) -> dict[str, Any]:
    """The inference entries of a mode's timing: none when inference was not timed."""
    if not runs:
        return {}
    return {
        "infer_s": round(statistics.median(runs), 4),
        "infer_runs_s": [round(t, 4) for t in runs],
    }


def pooled_time(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The timing results of several worker processes, pooled.

    Medians and minimum over all steps of all processes; the step lists are concatenated in
    process order, so that step i of every mode still comes from the same round.
    """
    pooled: dict[str, Any] = {}
    for mode in runs[0]:
        if mode == "checks":
            continue
        steps = [t for run in runs for t in run[mode]["train_steps_s"]]
        infer = [t for run in runs for t in run[mode].get("infer_runs_s", [])]
        pooled[mode] = {
            "train_step_s": round(statistics.median(steps), 4),
            "train_step_min_s": round(min(steps), 4),
            "train_steps_s": steps,
            "train_step_s_per_process": [run[mode]["train_step_s"] for run in runs],
            **_inference(infer),
        }
    return pooled


def ratios_to(baseline: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every mode's times and memory divided by the baseline's, per scale."""
    ratios: dict[str, Any] = {}
    for scale_key, modes in results.items():
        base = modes.get(baseline, {})
        ratios[scale_key] = {}
        for mode, values in modes.items():
            if mode == baseline:
                continue
            ratio = {
                key: round(values[key] / base[key], 3)
                for key in ("train_step_s", "infer_s", "peak_mb")
                if key in values and base.get(key)
            }
            if "train_steps_s" in values and "train_steps_s" in base:
                # median over rounds of the ratio within a round: robust to load drift
                pairs = zip(values["train_steps_s"], base["train_steps_s"])
                ratio["train_step_paired"] = round(statistics.median(a / b for a, b in pairs), 3)
                ratio["train_step_min"] = round(
                    values["train_step_min_s"] / base["train_step_min_s"], 3
                )
            ratios[scale_key][mode] = ratio
    return ratios


def worker_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of training steps of one (scale, mode), alone in this fresh process."""
    device, scale, mode = args.device, args.scale, args.modes[0]
    trainer = make_trainer(mode, scale, args)
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
            net = IRN(2, blocks=[64]).to(dtype)
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


PROFILE_GROUPS: dict[str, tuple[str, ...]] = {
    "convolution backward": ("aten::convolution_backward",),
    "convolution forward": ("aten::mkldnn_convolution", "aten::cudnn_convolution"),
    "concatenation (`cat`)": ("aten::cat",),
    "copies (`copy_`)": ("aten::copy_",),
    "additions (`add`, `add_`)": ("aten::add", "aten::add_"),
    "LeakyReLU and its backward": (
        "aten::leaky_relu",
        "aten::leaky_relu_",
        "aten::leaky_relu_backward",
    ),
}
r"""Operations the profile table groups (self time); the rest is "everything else"."""


def profile(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Three training steps of `mode` under `torch.profiler`: print the table, return a summary.

    The summary has, per scale, the total self time, the self time of each `PROFILE_GROUPS`
    group and the number of convolution calls (forward), in seconds for the three steps.
    """
    from torch.profiler import ProfilerActivity, profile

    summary: dict[str, Any] = {}
    for scale in args.scales:
        trainer = make_trainer(mode, scale, args)
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
        events = prof.key_averages()
        print(events.table(sort_by=key, row_limit=args.profile_rows))
        self_s = {e.key: e.self_cpu_time_total / 1e6 for e in events}
        calls = {e.key: e.count for e in events}
        summary[f"x{scale}"] = {
            "total_s": sum(self_s.values()),
            "groups_s": {
                g: sum(self_s.get(n, 0.0) for n in ops) for g, ops in PROFILE_GROUPS.items()
            },
            "convolution_calls": sum(
                calls.get(n, 0) for n in PROFILE_GROUPS["convolution forward"]
            ),
        }
    return summary


# ---------------------------------------------------------------------------------- tables


def time_table(data: dict[str, Any]) -> list[str]:
    """Step and inference time of every mode and their ratios to the baseline (Markdown)."""
    scales = [k for k in data if k.startswith("x")]
    base = data["meta"]["baseline"]
    inference = all("infer_s" in data[k][m] for k in scales for m in data[k])  # 0 repeats: none
    head = "| mode |"
    for key in scales:
        x = key.replace("x", "×")
        head += f" {x} step (s) | {x} vs {base} |"
        if inference:
            head += f" {x} inference (s) | {x} inference vs {base} |"
    lines = [head, "|---" * (1 + (4 if inference else 2) * len(scales)) + "|"]
    for mode in data[scales[0]]:
        row = f"| `{mode}` |"
        for key in scales:
            t, r = data[key][mode], data["ratios"][key].get(mode)
            paired = f"{r['train_step_paired']:.3f}" if r else "1"
            row += f" {t['train_step_s']:.3f} | {paired} |"
            if inference:
                infer = f"{r['infer_s']:.3f}" if r else "1"
                row += f" {t['infer_s']:.2f} | {infer} |"
        lines.append(row)
    return lines


def memory_table(data: dict[str, Any]) -> list[str]:
    """Peak resident memory of every mode and its ratio to the baseline's (Markdown)."""
    base = data["meta"]["baseline"]
    lines = [
        f"| scale | mode | peak RSS (MiB) | before the first step (MiB) | peak vs {base} "
        f"| above the first step vs {base} |",
        "|---|---|---|---|---|---|",
    ]
    for key in (k for k in data if k.startswith("x")):
        b = data[key][base]
        for mode, m in data[key].items():
            above = (m["peak_mb"] - m["baseline_mb"]) / (b["peak_mb"] - b["baseline_mb"])
            lines.append(
                f"| {key.replace('x', '×')} | `{mode}` | {m['peak_mb']:,.0f} | "
                f"{m['baseline_mb']:,.0f} | {m['peak_mb'] / b['peak_mb']:.3f} | {above:.3f} |"
            )
    return lines


def profile_table(data: dict[str, Any]) -> list[str]:
    """Self time by group of operations of each profiled mode (Markdown)."""
    key = next(k for k in data if k.startswith("x"))
    modes = list(data[key])
    lines = [
        "| operation | " + " | ".join(f"`{m}` (s)" for m in modes) + " |",
        "|---" * (1 + len(modes)) + "|",
    ]
    rows = {g: [data[key][m]["groups_s"][g] for m in modes] for g in PROFILE_GROUPS}
    rest = [data[key][m]["total_s"] - sum(data[key][m]["groups_s"].values()) for m in modes]
    for name, values in [*rows.items(), ("everything else", rest)]:
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    totals = [data[key][m]["total_s"] for m in modes]
    lines.append("| total | " + " | ".join(f"{v:.3f}" for v in totals) + " |")
    calls = [data[key][m]["convolution_calls"] for m in modes]
    lines.append("| convolution calls | " + " | ".join(f"{c:,}" for c in calls) + " |")
    return lines


RESULTS = Path(__file__).resolve().parent / "results"


def tables() -> str:
    """The performance page's tables from the stored results (time, fixed cost, memory, profile)."""
    out = []
    for name, make in [
        ("irn_speed_time_cpu.json", time_table),
        ("irn_speed_time_amd_cpu.json", time_table),
        ("irn_speed_time_x8_cpu.json", time_table),
        ("irn_speed_time_patch8_cpu.json", time_table),
        ("irn_speed_memory_cpu.json", memory_table),
        ("irn_speed_profile_cpu.json", profile_table),
    ]:
        out += [*make(json.loads((RESULTS / name).read_text())), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- main


def _run_worker(
    kind: str, args: argparse.Namespace, scale: int, modes: list[str]
) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--scale", str(scale)]
    cmd += ["--modes", *modes, "--batch", str(args.batch), "--patch", str(args.patch)]
    cmd += ["--threads", str(args.threads), "--device", args.device]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    cmd += ["--infer-size", str(args.infer_size), "--infer-repeats", str(args.infer_repeats)]
    cmd += ["--baseline", args.baseline] + (["--original", args.original] if args.original else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"irn_speed: worker {kind} x{scale} {modes} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--original", default=None, help="checkout of the original IRN repository (mode original)"
    )
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
    parser.add_argument(
        "--infer-repeats", type=int, default=3, help="timed inference runs (0: none)"
    )
    parser.add_argument("--note", default=None, help="kept in meta (e.g. what else ran)")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    parser.add_argument("--profile", metavar="MODE", nargs="+", default=None)
    parser.add_argument("--profile-rows", type=int, default=20)
    parser.add_argument("--drift", action="store_true", help="measure inversion drift instead")
    parser.add_argument(
        "--tables", action="store_true", help="print the Markdown tables of the stored results"
    )
    hidden = argparse.SUPPRESS  # worker processes only
    parser.add_argument("--worker", choices=["time", "memory"], default=None, help=hidden)
    parser.add_argument("--scale", type=int, default=2, help=hidden)
    parser.add_argument("--baseline", default=None, help=hidden)
    args = parser.parse_args()
    configure_backends(threads=args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("irn_speed: --device cuda but CUDA is not available")
    if args.processes < 1:
        raise SystemExit(f"irn_speed: --processes must be at least 1, got {args.processes}")
    if args.patch % max([*args.scales, args.scale]) or args.infer_size % 8:
        raise SystemExit("irn_speed: --patch must be divisible by the scales, --infer-size by 8")
    if args.modes is None:
        args.modes = CUDA_MODES if args.device == "cuda" else CPU_MODES
        if args.original is None:
            args.modes = [m for m in args.modes if m != "original"]
    if args.baseline is None:
        args.baseline = BASELINE if BASELINE in args.modes else "paper"
        if args.baseline not in args.modes:
            args.modes = [args.baseline, *args.modes]
    if args.worker is not None:
        result = worker_time(args) if args.worker == "time" else worker_memory(args)
        print(json.dumps(result))
        return
    if args.tables:
        print(tables())
        return
    if args.profile is not None:
        summaries: dict[str, Any] = {f"x{s}": {} for s in args.scales}
        for mode in args.profile:  # one process: the modes see the same machine
            for key, summary in profile(args, mode).items():
                summaries[key][mode] = summary
        summaries["meta"] = {"batch": args.batch, "patch": args.patch, "threads": args.threads}
        summaries["meta"].update({**machine_meta(), "note": args.note})
        if args.out:
            print_json(summaries, args.out)
        return
    if args.drift:
        print(json.dumps(worker_drift(args), indent=2))
        return
    load_before = _load()
    results: dict[str, Any] = {f"x{s}": {m: {} for m in args.modes} for s in args.scales}
    checks: dict[str, Any] = {}
    for scale in args.scales:
        if "time" in args.measure:
            runs = [_run_worker("time", args, scale, args.modes) for _ in range(args.processes)]
            checks[f"x{scale}"] = runs[0]["checks"]
            for mode, values in pooled_time(runs).items():
                results[f"x{scale}"][mode].update(values)
        if "memory" in args.measure:
            for mode in args.modes:
                results[f"x{scale}"][mode].update(_run_worker("memory", args, scale, [mode]))
    results["ratios"] = ratios_to(args.baseline, results)
    results["checks"] = checks
    results["meta"] = {
        "baseline": args.baseline,
        "original": str(original_codes(args.original)) if args.original else None,
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "batch": args.batch,
        "patch": args.patch,
        "threads": args.threads,
        "repeats": args.repeats,
        "processes": args.processes,
        "infer_size": args.infer_size,
        **machine_meta(),
        "note": args.note,
        "load_before": load_before,
        "load_after": _load(),
    }
    print_json(results, args.out)


def machine_meta() -> dict[str, Any]:
    """torch version, processor and CPU count, for the `meta` of a benchmark's JSON."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"torch": torch.__version__, "machine": cpu, "cpus": os.cpu_count()}


def print_json(result: dict[str, Any], out: str | None) -> None:
    """Print `result` as JSON and, when `out` is given, write it there atomically."""
    text = json.dumps(result, indent=2)
    if out:
        with atomic_write(out) as tmp:
            tmp.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
