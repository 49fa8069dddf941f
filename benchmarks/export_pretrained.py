"""Export a trained IRN as the compact file shipped in flowlearn/irn/weights/ (float16 safetensors).

Usage:
    python benchmarks/export_pretrained.py RUN [--out FILE] [--hardware TEXT]
        [--training-data TEXT] [--set5 DIR] [--set14 DIR | --skip-set14] [--draws 5]
        [--seed 0] [--device auto] [--force] [--no-wall-time] [--prior-steps N]

RUN is a training run folder (its checkpoint.pt, else its model.pt), a training checkpoint,
a flowlearn checkpoint, an original IRN .pth file or anything else flowlearn.irn.checkpoint.load
reads. The script

1. rounds the weights to float16 and reads them back, so everything below measures exactly
   the file that ships;
2. evaluates that model on Set5 and Set14 with the paper's protocol (flowlearn.irn.evaluate:
   8-bit LR, mean over --draws draws of z, Y channel, border = scale) and the bicubic baseline;
3. refuses to export (exit status 1) unless IRN beats bicubic in Set5 Y-PSNR, except with
   --force (the metadata then records "forced_export": true);
4. writes --out (default flowlearn/irn/weights/irn_x<s>.safetensors) atomically, with the config
   and metadata (scale, blocks, steps, wall time (null with --no-wall-time, for a run whose
   clock also counted pauses), hardware, training data, Set5/Set14 Y-PSNR and
   SSIM with their spread over draws, the bicubic numbers, the recipe) in the safetensors
   header, reads it back and checks the weights.

A fine-tune (a run whose `model.init` is an earlier model) records, with `--prior-steps N`, the
N steps of the training it started from: `steps` is then the total and `fine_tune_steps` its own.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import flowlearn
from flowlearn.irn.checkpoint import load, model_info, save
from flowlearn.irn.evaluate import evaluate_folder
from flowlearn.irn.model import IRN
from flowlearn.irn.train import resolve_device

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
PROTOCOL = (
    "Xiao et al. 2020 test protocol: modcrop to the scale, 8-bit IRN LR, z ~ N(0, I) "
    "(mean of {draws} draws, seeds {seed}..{last}), 8-bit SR, BT.601 Y (float), "
    "border = scale; PSNR/SSIM as in flowlearn.irn.evaluate"
)


def load_source(path: Path) -> tuple[IRN, dict[str, Any]]:
    """The model and what the source says about its training (steps, seconds, recipe)."""
    if path.is_dir():
        checkpoint = path / "checkpoint.pt"
        path = checkpoint if checkpoint.is_file() else path / "model.pt"
    if not path.is_file():
        raise SystemExit(f"export_pretrained: error: {path} does not exist")
    meta = model_info(path)["metadata"]  # a training checkpoint's step, seconds and config
    seconds = meta.get("seconds")
    return load(path), {
        "steps": meta.get("step"),
        "wall_time_s": None if seconds is None else round(float(seconds), 1),
        "training_config": meta.get("training_config") or {},
    }


def recipe(config: Mapping[str, Any]) -> dict[str, Any]:
    """The training recipe without machine paths (data.train, run.output, validation)."""
    out = {k: dict(config[k]) for k in ("model", "optim", "loss") if k in config}
    if out.get("model", {}).get("init"):
        out["model"]["init"] = Path(out["model"]["init"]).name
    if "data" in config:
        out["data"] = {k: v for k, v in config["data"].items() if k != "train"}
    return out


def evaluate(
    model: IRN | None, folder: Path, scale: int, args: argparse.Namespace
) -> dict[str, Any]:
    result = evaluate_folder(
        model,
        folder,
        scale,
        draws=args.draws,
        seed=args.seed,
        progress=sys.stderr.isatty(),
        device=args.device if model is not None else None,
    )
    return result["mean"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder or checkpoint file")
    parser.add_argument(
        "--out", type=Path, help="default: flowlearn/irn/weights/irn_x<s>.safetensors"
    )
    parser.add_argument("--name", help="model name in the metadata; default: x<s>")
    parser.add_argument("--hardware", default="not recorded", help='e.g. "1x NVIDIA H100"')
    parser.add_argument("--training-data", help="default: the folder name of data.train")
    parser.add_argument("--set5", type=Path, default=DATASETS / "set5")
    parser.add_argument("--set14", type=Path, default=DATASETS / "set14")
    parser.add_argument("--skip-set14", action="store_true")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--force", action="store_true", help="export even if bicubic is better")
    parser.add_argument(
        "--prior-steps",
        type=int,
        default=0,
        help="steps of the training the source was fine-tuned from (its model.init), counted in",
    )
    parser.add_argument(
        "--no-wall-time",
        action="store_true",
        help="record no wall time (a resumed or paused run, whose clock is not a training time)",
    )
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)

    model, run = load_source(args.run)
    scale = model.scale
    out = args.out or ROOT / "flowlearn" / "irn" / "weights" / f"irn_x{scale}.safetensors"
    train_dir = run["training_config"].get("data", {}).get("train")
    training_data = args.training_data or (Path(train_dir).name if train_dir else "not recorded")

    with tempfile.TemporaryDirectory() as tmp:  # round to float16 through the shipped format
        staged = save(model, Path(tmp) / "staged.safetensors", dtype=torch.float16)
        shipped = load(staged, device=args.device)
    numbers: dict[str, Any] = {}
    sets = [("set5", args.set5)] + ([] if args.skip_set14 else [("set14", args.set14)])
    for name, folder in sets:
        print(f"evaluating ×{scale} on {name} ({folder}) ...", file=sys.stderr)
        irn, bicubic = evaluate(shipped, folder, scale, args), evaluate(None, folder, scale, args)
        numbers |= {
            f"{name}_psnr_y": round(irn["psnr_y"], 4),
            f"{name}_psnr_y_std": round(irn["psnr_y_std_over_draws"], 4),
            f"{name}_ssim_y": round(irn["ssim_y"], 5),
            f"{name}_psnr_rgb": round(irn["psnr_rgb"], 4),
            f"{name}_lr_psnr_y": round(irn["lr_psnr_y"], 4),
            f"{name}_bicubic_psnr_y": round(bicubic["psnr_y"], 4),
            f"{name}_bicubic_ssim_y": round(bicubic["ssim_y"], 5),
        }
        print(
            f"  IRN {irn['psnr_y']:.2f} dB (± {irn['psnr_y_std_over_draws']:.3f} over draws), "
            f"SSIM {irn['ssim_y']:.4f}; bicubic {bicubic['psnr_y']:.2f} dB",
            file=sys.stderr,
        )

    beats = numbers["set5_psnr_y"] > numbers["set5_bicubic_psnr_y"]
    if not beats and not args.force:
        print(
            f"export_pretrained: refusing to export: IRN ×{scale} Set5 Y-PSNR "
            f"{numbers['set5_psnr_y']:.2f} dB does not beat bicubic "
            f"{numbers['set5_bicubic_psnr_y']:.2f} dB (--force exports anyway)",
            file=sys.stderr,
        )
        return 1
    steps: dict[str, Any] = {"steps": run["steps"]}
    if args.prior_steps:  # a fine-tune: the total, then its own
        steps = {"steps": (run["steps"] or 0) + args.prior_steps, "fine_tune_steps": run["steps"]}
    metadata = {
        "name": args.name or f"x{scale}",
        "scale": scale,
        "blocks": list(model.blocks),
        **steps,
        "wall_time_s": None if args.no_wall_time else run["wall_time_s"],
        "hardware": args.hardware,
        "training_data": training_data,
        **numbers,
        "draws": args.draws,
        "seed": args.seed,
        "protocol": PROTOCOL.format(
            draws=args.draws, seed=args.seed, last=args.seed + args.draws - 1
        ),
        "recipe": recipe(run["training_config"]),
        "forced_export": not beats,
        "exported_with": f"flowlearn {flowlearn.__version__}, torch {torch.__version__}",
        "exported_on": datetime.date.today().isoformat(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save(shipped, out, metadata=metadata, dtype=torch.float16)
    check = load(out)
    same = all(
        torch.equal(a, b.cpu())
        for a, b in zip(check.state_dict().values(), shipped.state_dict().values())
    )
    if not same:
        print(f"export_pretrained: error: {out} does not read back identically", file=sys.stderr)
        return 1
    size = out.stat().st_size
    print(f"wrote {out} ({size:,} bytes, {size / 2**20:.1f} MiB)")
    for key in ("steps", "wall_time_s", "hardware", "training_data", *numbers):
        print(f"  {key}: {metadata[key]}")
    if not beats:
        print("  forced_export: true (IRN does not beat bicubic on Set5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
