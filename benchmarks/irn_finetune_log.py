"""Join the logs of the training runs that led to a shipped model into one learning-curve CSV.

Usage:
    python benchmarks/irn_finetune_log.py --base-steps 12000 RUN:STEPS [RUN:STEPS ...]
        --out benchmarks/results/irn_x2_finetune_log.csv
    python benchmarks/irn_finetune_log.py --after benchmarks/results/irn_x4_finetune_log.csv
        [--first-stage N] RUN:STEPS --out benchmarks/results/irn_x4_finetune_log.csv

Each RUN is a `flowlearn irn train` folder (its `log.csv` and `config.yaml`); STEPS is the step
of its checkpoint that the next stage started from (`model.init`) or that was exported: rows
after it are left out. A stage's rows keep their own `step` and get `total_step`, the steps of
everything before it (`--base-steps`: the model the first stage started from) plus their own,
and the settings that distinguish the stages (`data.prescale`, `data.recolour`, `data.noise`,
`data.noise_level`, `loss.lambda_fit`, `optim.lr`, `optim.milestones`, `data.patch_size`,
`data.batch_size`, `optim.warmup`; a column added after a log was written is empty in its older
rows).
`psnr_y_sampled` is the run's validation: Set5 Y-PSNR with one draw of z.

`--after CSV` extends a log this script wrote before (the run folders of its stages need not
exist any more): its rows come first unchanged, the new stages are numbered after its last, and
their steps count from its last `total_step`. Columns the log lacks stay empty in its rows.
`--first-stage N` numbers the new stages from N instead, as the model card does when stages in
between were tried and not shipped (N must be above the log's last).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import yaml

from flowlearn.images.io import atomic_write

SETTINGS = {
    "prescale": ("data", "prescale", 1.0),
    "recolour": ("data", "recolour", 0.0),
    "noise": ("data", "noise", 0.0),
    "noise_level": ("data", "noise_level", 10.0),
    "lambda_fit": ("loss", "lambda_fit", None),
    "patch_size": ("data", "patch_size", None),
    "batch_size": ("data", "batch_size", None),
    "base_lr": ("optim", "lr", None),
    "milestones": ("optim", "milestones", None),
    "warmup": ("optim", "warmup", 0),
}
"""Column → (section, key, default) of the stage's configuration."""


def stage_rows(run: Path, until: int, offset: int, stage: int) -> list[dict[str, Any]]:
    """The rows of `run`'s log up to step `until`, with the stage's number and settings."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    settings = {
        column: config.get(section, {}).get(key, default)
        for column, (section, key, default) in SETTINGS.items()
    }
    with (run / "log.csv").open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["step"]) <= until]
    if not rows or int(rows[-1]["step"]) != until:
        last = rows[-1]["step"] if rows else "none"
        raise SystemExit(
            f"irn_finetune_log: {run}/log.csv has no row for step {until} (last: {last})"
        )
    return [
        {"stage": stage, "total_step": offset + int(row["step"]), **row, **settings} for row in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", metavar="RUN:STEPS")
    parser.add_argument("--base-steps", type=int, default=0)
    parser.add_argument("--after", type=Path, metavar="CSV", help="a log to extend")
    parser.add_argument(
        "--first-stage", type=int, metavar="N", help="number of the first new stage"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    offset, first = args.base_steps, 1
    if args.after is not None:
        if args.base_steps:
            parser.error("--after takes its steps from the log; leave out --base-steps")
        with args.after.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            parser.error(f"{args.after} holds no rows")
        offset, first = int(rows[-1]["total_step"]), int(rows[-1]["stage"]) + 1
    if args.first_stage is not None:
        if args.first_stage < first:
            parser.error(f"--first-stage {args.first_stage}: the stages before go to {first - 1}")
        first = args.first_stage
    for number, item in enumerate(args.stages, start=first):
        run, _, steps = item.rpartition(":")
        if not run or not steps.isdigit():
            parser.error(f"expected RUN:STEPS, got {item!r}")
        rows += stage_rows(Path(run), int(steps), offset, number)
        offset += int(steps)
    with atomic_write(args.out) as tmp, tmp.open("w", newline="") as f:
        # every column of every stage, in order of appearance: older runs' logs lack some
        writer = csv.DictWriter(f, list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    count = len({row["stage"] for row in rows})
    stages = f"{count} stage{'s' if count > 1 else ''}"
    print(f"wrote {args.out}: {len(rows)} rows, {stages}, to step {offset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
