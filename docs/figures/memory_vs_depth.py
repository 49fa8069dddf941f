r"""Draw `docs/assets/memory_vs_depth.png`: training memory and inversion drift against depth.

Left: the extra memory (peak resident set size minus the value before the first step) of one
IRN ×2 training step (batch 4, 64×64 patches: forward, losses, inverse pass, backward, Adam)
with $K$ couplings, ordinary backprop against backpropagation by inversion
(`IRN(..., memory_saving=True)`). Each point runs in a fresh process, so it is that
configuration's own peak.

Right: the relative error of the inputs that backpropagation by inversion recomputes,
$\max|\hat x_{k} - x_{k}| / \max|x_{k}|$ after $j$ inverted layers
(`flowlearn.core.memory.inversion_drift`), for a 64-coupling float32 IRN whose last convolutions are
random with three sizes: with the two small ones the error stays at float32 round-off, with the
largest the activations grow to ~1e6 and inverting amplifies the round-off without bound.

Run from the repository root (a few minutes on two cores, no network):

    python docs/figures/memory_vs_depth.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowlearn import IRN

OUT = Path(__file__).resolve().parents[1] / "assets" / "memory_vs_depth.png"
DEPTHS = (1, 2, 4, 8, 16, 32)
STDS = (0.02, 0.03, 0.05)  # 0.05: activations grow to ~1e6 and the inverse explodes


def _irn(blocks: int, std: float, memory_saving: bool = False) -> IRN:
    import torch

    from flowlearn import IRN

    torch.manual_seed(0)
    net = IRN(2, blocks=[blocks], memory_saving=memory_saving)
    g = torch.Generator().manual_seed(2020)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".conv5." in name:  # zero at initialisation: make every coupling act
                p.copy_(std * torch.randn(p.shape, generator=g))
    return net


def worker(depth: int, memory_saving: bool) -> None:
    """Print the peak and baseline RSS (MiB) of two training steps of one configuration."""
    import torch

    from flowlearn.irn import irn_losses

    torch.set_num_threads(1)
    net = _irn(depth, 0.02, memory_saving)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    hr = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(2):
        opt.zero_grad()
        irn_losses(net, hr, lr_ref, generator=torch.Generator().manual_seed(2)).total.backward()
        opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "baseline_mb": baseline}))


def measure_memory() -> dict[str, list[float]]:
    """Extra memory per depth for both modes, each in a fresh process."""
    out: dict[str, list[float]] = {"plain": [], "memory_saving": []}
    for mode in out:
        for depth in DEPTHS:
            cmd = [sys.executable, __file__, "--worker", str(depth), mode]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            out[mode].append(result["peak_mb"] - result["baseline_mb"])
            print(f"{mode:>13} K={depth:>2}: +{out[mode][-1]:.0f} MiB", file=sys.stderr)
    return out


def measure_drift() -> dict[float, list[float]]:
    """Relative error after j inversions for a 64-coupling float32 IRN ×2."""
    import torch

    from flowlearn.core.memory import inversion_drift

    torch.set_num_threads(1)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    drift = {}
    for std in STDS:  # one 64-coupling model at a time
        layers = _irn(64, std).bijectors
        drift[std] = inversion_drift(layers, x)
    return drift


def main() -> None:
    """Measure, then plot both panels and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlearn.images.io import write_figure

    memory = measure_memory()
    drift = measure_drift()
    plt.rcParams.update({"font.size": 11, "font.family": "DejaVu Sans"})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.9), dpi=120)
    left.plot(DEPTHS, memory["plain"], "o-", color="#ef6c00", lw=2, label="ordinary backprop")
    left.plot(DEPTHS, memory["memory_saving"], "o-", color="#3f51b5", lw=2,
              label="backprop by inversion")  # fmt: skip
    left.set_xscale("log", base=2)
    left.set_xticks(DEPTHS, [str(d) for d in DEPTHS])
    left.set_xlabel("couplings K (IRN ×2, batch 4, 64×64)")
    left.set_ylabel("training memory above baseline (MiB)")
    left.set_title("memory of one training step")
    left.legend(loc="upper left", fontsize=9.5)
    left.grid(alpha=0.3)
    for std, color in zip(STDS, ("#3f51b5", "#2e7d32", "#c62828")):
        errors = drift[std]
        steps = range(1, len(errors) + 1)
        right.semilogy(steps, errors, color=color, lw=2, label=f"last conv. weights std {std}")
    right.set_xlabel("layers inverted j (Haar + 64 couplings, float32)")
    right.set_ylabel("relative error of recomputed input")
    right.set_title("round-off drift of recomputation")
    right.legend(loc="lower right", fontsize=9.5)
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    write_figure(OUT, fig)
    print(json.dumps({"depths": DEPTHS, "memory_mb": memory,
                      "drift_final": {str(k): v[-1] for k, v in drift.items()}}))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), sys.argv[3] == "memory_saving")
    else:
        main()
