r"""Training the Invertible Rescaling Net from a `Config` (the recipe of the original code).

One step: a batch of aligned (HR, bicubic LR) patches → `irn_losses` (LR fit, latent term,
reconstruction from the quantised LR and a fresh $z$) and its gradients (`irn_backward`: on a
CPU the batch is cut into one shard per thread, run in parallel) → global gradient-norm clip →
Adam step → learning-rate schedule step (`flowlearn.irn.schedule.irn_scheduler`: `MultiStepLR`,
after an optional linear warm-up).

A run folder (`run.output`) holds:

* `checkpoint.pt` — everything a resumed run needs to continue **exactly** as if never stopped:
  weights, Adam and scheduler state, the step, the elapsed seconds, the sampler settings, the
  state of the generator that draws $z$, the torch/numpy/python global RNG states and the
  configuration. Written atomically (`flowlearn.images.io.atomic_write`) every
  `run.checkpoint_every` steps and when the call ends.
* `model.pt` — the weights in the package's checkpoint format (`flowlearn.irn.checkpoint.save`,
  with the step and the configuration as metadata), written when the call ends; what `load` and
  `flowlearn irn test --model` read.
* `config.yaml` — the configuration in use.
* `log.csv` — one row every `run.log_every` steps and at every validation: step, seconds (wall
  time of the run so far, validations included, summed over resumed calls), the
  mean losses since the previous row, the learning rate, and (at validation steps) the Set5-style
  Y-PSNR with sampled $z$ (mean of `run.validation_draws` draws), with $z = 0$, and of bicubic,
  and the RGB PSNR of the 8-bit LR against the bicubic LR (`lr_psnr_rgb`).

A non-finite loss or gradient norm stops the run with a `TrainingError` naming the step, before
any weight is changed; the last checkpoint on disk is the last good state.

Ctrl-C (SIGINT) lets the step in progress finish, writes `checkpoint.pt` of that step and
raises `TrainingInterrupted` (a `KeyboardInterrupt`); `resume=True` then goes on exactly as if
never stopped. A second Ctrl-C stops at once. While a run trains, it holds a lock on
`run.output/.lock` (`filelock`), so a second run into the same folder fails at once.

With `run.tensorboard` (and the `tensorboard` package), the losses, learning rate, gradient
norm, step time, validation results and image crops also go to TensorBoard event files in
`tensorboard/` (`flowlearn.irn.logging_tb`).

Launched by `torchrun` on several processes, `train` trains one model with
`DistributedDataParallel` (`flowlearn.irn.distributed`): `data.batch_size` is the global batch,
split over the processes, each sample gets the patch and the latent a one-process run would
give it, and rank 0 alone validates and writes the run folder, which records the number of
processes (`run.world_size`) in `config.yaml`, `checkpoint.pt` and `model.pt`. A run may be
resumed on another number of processes: it continues with the same batches and latents, and
gradients equal up to float round-off.

References:
    M. Xiao et al., 2020, "Invertible Image Rescaling", ECCV 2020, arXiv:2005.05650, §3.3 (the
    objective) and §4.1 (training details). The original code,
    github.com/pkuxmq/Invertible-Image-Rescaling: codes/models/IRN_model.py
    (`optimize_parameters`: one step) and codes/options/train/train_IRN_x4.yml (the recipe).
"""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from filelock import FileLock, Timeout
from torch import nn
from tqdm import tqdm

from flowlearn.images.io import atomic_write, make_folder
from flowlearn.irn import distributed
from flowlearn.irn.checkpoint import TRAINING_FORMAT, load, save
from flowlearn.irn.config import Config, ConfigError
from flowlearn.irn.data import IRNTrainSet, train_loader
from flowlearn.irn.evaluate import evaluate_folder
from flowlearn.irn.fast import accelerate, irn_backward
from flowlearn.irn.gan import DISCRIMINATOR_TERMS, GENERATOR_TERMS, IRNPlusStage
from flowlearn.irn.logging_tb import TensorBoardLog, tensorboard_missing, validation_crops
from flowlearn.irn.model import IRN
from flowlearn.irn.schedule import (
    irn_scheduler,
    load_scheduler_state,
    scheduler_state,
)
from flowlearn.irn.speed import cpu_has_bf16

__all__ = [
    "LOG_COLUMNS",
    "TrainResult",
    "TrainingError",
    "TrainingInterrupted",
    "build_model",
    "clip_gradients",
    "irn_optimizer",
    "resolve_device",
    "train",
    "validate",
]

LOG_COLUMNS = (
    "step",
    "seconds",
    "fit",
    "distr",
    "rec",
    "total",
    "lr",
    "psnr_y_sampled",
    "psnr_y_zero",
    "psnr_y_bicubic",
    "lr_psnr_rgb",
)
LOSS_NAMES = ("fit", "distr", "rec", "total")
GAN_LOSS_NAMES = GENERATOR_TERMS + DISCRIMINATOR_TERMS
r"""The losses of an IRN+ run (`gan.discriminator` set), logged after `LOG_COLUMNS`."""
CHECKPOINT_FORMAT = TRAINING_FORMAT  # checkpoint.pt, which flowlearn.irn.checkpoint.load reads


class TrainingError(RuntimeError):
    r"""A training run that cannot start or continue (existing run, non-finite loss, …)."""


class TrainingInterrupted(KeyboardInterrupt):
    r"""Training stopped by Ctrl-C (SIGINT) after the checkpoint of the last finished step.

    Attributes:
        step: the step saved in `checkpoint`.
        checkpoint: the path of `checkpoint.pt`.
    """

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"checkpoint of step {step} in {checkpoint}; continue with --resume")
        self.step, self.checkpoint = step, checkpoint


class _StopRequest:
    r"""Turns the first SIGINT into a request to stop after the current step (main thread only).

    A second SIGINT raises `KeyboardInterrupt` at once. The previous handler is restored on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupted: finishing the current step and saving a checkpoint "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _run_lock(out: Path, main: bool) -> FileLock | None:
    r"""Lock the run folder `out` (rank 0 only); fail at once if another run holds it."""
    if not main:
        return None
    make_folder(out, "run.output")
    lock = FileLock(out / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TrainingError(
            f"another training run is using {out} (it holds {out / '.lock'}); wait for it to "
            "finish or choose another run.output"
        ) from None
    return lock


@dataclass
class TrainResult:
    r"""What `train` returns.

    Attributes:
        model: the trained network (in eval mode, on the training device).
        step: global step reached.
        output: the run folder.
        checkpoint: path of `checkpoint.pt`.
        model_path: path of `model.pt`.
        log_csv: path of the CSV log.
        losses: total loss of every step run by this call, in order.
        validation: the validation results of this call, one dict per validation step.
        rank: this process's rank under `torchrun` (0 otherwise); rank 0 wrote the run folder.
    """

    model: IRN
    step: int
    output: Path
    checkpoint: Path
    model_path: Path
    log_csv: Path
    losses: list[float] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    rank: int = 0


def resolve_device(name: str) -> torch.device:
    r"""`"cpu"`, `"cuda"` or `"auto"` (CUDA when available) → a `torch.device`.

    Raises:
        ConfigError: `"cuda"` asked for where torch sees no CUDA device.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name)


def validate(
    model: IRN | None, folder: str | os.PathLike[str], scale: int, *, draws: int = 5
) -> dict[str, float]:
    r"""Mean Y-PSNR of a folder under the test protocol (`flowlearn.irn.evaluate`, paper §4.1).

    Args:
        model: the network, or None for the bicubic baseline.
        folder: HR images.
        scale: rescaling factor.
        draws: latent draws averaged for the sampled-$z$ PSNR.

    Returns:
        `{"psnr_y_sampled", "psnr_y_zero", "ssim_y_sampled", "ssim_y_zero", "lr_psnr_rgb"}` for
        a model (sampled $z$ at temperature 1, and $z = 0$; `lr_psnr_rgb`: the 8-bit LR against
        the 8-bit bicubic LR, over R, G and B, which shows an LR drifting in colour while the
        training losses look normal), `{"psnr_y_bicubic", "ssim_y_bicubic"}` for None. Global
        RNG states are left untouched.
    """
    devices = [] if model is None else [p.device for p in model.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=devices):
        if model is None:
            result = evaluate_folder(None, folder, scale, draws=1, seed=0, progress=False)
            return {
                "psnr_y_bicubic": float(result["mean"]["psnr_y"]),
                "ssim_y_bicubic": float(result["mean"]["ssim_y"]),
            }
        was_training = model.training
        model.eval()
        try:
            sampled = evaluate_folder(model, folder, scale, draws=draws, seed=0, progress=False)
            zero = evaluate_folder(
                model, folder, scale, draws=1, seed=0, temperature=0.0, progress=False
            )
        finally:
            model.train(was_training)
    return {
        "psnr_y_sampled": float(sampled["mean"]["psnr_y"]),
        "psnr_y_zero": float(zero["mean"]["psnr_y"]),
        "ssim_y_sampled": float(sampled["mean"]["ssim_y"]),
        "ssim_y_zero": float(zero["mean"]["ssim_y"]),
        "lr_psnr_rgb": float(sampled["mean"]["lr_psnr_rgb"]),
    }


def irn_optimizer(
    params: Iterable[nn.Parameter],
    *,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 1e-5,
) -> torch.optim.Adam:
    r"""Adam as the IRN recipe uses it (L2 weight decay), in PyTorch's fused implementation.

    The fused Adam updates every parameter in one kernel per step instead of about ten small
    operations per parameter tensor; an IRN has 240 (×2) to 720 (×8) of them. In a profile of
    an ×4 training step on a 2-core CPU (batch 4, 64×64) Adam and clipping took 19 ms instead of
    42 ms, about 2 % of the step (see the performance page). The update is the same formula
    (Kingma & Ba, 2015, Algorithm 1), equal up to float round-off. Parameters that fused Adam
    cannot handle (a device or dtype it lacks) get the ordinary implementation.

    Examples:
        >>> from flowlearn import IRN
        >>> opt = irn_optimizer(IRN(2, blocks=[1], growth=4).parameters())
        >>> opt.defaults["fused"], opt.defaults["lr"]
        (True, 0.0002)
    """
    params = list(params)
    fused = all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64)
        for p in params
    )
    return torch.optim.Adam(
        params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True if fused else None
    )


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`; the norm.

    `torch.nn.utils.clip_grad_norm_` with its multi-tensor (`foreach`) kernels, which the CPU
    would otherwise not use. Parameters without a gradient are skipped (none at all: 0).
    """
    return float(nn.utils.clip_grad_norm_(params, max_norm, foreach=True))


def _rng_state() -> dict[str, Any]:
    r"""Global RNG states as tensors and plain values (loadable with `weights_only=True`)."""
    # The legacy global numpy RNG is what user code may draw from; saved so resume is exact.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _CsvLog:
    r"""The CSV learning curve; on resume, rows past the checkpoint step are dropped."""

    def __init__(
        self, path: Path, resume_step: int | None, columns: tuple[str, ...] = LOG_COLUMNS
    ) -> None:
        self.path, self.columns = path, columns
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]

        def write(f: Any) -> None:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)

        with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
            write(f)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def build_model(cfg: Config, device: torch.device | str = "cpu") -> IRN:
    r"""The model a run of `cfg` starts from, before its first step.

    Initialised as the original code does it (`torch.manual_seed(data.seed)` first, without
    touching the caller's random state), arranged for speed as `run` asks, then loaded with
    `model.init` when given: a file if the path exists, else a shipped model name (`"x4"`).
    """
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.data.seed)  # the initialisation is part of the recipe
        model = IRN(
            m.scale,
            blocks=m.blocks,
            clamp=m.clamp,
            growth=m.growth,
            memory_saving=cfg.run.memory_saving,
        )
    # the fast arrangement of the same arithmetic; bf16: sub-networks only (exponent, log-det
    # and losses stay float32)
    accelerate(model, channels_last=cfg.run.channels_last, bf16=cfg.run.bf16)
    if m.init is not None:
        init = m.init if m.init.exists() else str(m.init)  # "x4": the shipped model
        model.load_state_dict(load(init, scale=m.scale).state_dict())
    return model.to(torch.device(device))


def train(
    config: Config,
    *,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    r"""Train (or continue training) an IRN as configured; see the module docstring.

    Args:
        config: the configuration (`load_config`).
        resume: continue from `run.output/checkpoint.pt` exactly where it stopped.
        progress: show a tqdm bar with the running losses.
        max_steps: stop when the global step reaches this (the schedule still ends at
            `optim.steps`, so a later `resume=True` call goes on as one run would).
        max_seconds: also stop after this much training time in this call.

    Returns:
        The trained model, the step reached, the paths written and this call's losses.

    Raises:
        ConfigError: `data.train` unset, CUDA unavailable, bad `model.init`, a global batch
            that the processes do not divide, or `run.world_size` unlike the launch.
        TrainingError: an existing run without `resume`, `resume` without a checkpoint or
            with another model/training set, or a non-finite loss/gradient (naming the step).
    """
    processes = distributed.start(resolve_device(config.run.device))
    lock = None
    try:
        out = Path(config.run.output)
        if not resume or out.is_dir():
            lock = _run_lock(out, processes.main)
        with _StopRequest() as stop:
            return _train(
                config,
                processes,
                resume=resume,
                progress=progress,
                max_steps=max_steps,
                max_seconds=max_seconds,
                stop=stop,
            )
    finally:
        if lock is not None:
            lock.release()
        processes.close()


def _train(
    config: Config,
    processes: distributed.Processes,
    *,
    resume: bool,
    progress: bool,
    max_steps: int | None,
    max_seconds: float | None,
    stop: _StopRequest,
) -> TrainResult:
    device, main, world = processes.device, processes.main, processes.world_size
    if config.run.world_size not in (None, world):
        raise ConfigError(
            f"run.world_size is {config.run.world_size}, but the run was started as {world} "
            f"process(es); launch torchrun --nproc_per_node=... for {config.run.world_size} "
            "in all, or set run.world_size=null"
        )
    try:
        part = processes.local_part(config.data.batch_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # the number of processes is recorded in the run folder
    cfg = replace(config, run=replace(config.run, world_size=world))
    if cfg.data.train is None:
        raise ConfigError(
            "set data.train to a folder of training images "
            "(in the configuration, or with --set data.train=FOLDER)"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.run.cudnn_benchmark
    if cfg.run.bf16 and device.type == "cpu" and cpu_has_bf16() is False:
        warnings.warn(
            "run.bf16 on a CPU without bfloat16 instructions (AVX512-BF16 or AMX): the "
            "bfloat16 sub-networks will be slower than float32 here; set run.bf16=false",
            stacklevel=2,
        )
    out = Path(cfg.run.output)
    ckpt_path, model_path, log_path = out / "checkpoint.pt", out / "model.pt", out / cfg.run.log_csv
    if resume and not ckpt_path.is_file():
        raise TrainingError(f"nothing to resume: no checkpoint at {ckpt_path}")
    if not resume and ckpt_path.is_file():
        raise TrainingError(
            f"{out} already holds a run ({ckpt_path.name}); resume it (--resume) "
            "or choose another run.output"
        )
    plus = None
    if cfg.gan.discriminator is not None:  # IRN+; missing VGG weights stop the run here
        if world > 1:
            raise ConfigError("IRN+ (gan.discriminator) trains in one process, not under torchrun")
        plus = IRNPlusStage(cfg, device)
    loss_names = LOSS_NAMES if plus is None else GAN_LOSS_NAMES
    make_folder(out, "run.output")

    dataset = IRNTrainSet(
        cfg.data.train,
        cfg.model.scale,
        cfg.data.patch_size,
        flips=cfg.data.flips,
        rotations=cfg.data.rotations,
        prescale=cfg.data.prescale,
        recolour=cfg.data.recolour,
        noise=cfg.data.noise,
        noise_level=cfg.data.noise_level,
    )
    model = build_model(cfg, device).train()
    if cfg.run.compile:
        from flowlearn.irn.speed import compile_subnets

        compile_subnets(model, device=device)
    o = cfg.optim
    optimizer = irn_optimizer(
        model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
    )
    scheduler = irn_scheduler(optimizer, o.milestones, gamma=o.gamma, warmup=o.warmup)
    z_generator = torch.Generator(device=device).manual_seed(cfg.data.seed + 1)
    step, seconds = 0, 0.0
    if resume:
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, empty or not a checkpoint at all
            raise TrainingError(
                f"cannot read {ckpt_path} ({type(err).__name__}: {_first_line(err)}); it is "
                "damaged: restore it from a copy, or remove the run folder and start again"
            ) from None
        _check_resumable(state, cfg, len(dataset), ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        load_scheduler_state(scheduler, state["scheduler"])
        z_generator.set_state(state["z_generator"])
        _set_rng_state(state["rng"])
        step, seconds = int(state["step"]), float(state["seconds"])
        if ("gan" in state) != (plus is not None):
            was = state["config"].get("gan", {}).get("discriminator")
            raise TrainingError(
                f"{ckpt_path} is {'an IRN+' if 'gan' in state else 'a plain IRN'} run; resume "
                f"it with gan.discriminator as it was ({was})"
            )
        if plus is not None:
            plus.load_state_dict(state["gan"])
    objective = None
    if world > 1:  # the rank's part of the batch in one piece: DDP hooks one backward pass
        objective = processes.wrap(
            distributed.DistributedObjective(
                model,
                lambda_fit=cfg.lambda_fit,
                lambda_rec=cfg.loss.lambda_rec,
                lambda_ce=cfg.loss.lambda_ce,
            )
        )
    log, board = None, None
    if main:
        with atomic_write(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg.to_dict()))
        log = _CsvLog(
            log_path,
            step if resume else None,
            LOG_COLUMNS + tuple(n for n in loss_names if n not in LOSS_NAMES),
        )
        missing = tensorboard_missing() if cfg.run.tensorboard else None
        if missing:
            warnings.warn(f"run.tensorboard: {missing}; logging to {log_path} only", stacklevel=2)
        elif cfg.run.tensorboard:
            board = TensorBoardLog(out / "tensorboard", start_step=step)

    def save_checkpoint() -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "step": step,
            "seconds": seconds,
            "model": model.state_dict(),
            "model_config": dict(model.config),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler_state(scheduler),
            "sampler": {"seed": cfg.data.seed, "num_images": len(dataset)},
            "world_size": world,
            "batch_size": {"global": cfg.data.batch_size, "per_process": part.stop - part.start},
            "z_generator": z_generator.get_state(),
            "rng": _rng_state(),
            "config": cfg.to_dict(),
        }
        if plus is not None:  # the discriminator, its optimiser and schedule
            state["gan"] = plus.state_dict()
        with atomic_write(ckpt_path) as tmp:
            torch.save(state, tmp)

    end = o.steps if max_steps is None else min(o.steps, max_steps)
    r = cfg.run
    validating = r.validation is not None and r.validate_every > 0
    bicubic: dict[str, float] = {}
    result = TrainResult(model, step, out, ckpt_path, model_path, log_path, rank=processes.rank)
    sums = dict.fromkeys(loss_names, 0.0)
    count = 0
    pin = cfg.data.pin_memory and device.type == "cuda"
    loader = train_loader(
        dataset,
        cfg.data.batch_size,
        seed=cfg.data.seed,
        start_step=step,
        workers=cfg.data.workers,
        rank=processes.rank,
        world_size=world,
        pin_memory=pin,
    )
    bar = tqdm(
        total=end, initial=step, disable=not (progress and main), desc=f"IRN x{cfg.model.scale}"
    )
    norms, step_seconds = 0.0, 0.0
    batches = iter(loader)
    started = time.perf_counter() - seconds
    call_started = time.perf_counter()
    try:
        while step < end:
            if processes.any(stop.requested):  # Ctrl-C: the last finished step is kept
                if main:
                    save_checkpoint()
                processes.barrier()
                raise TrainingInterrupted(step, ckpt_path)
            tick = time.perf_counter()
            hr, lr_ref = next(batches)
            hr, lr_ref = hr.to(device, non_blocking=pin), lr_ref.to(device, non_blocking=pin)
            optimizer.zero_grad(set_to_none=True)
            if plus is not None:  # IRN+: the IRN's gradients (after D's warm-up), then D's
                losses: Any = plus.backward(model, hr, lr_ref, step=step + 1, generator=z_generator)
            elif objective is None:
                losses = irn_backward(
                    model,
                    hr,
                    lr_ref,
                    generator=z_generator,
                    lambda_fit=cfg.lambda_fit,
                    lambda_rec=cfg.loss.lambda_rec,
                    lambda_ce=cfg.loss.lambda_ce,
                    shards=cfg.run.shards if device.type == "cpu" else 1,
                )
            else:
                losses = distributed.distributed_backward(
                    objective,
                    hr,
                    lr_ref,
                    batch_size=cfg.data.batch_size,
                    part=part,
                    generator=z_generator,
                )
            values = {name: float(getattr(losses, name).detach()) for name in loss_names}
            values = processes.mean(values)  # the global batch's (the same on every rank)
            if not math.isfinite(values["total"]):
                _fail(f"the loss is {values['total']} ({_fmt(values)})", step + 1, ckpt_path)
            if plus is not None and not math.isfinite(values["d_total"]):
                problem = f"the discriminator's loss is {values['d_total']} ({_fmt(values)})"
                _fail(problem, step + 1, ckpt_path)
            norm = clip_gradients(model.parameters(), o.grad_clip)
            if not math.isfinite(norm):
                _fail(f"the gradient norm is {norm} ({_fmt(values)})", step + 1, ckpt_path)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            if plus is not None:
                plus.step()  # the discriminator's Adam and schedule
            step += 1
            seconds = time.perf_counter() - started
            norms, step_seconds = norms + norm, step_seconds + time.perf_counter() - tick
            result.losses.append(values["total"])
            for name in loss_names:
                sums[name] += values[name]
            count += 1
            bar.update(1)
            if step % 10 == 0 or step == end:
                bar.set_postfix({k: f"{v / count:.4g}" for k, v in sums.items()})

            row: dict[str, Any] = {}
            validation_step = validating and step % r.validate_every == 0
            if validation_step and main:
                assert r.validation is not None
                if not bicubic:
                    bicubic = validate(None, r.validation, cfg.model.scale)
                # validated in float32, as the weights are used
                accelerate(model, channels_last=r.channels_last, bf16=False)
                row = validate(model, r.validation, cfg.model.scale, draws=r.validation_draws)
                accelerate(model, channels_last=r.channels_last, bf16=r.bf16)
                row.update(bicubic)
                result.validation.append({"step": step, **row})
                if board is not None:
                    board.validation(step, row, validation_crops(model, r.validation))
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
                seconds = time.perf_counter() - started
            out_of_time = (
                max_seconds is not None and time.perf_counter() - call_started >= max_seconds
            )
            if max_seconds is not None:
                out_of_time = processes.any(out_of_time)  # every rank stops at the same step
            if out_of_time:
                end = step
            if validation_step or step % r.log_every == 0 or step == end:
                means = {k: v / count for k, v in sums.items()}
                if log is not None:
                    log.append({"step": step, "seconds": seconds, **means, "lr": lr, **row})
                if board is not None:
                    board.training(
                        step,
                        means,
                        lr=lr,
                        grad_norm=norms / count,
                        seconds_per_step=step_seconds / count,
                        batch_size=cfg.data.batch_size,
                    )
                sums, count = dict.fromkeys(loss_names, 0.0), 0
                norms, step_seconds = 0.0, 0.0
            checkpoint_step = step % r.checkpoint_every == 0 or step == end
            if checkpoint_step and main:
                save_checkpoint()
            if validation_step or checkpoint_step:
                processes.barrier()  # the others wait (on a CPU group) while rank 0 works
        if main:
            save(model, model_path, metadata={"step": step, "training_config": cfg.to_dict()})
        processes.barrier()
    finally:
        bar.close()
        if board is not None:
            board.close()
    result.step = step
    accelerate(model, channels_last=cfg.run.channels_last, bf16=False)
    model.eval()
    return result


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items())


def _fail(problem: str, step: int, ckpt_path: Path) -> None:
    if ckpt_path.is_file():
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)["step"]
        kept = f"the last good checkpoint is {ckpt_path} (step {saved})"
    else:
        kept = "no checkpoint was written yet"
    raise TrainingError(f"training stopped at step {step}: {problem}; {kept}")


def _check_resumable(state: dict[str, Any], cfg: Config, num_images: int, path: Path) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a flowlearn training checkpoint")
    if state["config"]["model"] != cfg.to_dict()["model"]:
        raise TrainingError(
            f"{path} was trained with model settings {state['config']['model']}, "
            f"not {cfg.to_dict()['model']}"
        )
    warmup = state["config"]["optim"].get("warmup", 0)  # checkpoints from before the option: 0
    if warmup != cfg.optim.warmup:
        raise TrainingError(
            f"{path} was trained with optim.warmup = {warmup}, not {cfg.optim.warmup}: the "
            "learning-rate schedule is part of the run; resume it with the same warm-up"
        )
    saved = state["sampler"]
    if (saved["seed"], saved["num_images"]) != (cfg.data.seed, num_images):
        raise TrainingError(
            f"{path} was trained on {saved['num_images']} images with seed {saved['seed']}; "
            f"now {num_images} images with seed {cfg.data.seed}: resuming would not be exact"
        )
