"""Evaluate the shipped IRN models on Set5 and Set14 against bicubic and the paper's numbers.

Usage:
    python benchmarks/evaluate_pretrained.py [--scales 2 4] [--model x2=FILE ...]
        [--set5 DIR] [--set14 DIR] [--draws 5] [--seed 0] [--device auto] [--json FILE]

For each scale, the shipped model (flowlearn.irn.checkpoint.load("x<s>"), or the file given by
--model x<s>=FILE) and the "Bicubic & Bicubic" baseline are run through the paper's test
protocol (flowlearn.irn.evaluate.evaluate_folder: modcrop, 8-bit LR, z ~ N(0, I) drawn --draws
times with seeds seed..seed+draws-1, 8-bit SR, BT.601 Y, border = scale). IRN cells give the
mean over draws and, after ±, the spread (sample standard deviation over draws of the dataset
mean). Prints a markdown table for docs/model-card.md, next to the paper's Table 1. A scale
without a model is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flowlearn.images.io import write_json
from flowlearn.irn.checkpoint import ModelNotAvailableError, load, model_info
from flowlearn.irn.evaluate import evaluate_folder
from flowlearn.irn.train import resolve_device

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"

# Xiao et al. 2020, arXiv:2005.05650, Table 1: Y-PSNR (dB) / Y-SSIM, models trained on DIV2K.
PAPER: dict[tuple[int, str, str], tuple[float, float]] = {
    (2, "irn", "set5"): (43.99, 0.9871),
    (2, "irn", "set14"): (40.79, 0.9778),
    (2, "bicubic", "set5"): (33.66, 0.9299),
    (2, "bicubic", "set14"): (30.24, 0.8688),
    (4, "irn", "set5"): (36.19, 0.9451),
    (4, "irn", "set14"): (32.67, 0.9015),
    (4, "bicubic", "set5"): (28.42, 0.8104),
    (4, "bicubic", "set14"): (26.00, 0.7027),
}
SETS = ("set5", "set14")


def cell(mean: dict[str, float], method: str) -> str:
    text = f"{mean['psnr_y']:.2f}"
    if method == "irn":
        text += f" ± {mean['psnr_y_std_over_draws']:.2f}"
    return f"{text} / {mean['ssim_y']:.4f}"


def paper(scale: int, method: str, name: str) -> str:
    value = PAPER.get((scale, method, name))
    return "–" if value is None else f"{value[0]:.2f} / {value[1]:.4f}"


def table(results: dict[tuple[int, str, str], dict[str, Any]], draws: int) -> str:
    lines = [
        "| Scale | Method | Set5 (ours) | Set14 (ours) | Set5 (paper) | Set14 (paper) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    scales = sorted({s for s, _, _ in results})
    for s in scales:
        for method, label in (("irn", f"IRN (mean of {draws} z draws ± spread)"),
                              ("bicubic", "Bicubic & Bicubic")):  # fmt: skip
            ours = [
                cell(results[(s, method, n)]["mean"], method) if (s, method, n) in results
                else "not measured"
                for n in SETS
            ]  # fmt: skip
            lines.append(
                f"| ×{s} | {label} | {ours[0]} | {ours[1]} | "
                f"{paper(s, method, 'set5')} | {paper(s, method, 'set14')} |"
            )
    lines.append("")
    lines.append(
        "Y-PSNR (dB) / Y-SSIM, BT.601 luma, border = scale, 8-bit images; the paper's models "
        "are trained on DIV2K, ours on BSDS500 (400 photos)."
    )
    lr = [
        f"×{s} {n}: {results[(s, 'irn', n)]['mean']['lr_psnr_y']:.2f} dB"
        for s in scales
        for n in SETS
        if (s, "irn", n) in results
    ]
    if lr:
        lines.append("IRN LR vs bicubic LR, Y-PSNR: " + ", ".join(lr) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--model", action="append", default=[], metavar="xS=FILE")
    parser.add_argument("--set5", type=Path, default=DATASETS / "set5")
    parser.add_argument("--set14", type=Path, default=DATASETS / "set14")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--json", type=Path, help="also write the full results as JSON")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    files = {}
    for item in args.model:
        name, sep, file = item.partition("=")
        if not sep or not name.lower().startswith("x") or not name[1:].isdigit():
            parser.error(f"--model expects xS=FILE such as x2=irn_x2.safetensors, got {item!r}")
        files[int(name[1:])] = Path(file)

    results: dict[tuple[int, str, str], dict[str, Any]] = {}
    described = []
    for s in args.scales:
        try:
            source = files.get(s, s)
            model, info = load(source, scale=s, device=device), model_info(source)
        except ModelNotAvailableError as err:
            print(f"note: skipping ×{s}: {err}", file=sys.stderr)
            continue
        described.append(f"×{s}: {info['path'].name}, {info['file_size']:,} bytes, "
                         f"metadata {json.dumps(info['metadata'])}")  # fmt: skip
        for name, folder in (("set5", args.set5), ("set14", args.set14)):
            print(f"×{s} {name}: IRN ({args.draws} draws) and bicubic ...", file=sys.stderr)
            for method, m in (("irn", model), ("bicubic", None)):
                results[(s, method, name)] = evaluate_folder(
                    m, folder, s, draws=args.draws, seed=args.seed,
                    progress=sys.stderr.isatty(), device=device if m is not None else None,
                )  # fmt: skip
    if not results:
        print("error: no model to evaluate", file=sys.stderr)
        return 1
    print(table(results, args.draws))
    for line in described:
        print(f"\n{line}", file=sys.stderr)
    if args.json is not None:
        data = {f"x{s}/{method}/{name}": r for (s, method, name), r in results.items()}
        write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
