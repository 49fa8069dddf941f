r"""Draw `docs/assets/irn_x4_curve.png`: where the shipped ×4 stands, step by step of its training.

Two panels, Set5 and Set14 Y-PSNR against the total training steps behind each model, from the
5,000-step ×4 on. The points are the models of the shipped line (each one the start of the
next stage) scored with the paper's protocol on their float16 files
(`benchmarks/results/irn_export_trials.json`); on Set5 the thin line is the runs' own
validation (one draw of z, `benchmarks/results/irn_x4_training_log.csv` and
`irn_x4_finetune_log.csv`). The green line is the goal of the shipped ×4, the shaded steps ran
on 144×144 patches (the others on 64×64), and the dotted lines are the starts of the fine-tune
log's stages. Nothing is measured here: the figure reads the stored results.

Run from the repository root (seconds, no network):

    python docs/figures/irn_x4_curve.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "assets" / "irn_x4_curve.png"
GOALS = {"set5": 34.5, "set14": 31.0}  # Y-PSNR goals of the shipped x4 (dB)
PAPER = {"set5": 36.19, "set14": 32.67}  # Xiao et al. 2020, Table 1
START = 5000  # the 5,000-step model, where the fine-tunes begin

# total steps -> entry of irn_export_trials.json, along the line that led to the shipped x4
LINE: dict[int, str] = {
    5000: "x4_5000_steps",
    5500: "x4_noise_step500",
    5900: "x4_p144_step400",
    6100: "x4_p144_step600",
    6300: "x4_p144_step800",
    6700: "x4_p144b_step400",
    7100: "x4_p144b_step800",
    7900: "x4_p144c_step800",
    8300: "x4_p144c_step1200",
    8700: "x4_p144c_step1600",
    8850: "x4_p144d_step150",
    9000: "x4_p144d_step300",
    9150: "x4_p144d_step450",
    9300: "x4_p144d_step600",
    9450: "x4_p144e_step150",
    9600: "x4_p144e_step300",
    9750: "x4_p144e_step450",
    9900: "x4_p144e_step600",
    10050: "x4_p144f_step150",
    10350: "x4_p144f_step450",
    10500: "x4_p144f_step600",
    10950: "x4_p144g_step450",
    11100: "x4_p144g_step600",
    11550: "x4_p144j_step450",
    11700: "x4_p144j_step600",
}


def exported() -> dict[str, list[tuple[int, float]]]:
    """Per set: (total steps, Y-PSNR of the paper's protocol) of each model of the line."""
    trials = json.loads((RESULTS / "irn_export_trials.json").read_text())
    return {
        part: [(steps, trials[name][f"{part}_psnr_y"]) for steps, name in sorted(LINE.items())]
        for part in GOALS
    }


def _rows(name: str) -> list[dict[str, str]]:
    with open(RESULTS / name, newline="") as f:
        return list(csv.DictReader(f))


def validation() -> list[tuple[int, float]]:
    """(total steps, Set5 Y-PSNR with one draw of z) of the runs' validations from `START` on."""
    base = [(int(r["step"]), r["psnr_y_sampled"]) for r in _rows("irn_x4_training_log.csv")]
    tuned = [(int(r["total_step"]), r["psnr_y_sampled"]) for r in _rows("irn_x4_finetune_log.csv")]
    return [(s, float(v)) for s, v in base + tuned if v and s >= START]


def stage_starts() -> dict[int, str]:
    """Total steps at which each stage of the fine-tune log starts -> its label."""
    starts: dict[int, str] = {}
    for r in _rows("irn_x4_finetune_log.csv"):
        start = int(r["total_step"]) - int(r["step"])
        starts.setdefault(start, f"stage {r['stage']}")
    return starts


def patch_144() -> tuple[int, int]:
    """Total steps at which the fine-tune log's training on 144×144 patches starts and ends."""
    rows = [r for r in _rows("irn_x4_finetune_log.csv") if r["patch_size"] == "144"]
    first, last = rows[0], rows[-1]
    return int(first["total_step"]) - int(first["step"]), int(last["total_step"])


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlearn.images.io import write_figure

    points, curve, stages = exported(), validation(), stage_starts()
    first, last = patch_144()
    end = max(max(LINE), last)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, (part, line) in zip(axes, points.items()):
        ax.axvspan(first, last, color="0.9", lw=0)
        validated = curve if part == "set5" else []  # the runs validate on Set5 only
        if validated:
            ax.plot(*zip(*validated), "-", color="tab:blue", lw=0.8, alpha=0.6, label="validation")
        ax.plot(*zip(*line), "o-", color="tab:blue", ms=4, lw=1.2, label="paper protocol")
        ax.axhline(GOALS[part], color="tab:green", lw=1)
        ys = [y for _, y in line + validated] + [GOALS[part]]
        bottom, top = min(ys) - 0.1, max(ys) + 0.1
        ax.set_ylim(bottom, top)
        ax.set_xlim(START - 150, end + 150)
        for steps, label in stages.items():
            if steps < end:
                ax.axvline(steps, color="0.6", lw=0.6, ls=":")
                ax.annotate(
                    label,
                    (steps + 25, GOALS[part] - 0.04),
                    fontsize=7,
                    color="0.35",
                    rotation=90,
                    va="top",
                )
        ax.annotate(
            f"goal {GOALS[part]:.1f} dB (paper: {PAPER[part]:.2f})",
            (end + 100, GOALS[part] + 0.01),
            fontsize=8,
            ha="right",
            va="bottom",
            color="tab:green",
        )
        ax.set_xlabel("training steps (total)")
        ax.set_ylabel("Y-PSNR (dB)")
        ax.set_title(f"{'Set5' if part == 'set5' else 'Set14'}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "IRN ×4: the shipped line, stage by stage "
        "(shaded: 144×144 patches, else 64×64; batch 8, 16 from stage 5)",
        fontsize=10,
    )
    fig.tight_layout()
    write_figure(OUT, fig, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
