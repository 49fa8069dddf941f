"""Collect the paper-protocol numbers of exported IRN files into one JSON (the model card's tables).

Usage:
    python benchmarks/irn_export_trials.py NAME=FILE [NAME=FILE ...] [--merge]
        [--out benchmarks/results/irn_export_trials.json]

Each FILE is a `.safetensors` written by `benchmarks/export_pretrained.py --out FILE` (a trial
export of a checkpoint, or a shipped model): its metadata holds the Y-PSNR / SSIM of Set5 and
Set14 under the paper's protocol, measured on the float16 weights (the steps it records are
left out: a trial's `--prior-steps` need not be the one its export would ship with). The
model card's tables of checkpoints (the ×2 fine-tune's stage 4, the ×4 noise fine-tune) quote
these numbers; a test ties the card to this file. `--merge` keeps the entries already stored
under other names.

For each file it also prints where it stands against the model shipped now at its scale
(`against_shipped`): the export rule ships a new model only when it beats the shipped one on
Set14, and a Set14 gain no larger than the spread of the two models' scores over z draws is
reported as such, since another set of draws could reverse it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flowlearn.images.io import write_json
from flowlearn.irn.checkpoint import available_models, model_info

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    *(
        f"{name}_{key}"
        for name in ("set5", "set14")
        for key in ("psnr_y", "psnr_y_std", "ssim_y", "psnr_rgb", "lr_psnr_y")
    ),
    "draws",
    "exported_on",
)
"""The metadata entries kept for each file (those it has)."""


def trial(info: dict[str, Any]) -> dict[str, Any]:
    """The numbers `export_pretrained.py` stored in a file's metadata (`info`: its `model_info`)."""
    metadata = info["metadata"]
    if "set5_psnr_y" not in metadata:
        raise SystemExit(f"irn_export_trials: {info['path']} holds no paper-protocol numbers")
    return {key: metadata[key] for key in KEYS if key in metadata}


def against_shipped(numbers: dict[str, Any], shipped: dict[str, Any]) -> str:
    r"""Set5 and Set14 Y-PSNR differences of a trial to the shipped model, and the verdict.

    The Set14 gain is compared with $\sqrt{\sigma_a^2 + \sigma_b^2}$, the spread over z draws
    of the difference of two scores whose own spreads are $\sigma_a$, $\sigma_b$
    (`set14_psnr_y_std` in both files' metadata).

    Examples:
        >>> old = {"set5_psnr_y": 34.14, "set14_psnr_y": 30.6095, "set14_psnr_y_std": 0.0008}
        >>> against_shipped({**old, "set14_psnr_y": 30.6196}, old)
        'Set5 +0.000 dB, Set14 +0.010 dB against the shipped model: beats it on Set14'
        >>> against_shipped({**old, "set14_psnr_y": 30.6104}, old)
        'Set5 +0.000 dB, Set14 +0.001 dB against the shipped model: beats it on Set14 by no more...'
        >>> against_shipped({**old, "set14_psnr_y": 30.5995}, old)
        'Set5 +0.000 dB, Set14 -0.010 dB against the shipped model: does not beat it on Set14'
    """
    d5 = numbers["set5_psnr_y"] - shipped["set5_psnr_y"]
    d14 = numbers["set14_psnr_y"] - shipped["set14_psnr_y"]
    spread = (
        numbers.get("set14_psnr_y_std", 0.0) ** 2 + shipped.get("set14_psnr_y_std", 0.0) ** 2
    ) ** 0.5
    if d14 <= 0:
        verdict = "does not beat it on Set14"
    elif d14 <= spread:
        verdict = f"beats it on Set14 by no more than the spread over z draws ({spread:.3f} dB)"
    else:
        verdict = "beats it on Set14"
    return f"Set5 {d5:+.3f} dB, Set14 {d14:+.3f} dB against the shipped model: {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="NAME=FILE")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/irn_export_trials.json"
    )
    parser.add_argument("--merge", action="store_true", help="keep the stored entries")
    args = parser.parse_args(argv)
    stored = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    shipped = {name: model_info(name)["metadata"] for name in available_models()}
    for item in args.files:
        name, _, file = item.partition("=")
        if not name or not file:
            parser.error(f"expected NAME=FILE, got {item!r}")
        info = model_info(Path(file))
        stored[name] = trial(info)
        print(
            f"{name}: Set5 {stored[name]['set5_psnr_y']}, Set14 {stored[name].get('set14_psnr_y')}"
        )
        now = shipped.get(f"x{info['config']['scale']}", {})
        if "set14_psnr_y" in stored[name] and "set14_psnr_y" in now:
            print(f"  {against_shipped(stored[name], now)}")
    write_json(args.out, dict(sorted(stored.items())), indent=1)
    print(f"wrote {args.out}: {len(stored)} exports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
