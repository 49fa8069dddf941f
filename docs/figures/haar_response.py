r"""Draw `docs/assets/haar_response.png`: what one Haar level keeps and what downscaling loses.

The orthonormal 1-D Haar filters $h = [1, 1]/\sqrt2$ (average) and $g = [1, -1]/\sqrt2$
(difference) have the power responses $|H(\omega)|^2 = 2\cos^2(\omega/2)$ and
$|G(\omega)|^2 = 2\sin^2(\omega/2)$, which add up to 2 at every frequency. After keeping every
second sample, the grid can only represent frequencies up to $\pi/2$ (in units of the original
grid, whose Nyquist frequency is $\pi$): everything above is what downscaling loses.

Run from the repository root (deterministic, no network):

    python docs/figures/haar_response.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from flowlearn.images.io import write_figure

OUT = Path(__file__).resolve().parents[1] / "assets" / "haar_response.png"


def main() -> None:
    """Plot the two power responses against the ideal split at the LR Nyquist frequency."""
    plt.rcParams.update(
        {"font.size": 11, "svg.hashsalt": "flowlearn", "font.family": "DejaVu Sans"}
    )
    omega = np.linspace(0.0, np.pi, 401)
    low = 2 * np.cos(omega / 2) ** 2  # |H(ω)|², average (LL along one axis)
    high = 2 * np.sin(omega / 2) ** 2  # |G(ω)|², difference (detail)
    ideal = np.where(omega <= np.pi / 2, 2.0, 0.0)

    fig, ax = plt.subplots(figsize=(8.0, 3.6), dpi=120)
    ax.axvspan(0, np.pi / 2, color="#e8eaf6", zorder=0)
    ax.axvspan(np.pi / 2, np.pi, color="#fff3e0", zorder=0)
    ideal_label = "ideal low-pass (what an LR grid can hold)"
    low_label = r"Haar average $|H(\omega)|^2 = 2\cos^2(\omega/2)$"
    high_label = r"Haar difference $|G(\omega)|^2 = 2\sin^2(\omega/2)$"
    ax.plot(omega, ideal, color="#9e9e9e", lw=1.5, ls="--", label=ideal_label)
    ax.plot(omega, low, color="#3f51b5", lw=2.5, label=low_label)
    ax.plot(omega, high, color="#ef6c00", lw=2.5, label=high_label)
    ax.axvline(np.pi / 2, color="#424242", lw=1)
    ax.text(np.pi / 4, 2.32, "kept by the LR image", ha="center", color="#283593")
    ax.text(3 * np.pi / 4, 2.32, "lost when downscaling ×2", ha="center", color="#e65100")
    ax.set_xlim(0, np.pi)
    ax.set_ylim(0, 2.55)
    ax.set_xticks([0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi])
    ax.set_xticklabels(["0", "π/4", "π/2\n(LR Nyquist)", "3π/4", "π\n(HR Nyquist)"])
    ax.set_yticks([0, 1, 2])
    ax.set_xlabel("frequency ω along one axis (radians per HR pixel)")
    ax.set_ylabel("power response")
    ax.legend(loc="center left", bbox_to_anchor=(0.0, 0.45), fontsize=9.5, framealpha=0.95)
    fig.tight_layout()

    write_figure(OUT, fig)  # atomically: a temporary file in the folder, then a rename
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
