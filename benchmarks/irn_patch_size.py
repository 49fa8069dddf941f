"""Which training patch size gives the most Set14 quality per CPU hour.

The paper trains on 144×144 HR patches, batch 16; the shipped models were trained on 64×64,
batch 8, because a step on 144² patches costs about five times as much. This benchmark measures
the choice: from the same starting model, it trains one run per patch size for the same wall
time (one after the other, each in its own run folder, same seed, same data and settings) and
scores each result on a held-out folder (default Set14) with the paper's protocol:

    patch, batch, steps, seconds, HR pixels seen, Y-PSNR before, Y-PSNR after, gain, gain/hour

Usage:
    python benchmarks/irn_patch_size.py --config x2 --init x2 --minutes 10 \
        --patch-sizes 64 96 144 --batch-size 8 --threads 1 \
        --set data.prescale=0.5 --set optim.lr=1e-4 \
        --out benchmarks/results/irn_patch_size_cpu.json

Runs go to a temporary folder (removed at the end) unless `--run-dir` is given. The score uses
`--draws` draws of z (default 1: the spread over draws, ±0.005 dB, is far below the differences
that matter here); the gain of a run is its score minus the starting model's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from flowlearn.images.io import write_json
from flowlearn.irn import IRN
from flowlearn.irn.config import load_config
from flowlearn.irn.train import build_model, train, validate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def run_one(
    config: str, overrides: list[str], patch: int, batch: int, minutes: float, folder: Path
) -> tuple[dict[str, Any], IRN]:
    """Train one patch size for `minutes` of wall time: its record (steps, seconds) and model."""
    cfg = load_config(
        config,
        overrides=[
            *overrides,
            f"data.patch_size={patch}",
            f"data.batch_size={batch}",
            f"run.output={folder}",
        ],
    )
    started = time.perf_counter()
    result = train(cfg, max_seconds=60 * minutes)
    seconds = time.perf_counter() - started
    record = {
        "patch": patch,
        "batch": batch,
        "steps": result.step,
        "seconds": round(seconds, 1),
        "hr_pixels": result.step * batch * patch * patch,
    }
    return record, result.model


def table(data: dict[str, Any]) -> str:
    """The Markdown table of a result of this script."""
    lines = [
        "| patch | batch | steps | minutes | HR pixels seen (M) | Y-PSNR before | Y-PSNR after "
        "| gain (dB) | gain per hour (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    before = data["before"]
    for r in data["runs"]:
        gain = r["psnr_y"] - before
        lines.append(
            f"| {r['patch']} | {r['batch']} | {r['steps']:,} | {r['seconds'] / 60:.1f} "
            f"| {r['hr_pixels'] / 1e6:.1f} | {before:.2f} | {r['psnr_y']:.2f} | {gain:+.3f} "
            f"| {gain / (r['seconds'] / 3600):+.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="x2", help="shipped name or YAML file")
    parser.add_argument("--init", help="model.init: the model every run starts from")
    parser.add_argument("--data", type=Path, default=SHARED / "bsds500")
    parser.add_argument("--val", type=Path, default=SHARED / "set14")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[64, 96, 144])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time of each run")
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", type=Path, help="keep the runs here (default: temporary)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if any(p <= 0 for p in args.patch_sizes) or args.minutes <= 0:
        parser.error("patch sizes and --minutes must be positive")
    torch.set_num_threads(args.threads)

    overrides = [
        f"data.train={args.data}",
        "data.workers=0",
        "run.validation=null",
        "run.validate_every=0",
        "run.checkpoint_every=1000000",
        "run.tensorboard=false",
        "run.device=cpu",
        *([f"model.init={args.init}"] if args.init else []),
        *args.set,
    ]
    # scored in float32, as training validates and returns its model (run.bf16: training only)
    start = build_model(load_config(args.config, overrides=[*overrides, "run.bf16=false"]))
    scale = start.scale
    before = validate(start, args.val, scale, draws=args.draws)["psnr_y_sampled"]
    print(f"starting model: {before:.3f} dB on {args.val.name}", flush=True)

    runs = []
    with tempfile.TemporaryDirectory(prefix="irn_patch_size_") as tmp:
        base = args.run_dir or Path(tmp)
        for patch in args.patch_sizes:
            folder = base / f"patch{patch}"
            run, model = run_one(
                args.config, overrides, patch, args.batch_size, args.minutes, folder
            )
            run["psnr_y"] = validate(model, args.val, scale, draws=args.draws)["psnr_y_sampled"]
            print(json.dumps(run), flush=True)
            runs.append(run)

    out = {
        "config": args.config,
        "init": args.init,
        "set": args.set,
        "validation": args.val.name,
        "draws": args.draws,
        "threads": args.threads,
        "minutes": args.minutes,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "before": before,
        "runs": runs,
    }
    print(table(out))
    if args.out:
        print(f"wrote {write_json(args.out, out, indent=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
