r"""Draw `docs/assets/irn_x2_tradeoff.png`: the ×2 models' reconstruction against their LR fidelity.

Each point is one ×2 model of the model card: its Set14 Y-PSNR under the paper's protocol on the
float16 file (`benchmarks/results/irn_export_trials.json`) against the RGB PSNR of its LR to the
bicubic LR on Set14 (`benchmarks/results/irn_colour_cpu.json`). The shaded corner is where a
model meets the ×2 goals of both axes (Set14 Y-PSNR at least 37.0 dB, LR at least 38 dB); the
dashed line is the shipped model's Set14 Y-PSNR, which a new model must beat to replace it.
Nothing is measured here: the figure reads the stored results.

Run from the repository root (seconds, no network):

    python docs/figures/irn_x2_tradeoff.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "assets" / "irn_x2_tradeoff.png"
GOAL_Y, GOAL_LR = 37.0, 38.0  # Set14 goals of the x2 model (dB)
LABEL_OFFSETS = {"+2,000": (-30, 4), "+3,000": (0, 6), "+4,000": (5, -10)}  # points; apart

# label -> (entry of irn_export_trials.json, model of irn_colour_cpu.json's "x2"), by series
SERIES: dict[str, dict[str, tuple[str, str]]] = {
    "LR-guidance weight λ_fit": {
        "4 (shipped)": ("x2_stage4_step2000", "shipped x2"),
        "8": ("x2_stage4_fit8_step1000", "x2_noise_fit8_step1000.safetensors"),
        "16": ("x2_stage4_fit16_step1000", "x2_noise_fit16_step1000.safetensors"),
        "24": ("x2_stage4_fit24_step1000", "x2_noise_fit24_step1000.safetensors"),
        "32": ("x2_stage4_fit32_step1000", "x2_noise_fit32_step1000.safetensors"),
    },
    "λ_fit = 24 trained on (steps)": {
        "": ("x2_stage4_fit24_step1000", "x2_noise_fit24_step1000.safetensors"),  # its start
    }
    | {
        f"+{k},000": (f"x2_stage4_fit24_long_step{k}000", f"x2_fit24_long_step{k}000.safetensors")
        for k in range(1, 5)
    },
}


def points() -> dict[str, dict[str, tuple[float, float]]]:
    """Per series and label: (Set14 LR RGB PSNR, Set14 Y-PSNR) in dB, from the stored results."""
    trials = json.loads((RESULTS / "irn_export_trials.json").read_text())
    colour: dict[str, Any] = json.loads((RESULTS / "irn_colour_cpu.json").read_text())["x2"]
    return {
        series: {
            label: (colour[model]["set14"]["lr_psnr_rgb"], trials[trial]["set14_psnr_y"])
            for label, (trial, model) in members.items()
        }
        for series, members in SERIES.items()
    }


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlearn.images.io import write_figure

    data = points()
    shipped_y = data[next(iter(SERIES))]["4 (shipped)"][1]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    xs = [x for series in data.values() for x, _ in series.values()]
    ys = [y for series in data.values() for _, y in series.values()]
    left, right = min(xs) - 0.4, max(xs) + 0.6
    bottom, top = min(min(ys), GOAL_Y) - 0.08, max(max(ys), shipped_y) + 0.08
    ax.axvspan(
        GOAL_LR, right, ymin=(GOAL_Y - bottom) / (top - bottom), color="tab:green", alpha=0.1
    )
    ax.axvline(GOAL_LR, color="tab:green", lw=0.8)
    ax.axhline(GOAL_Y, color="tab:green", lw=0.8)
    ax.axhline(shipped_y, color="0.3", lw=0.8, ls="--")
    ax.annotate("both ×2 goals met", (right - 0.05, top - 0.02), ha="right", va="top", fontsize=8)
    ax.annotate(
        f"shipped ×2 ({shipped_y:.2f} dB): the bar a new model must clear",
        (left + 0.05, shipped_y + 0.01),
        fontsize=8,
        va="bottom",
    )
    for (series, members), style in zip(data.items(), ("o-", "s-")):
        x, y = zip(*members.values())
        ax.plot(x, y, style, ms=5, lw=1, label=series)
        for label, (px, py) in members.items():
            offset = LABEL_OFFSETS.get(label, (4, -10))
            ax.annotate(label, (px, py), textcoords="offset points", xytext=offset, fontsize=7)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel("Set14: LR RGB PSNR to the bicubic LR (dB)")
    ax.set_ylabel("Set14: Y-PSNR, paper protocol (dB)")
    ax.set_title("IRN ×2: reconstruction against LR fidelity", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    write_figure(OUT, fig, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
