"""Learning curve of IRN training on CPU: Set5 Y-PSNR against steps and seconds.

Trains an IRN from a shipped configuration (default `x2`, the paper's recipe) on a folder of
photos (default ../shared/datasets/bsds500, searched recursively) for a wall time or a step
count, validating on Set5 every K steps, and writes the curve as CSV:

    step, seconds, psnr_y_sampled, psnr_y_zero, psnr_y_bicubic, lr_psnr_rgb, fit, distr, rec,
    total, lr

Step 0 is the model the run starts from (`flowlearn.irn.train.build_model`): `model.init` when
set, else the untrained network (every coupling starts as the identity, so it is the Haar
cascade whatever the seed). The final step is validated too. The run folder keeps the checkpoint,
so `--resume` extends a curve.

Usage:
    python benchmarks/irn_learning_curve.py --minutes 60 --validate-every 200 \
        --out benchmarks/results/irn_x2_curve.csv
    python benchmarks/irn_learning_curve.py --steps 20 --validate-every 10 --batch-size 4

Options --batch-size / --patch-size / --set KEY=VALUE change the recipe (say so when reporting).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from flowlearn.images.io import atomic_write
from flowlearn.irn.config import load_config
from flowlearn.irn.train import build_model, train, validate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
COLUMNS = ["step", "seconds", "psnr_y_sampled", "psnr_y_zero", "psnr_y_bicubic", "lr_psnr_rgb"]
COLUMNS += ["fit", "distr", "rec", "total", "lr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="x2", help="shipped name or YAML file")
    parser.add_argument("--data", type=Path, default=SHARED / "bsds500")
    parser.add_argument("--val", type=Path, default=SHARED / "set5")
    parser.add_argument("--minutes", type=float, help="wall-time budget of the training")
    parser.add_argument("--steps", type=int, help="stop at this step")
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1, help="z draws per validation")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "irn_learning_curve")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "irn_learning_curve.csv")
    args = parser.parse_args()
    if args.minutes is None and args.steps is None:
        parser.error("give --minutes or --steps")
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {
        "data.train": str(args.data),
        "data.workers": 0,
        "run.validation": str(args.val),
        "run.validate_every": args.validate_every,
        "run.validation_draws": args.draws,
        "run.output": str(args.run_dir),
        "run.device": "cpu",
        "run.checkpoint_every": args.validate_every,
    }
    if args.batch_size:
        overrides["data.batch_size"] = args.batch_size
    if args.patch_size:
        overrides["data.patch_size"] = args.patch_size
    cfg = load_config(args.config, overrides=[*_as_strings(overrides), *args.set])
    scale = cfg.model.scale

    rows: list[dict[str, object]] = []
    if args.resume and args.out.is_file():
        with args.out.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["step"] == "0"]
    elif not args.resume:
        # step 0: the model the run starts from, in float32 as training validates it
        start = build_model(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, bf16=False)))
        bicubic = validate(None, args.val, scale)
        first = validate(start, args.val, scale, draws=args.draws)
        step0 = {"step": 0, "seconds": 0.0, **first, **bicubic}
        rows.append({k: step0.get(k, "") for k in COLUMNS})
        print(json.dumps(rows[0]))

    started = time.perf_counter()
    result = train(
        cfg,
        resume=args.resume,
        max_steps=args.steps,
        max_seconds=None if args.minutes is None else 60 * args.minutes,
    )
    wall = time.perf_counter() - started
    with result.log_csv.open(newline="") as f:
        log = list(csv.DictReader(f))
    for row in log:
        if row["psnr_y_sampled"]:
            rows.append({k: row[k] for k in COLUMNS})
    if not log or not log[-1]["psnr_y_sampled"]:  # validate the last step as well
        last = dict(log[-1]) if log else {"step": result.step}
        last.update(validate(result.model, args.val, scale, draws=args.draws))
        last.update(validate(None, args.val, scale))
        rows.append({k: last.get(k, "") for k in COLUMNS})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(
        json.dumps(
            {
                "config": args.config,
                "batch_size": cfg.data.batch_size,
                "patch_size": cfg.data.patch_size,
                "set": args.set,
                "steps": result.step,
                "wall_seconds_this_call": round(wall, 1),
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "curve": str(args.out),
                "last": rows[-1],
            },
            indent=1,
        )
    )


def _as_strings(overrides: dict[str, object]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


if __name__ == "__main__":
    main()
