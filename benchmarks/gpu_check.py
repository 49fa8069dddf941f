"""GPU readiness of IRN training: equivalence on the device, timed training, torchrun; one JSON.

Usage:
    bash benchmarks/gpu_check.sh [--json FILE] [--steps 60] [--warmup 20] [--scales 2 4]
    bash benchmarks/gpu_check.sh --dry-run          # CPU, tiny sizes: the script runs (CI)
    python benchmarks/gpu_check.py --scaling-only --device cpu --processes 2 ...

Four parts, each recorded in the JSON (default `benchmarks/results/gpu_check.json`; a dry run
writes to a temporary folder unless `--json` is given):

1. `environment`: torch, CUDA and cuDNN versions, the GPUs.
2. `equivalence`: the reference tensors of the original implementation (x2 and x4: forward,
   inverse, losses, gradient norm), recomputed on the device, paper form and fast form
   (`flowlearn.irn.fast.accelerate`), largest differences; then one training step's losses
   and gradients on the device against the CPU, in float32 and with bfloat16 sub-networks.
   The reference tensors are read from `--fixtures` (skipped, and said so, when absent).
3. `training`: `flowlearn irn train` on synthetic images, each variant in a fresh process, the
   paper's batch (16 patches of 144²) by default: float32, bfloat16 sub-networks,
   `torch.compile` of the sub-networks, both, the ordinary memory layout instead of
   channels-last, cuDNN's autotuner off, and loading in the training process without pinned
   memory. Time per step from the run's own CSV log (the mean over the steps after
   `--warmup`, so compilation and autotuning are left out), samples per second, peak memory.
4. `torchrun`: the float32 run on 2 processes (2 GPUs, when there are 2; on a CPU, 2 gloo
   processes), `torchrun --nproc_per_node=2 -m flowlearn irn train`, against 1 process: the
   scaling of samples per second.

`--scaling-only` runs part 4 alone, with `--processes` (1 and this many) and `--threads`
(threads per process; the one-process run gets `processes × threads`), for the scaling section
of the performance page measured on a CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from flowlearn.checks import jitter_parameters
from flowlearn.images.io import write_image, write_json
from flowlearn.irn.fast import accelerate
from flowlearn.irn.losses import irn_losses
from flowlearn.irn.model import IRN

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "irn_reference"

# name -> `--set` overrides on top of the float32 baseline
VARIANTS: dict[str, list[str]] = {
    "float32": [],
    "bf16": ["run.bf16=true"],
    "compile": ["run.compile=true"],
    "bf16_compile": ["run.bf16=true", "run.compile=true"],
    "nchw": ["run.channels_last=false"],
    "no_cudnn_benchmark": ["run.cudnn_benchmark=false"],
    "no_workers_no_pin": ["data.workers=0", "data.pin_memory=false"],
}
MAIN_VARIANTS = ["float32", "bf16", "compile", "bf16_compile"]  # at every scale
SWITCH_VARIANTS = ["nchw", "no_cudnn_benchmark", "no_workers_no_pin"]  # at the largest scale
CPU_VARIANTS = ["float32", "bf16", "nchw"]  # where the GPU switches do nothing
DRY_VARIANTS = {2: ["float32", "bf16"], 4: ["float32"]}

# Runs `flowlearn irn train`, then writes the process's peak memory beside the run's log.
CHILD = """
import json, resource, sys
from pathlib import Path
import torch
from flowlearn.cli import main
try:
    status = main(sys.argv[1:])
finally:
    out = Path(sys.argv[sys.argv.index("--output") + 1])
    peak = {"cpu_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak["cuda_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    if out.is_dir():
        (out / "peak_memory.json").write_text(json.dumps(peak))
sys.exit(status)
"""


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_min": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


# ----------------------------------------------------------------------------- equivalence


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def _grad_norm(net: torch.nn.Module) -> float:
    grads = [p.grad.detach().double().norm() for p in net.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm())


def fixture_equivalence(
    device: torch.device, folder: Path, scales: tuple[str, ...] = ("x2", "x4")
) -> dict[str, Any]:
    """The original implementation's reference tensors, recomputed on `device`."""
    if not (folder / "irn_x4_seed0.pt").is_file():
        return {"skipped": f"no reference tensors in {folder} (pass --fixtures)"}
    x4 = torch.load(folder / "irn_x4_seed0.pt", weights_only=True)
    x2 = dict(torch.load(folder / "irn_x2_seed0.pt", weights_only=True))
    x2["state_dict"] = {k: x4["state_dict"][k] for k in x2["state_dict_keys"]}
    out: dict[str, Any] = {}
    for name, ref in (("x2", x2), ("x4", x4)):
        if name not in scales:
            continue
        for form in ("paper", "fast"):
            net = IRN(ref["config"]["scale"])
            net.load_state_dict({k: v for k, v in ref["state_dict"].items() if "haar" not in k})
            if form == "fast":
                accelerate(net)
            net = net.to(device)
            x, z = ref["x"].to(device), ref["z_sample"].to(device)
            with torch.no_grad():
                y, _ = net(x)
                back, _ = net.inverse(ref["inverse_in"].to(device))
            losses = irn_losses(net, x, ref["lr_ref_bicubic"].to(device), z=z)
            losses.total.backward()
            out[f"{name}_{form}"] = {
                "forward_max_abs": _max_diff(y, ref["forward_out"]),
                "inverse_max_abs": _max_diff(back, ref["inverse_out"]),
                "loss_total_rel": _rel(float(losses.total.detach()), float(ref["loss_total"])),
                "grad_norm_rel": _rel(_grad_norm(net), float(ref["loss_grad_norm_before_clip"])),
            }
    return out


def device_vs_cpu(
    device: torch.device, scale: int = 4, *, batch: int = 4, size: int = 64, tiny: bool = False
) -> dict[str, Any]:
    """One training step's losses and gradients on `device` against the CPU (float32, bf16)."""
    torch.manual_seed(0)
    levels = int(math.log2(scale))
    cpu = IRN(scale, blocks=[1] * levels, growth=8) if tiny else IRN(scale)
    cpu = jitter_parameters(cpu, scale=0.02)
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(batch, 3, size, size, generator=g)
    lr_ref = torch.nn.functional.avg_pool2d(hr, scale)
    z = torch.randn(batch, cpu.latent_channels, size // scale, size // scale, generator=g)
    reference = irn_losses(cpu, hr, lr_ref, z=z)
    reference.total.backward()
    want = torch.cat([p.grad.flatten() for p in cpu.parameters() if p.grad is not None])
    out: dict[str, Any] = {}
    for bf16 in (False, True):
        net = IRN(scale, blocks=cpu.blocks, growth=cpu.growth)
        net.load_state_dict(cpu.state_dict())
        net = accelerate(net, bf16=bf16).to(device)
        losses = irn_losses(net, hr.to(device), lr_ref.to(device), z=z.to(device))
        losses.total.backward()
        got = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        out["bf16" if bf16 else "float32"] = {
            "loss_total_rel": _rel(float(losses.total.detach()), float(reference.total.detach())),
            "grad_rel_l2": float((got.cpu() - want).norm() / want.norm()),
        }
    return out


# ----------------------------------------------------------------------------- training runs


def make_images(folder: Path, count: int, size: int) -> Path:
    """`count` smooth random RGB images of `size`², as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
        image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
        write_image(folder / f"{i:03d}.png", image[0].clamp(0, 1))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed_run(
    base: list[str],
    overrides: list[str],
    *,
    output: Path,
    steps: int,
    warmup: int,
    batch_size: int,
    processes: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """`flowlearn irn train` in fresh processes; time per step after `warmup` from its log."""
    launcher = [sys.executable, "-c", CHILD]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "flowlearn",
        ]
    command = [*launcher, "irn", "train", *base, "--output", str(output), "--steps", str(steps)]
    command += ["--quiet", "--set", f"run.log_every={warmup}"]
    for setting in overrides:
        command += ["--set", setting]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "command": command}
    with (output / "log.csv").open(newline="") as f:
        rows = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(f)]
    (first_step, first_s), (last_step, last_s) = rows[0], rows[-1]
    per_step = (last_s - first_s) / (last_step - first_step)
    result = {
        "overrides": overrides,
        "processes": processes,
        "threads_per_process": threads,
        "steps_timed": last_step - first_step,
        "seconds_per_step": per_step,
        "samples_per_second": batch_size / per_step,
        "wall_seconds": wall,
    }
    peak = output / "peak_memory.json"
    if peak.is_file():
        result["peak_memory_mb"] = json.loads(peak.read_text())
    return result


def training(
    args: argparse.Namespace, device: torch.device, work: Path, record: dict[str, Any]
) -> None:
    """Each variant at each scale into `record` (saved after every run)."""
    images = make_images(work / "images", args.images, args.image_size)
    for scale in args.scales:
        if args.variants:
            names = args.variants
        elif args.dry_run:
            names = DRY_VARIANTS[scale]
        elif device.type == "cpu":
            names = CPU_VARIANTS
        else:
            names = MAIN_VARIANTS + (SWITCH_VARIANTS if scale == max(args.scales) else [])
        base = base_command(args, scale, images, device)
        for name in names:
            print(f"x{scale} {name} ...", flush=True)
            record[f"x{scale}_{name}"] = timed_run(
                base,
                VARIANTS[name],
                output=work / f"x{scale}_{name}",
                steps=args.steps,
                warmup=args.warmup,
                batch_size=args.batch,
                threads=args.threads,
            )
            args.save()


def base_command(
    args: argparse.Namespace, scale: int, images: Path, device: torch.device
) -> list[str]:
    config = "tiny" if args.dry_run else f"x{scale}"
    base = ["--config", config, "--data", str(images), "--device", device.type]
    for setting in (
        f"data.patch_size={args.patch}",
        f"data.batch_size={args.batch}",
        f"data.workers={args.workers}",
        "run.validation=null",
        "run.tensorboard=false",
        f"run.checkpoint_every={10 * args.steps}",
        f"optim.steps={10 * args.steps}",
    ):
        base += ["--set", setting]
    if args.dry_run and scale != 2:  # the tiny model at another scale: 1 block per level
        levels = int(math.log2(scale))
        base += ["--set", f"model.scale={scale}", "--set", f"model.blocks={[1] * levels}"]
    return base


def scaling(
    args: argparse.Namespace, device: torch.device, work: Path, out: dict[str, Any]
) -> None:
    """Samples per second of 1 process and of `--processes` processes, same global batch."""
    images = make_images(work / "images", args.images, args.image_size)
    n = args.processes
    if device.type == "cuda" and torch.cuda.device_count() < n:
        out["skipped"] = f"{torch.cuda.device_count()} GPU(s); {n} needed"
        return
    for scale in args.scaling_scales or args.scales:
        base = base_command(args, scale, images, device)
        threads = args.threads
        runs: dict[str, list[dict[str, Any]]] = {}
        for repeat in range(args.repeats):  # alternate, so a load change hits both alike
            for p in (1, n):
                key = f"{p}_process" + ("es" if p > 1 else "")
                print(f"x{scale} {key} (round {repeat + 1}) ...", flush=True)
                one_threads = None if threads is None else threads * (n if p == 1 else 1)
                run = timed_run(
                    base,
                    [],
                    output=work / f"scaling_x{scale}_{p}_{repeat}",
                    steps=args.steps,
                    warmup=args.warmup,
                    batch_size=args.batch,
                    processes=p,
                    threads=one_threads,
                )
                runs.setdefault(key, []).append(run)
        summary: dict[str, Any] = {"runs": runs}
        for key, rs in runs.items():
            ok = [r["samples_per_second"] for r in rs if "samples_per_second" in r]
            summary[f"{key}_samples_per_second_best"] = max(ok) if ok else None
        one, many = (
            summary["1_process_samples_per_second_best"],
            summary[f"{n}_processes_samples_per_second_best"],
        )
        summary["speedup"] = many / one if one and many else None
        out[f"x{scale}"] = summary
        args.save()


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, few steps")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="the global batch")
    parser.add_argument("--patch", type=int, default=144)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--images", type=int, default=32, help="synthetic training images")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--processes", type=int, default=2, help="for the torchrun part")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the scaling runs")
    parser.add_argument("--scaling-only", action="store_true")
    parser.add_argument("--scaling-scales", type=int, nargs="+", default=None)
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--work", type=Path, default=None, help="folder for images and runs")
    args = parser.parse_args()
    if args.dry_run:
        args.device = "cpu"
        args.scales, args.steps, args.warmup = [2, 4], 3, 1
        args.batch, args.patch, args.workers = 4, 32, 0
        args.images, args.image_size = 4, 64
        args.scaling_scales = [2]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    json_path = args.json
    if json_path is None:
        json_path = (
            Path(tempfile.mkdtemp()) / "gpu_check.json"
            if args.dry_run
            else ROOT / "benchmarks" / "results" / "gpu_check.json"
        )
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "settings": {  # the folders used are this machine's business
            k: v for k, v in vars(args).items() if not isinstance(v, Path) and k != "save"
        },
        "environment": environment(device),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a run cut short still leaves its results
        write_json(json_path, report)

    args.save = save
    began = time.perf_counter()
    if not args.scaling_only:
        print("equivalence ...", flush=True)
        if args.dry_run:  # the small reference only, a tiny model against the CPU
            report["equivalence"] = {
                "fixtures": fixture_equivalence(device, args.fixtures, ("x2",)),
                "device_vs_cpu": device_vs_cpu(device, 2, batch=2, size=32, tiny=True),
            }
        else:
            report["equivalence"] = {
                "fixtures": fixture_equivalence(device, args.fixtures),
                "device_vs_cpu": device_vs_cpu(device, 4),
            }
        save()
        report["training"] = {}
        training(args, device, work, report["training"])
    report["torchrun"] = {}
    scaling(args, device, work, report["torchrun"])
    report["seconds"] = time.perf_counter() - began
    report["load_average_1_5_15_min_at_end"] = list(os.getloadavg())
    args.save()
    print(json.dumps(_summary(report), indent=2))
    print(f"written: {json_path}")
    failed = [k for k, v in report.get("training", {}).items() if "error" in v]
    failed += [
        f"torchrun {k}"
        for k, v in report["torchrun"].items()
        if isinstance(v, dict)
        for rs in v.get("runs", {}).values()
        for r in rs
        if "error" in r
    ]
    if failed:
        print("failed runs: " + ", ".join(failed), file=sys.stderr)
        sys.exit(1)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers (the JSON file has everything)."""
    out: dict[str, Any] = {"environment": report["environment"]}
    if "training" in report:
        out["samples_per_second"] = {
            k: round(v["samples_per_second"], 2) if "samples_per_second" in v else "error"
            for k, v in report["training"].items()
        }
    out["torchrun_speedup"] = {
        k: v.get("speedup") if isinstance(v, dict) else v for k, v in report["torchrun"].items()
    }
    return out


if __name__ == "__main__":
    main()
