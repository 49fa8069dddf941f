"""The perception-distortion trade-off of IRN+: PSNR/SSIM against detail, on Set5 and Set14.

Usage:
    python benchmarks/irn_plus_tradeoff.py [--plus FILE|NAME] [--irn NAME] [--draws 5]
        [--methods bicubic irn irn_plus] [--json FILE] [--figure FILE] [--threads N]

For bicubic, IRN x4 (the shipped model) and IRN+ x4 (--plus: a shipped name, a flowlearn or
training checkpoint, or an original IRN+_x4.pth), on Set5 and Set14 (neither is training data):

* Y-PSNR and Y-SSIM under the paper's protocol (flowlearn.irn.evaluate.evaluate_folder: modcrop,
  8-bit LR, z ~ N(0, I) drawn --draws times, 8-bit SR, border = scale), mean over images and
  draws;
* the high-frequency energy ratio (flowlearn.images.spectrum.high_frequency_ratio): the SR
  image's spectral power above the LR Nyquist frequency 1/(2s) = 0.125 cycles/pixel over the
  HR image's, 1.0 = as much fine detail as the original; and the gradient-magnitude histogram
  distance (0 = the same distribution of edge strengths). Both on the luma of draw 0 (seed
  --seed), with the same border shaved, averaged over images;
* the radially averaged power spectrum of SR over that of HR, per frequency ring, averaged
  (geometric mean) over the images of each set: the curve of the figure.

Writes the numbers to --json (default benchmarks/results/irn_plus_tradeoff.json; with
--methods, the other methods' entries already in the file are kept) and, with --figure, the
spectra of Set14 and zoomed crops as a PNG. Prints the markdown table of the docs.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from flowlearn.images.io import list_images, read_image, write_figure, write_json
from flowlearn.images.metrics import modcrop
from flowlearn.images.spectrum import (
    gradient_histogram_distance,
    high_frequency_ratio,
    radial_power_spectrum,
)
from flowlearn.irn.checkpoint import load, model_info
from flowlearn.irn.evaluate import evaluate_folder

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = ("set5", "set14")
METHODS = ("bicubic", "irn", "irn_plus")
LABELS = {"bicubic": "Bicubic", "irn": "IRN ×4", "irn_plus": "IRN+ ×4 (GAN-only)"}
SCALE = 4
BINS = 32
CROP = ("set14", "baboon.png", 250, 40, 96)  # set, image, top, left, side (HR pixels)


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border]


def detail(hr_dir: Path, sr_dir: Path) -> dict[str, Any]:
    """Detail measures of the SR images (draw 0) of one folder against their HR images."""
    ratios, distances, log_spectra = [], [], []
    for path in list_images(hr_dir):
        hr = shave(modcrop(read_image(path)[0], SCALE), SCALE)
        sr = shave(read_image(sr_dir / f"{path.stem}_SR.png")[0], SCALE)
        ratios.append(high_frequency_ratio(sr, hr, cutoff=0.5 / SCALE))
        distances.append(gradient_histogram_distance(sr, hr))
        _, p_sr = radial_power_spectrum(sr, bins=BINS)
        _, p_hr = radial_power_spectrum(hr, bins=BINS)
        log_spectra.append(torch.log(p_sr / p_hr))
    mean_log = torch.stack(log_spectra).mean(0)
    return {
        "hf_ratio": sum(ratios) / len(ratios),
        "hf_ratio_images": ratios,
        "grad_hist_distance": sum(distances) / len(distances),
        "spectrum_ratio": [math.exp(float(v)) for v in mean_log],
    }


def run(method: str, model: Any, name: str, draws: int, seed: int) -> dict[str, Any]:
    folder = DATASETS / name
    with tempfile.TemporaryDirectory() as tmp:
        result = evaluate_folder(
            model, folder, SCALE, draws=draws, seed=seed, save_images=tmp, progress=False
        )
        measures = detail(folder, Path(tmp))
    mean = result["mean"]
    out = {
        "psnr_y": mean["psnr_y"],
        "ssim_y": mean["ssim_y"],
        "psnr_y_std_over_draws": mean.get("psnr_y_std_over_draws", 0.0),
        "draws": result["draws"],
        **measures,
    }
    print(
        f"{name} {method}: PSNR-Y {out['psnr_y']:.2f}, SSIM-Y {out['ssim_y']:.4f}, "
        f"HF ratio {out['hf_ratio']:.3f}, grad-hist distance {out['grad_hist_distance']:.3f}",
        flush=True,
    )
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| Method | Set5 PSNR-Y / SSIM-Y | Set5 HF ratio | Set5 grad. dist. "
        "| Set14 PSNR-Y / SSIM-Y | Set14 HF ratio | Set14 grad. dist. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in METHODS:
        cells = [LABELS[method]]
        for name in SETS:
            r = results.get(name, {}).get(method)
            if r is None:
                cells += ["–"] * 3
                continue
            cells += [
                f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}",
                f"{r['hf_ratio']:.3f}",
                f"{r['grad_hist_distance']:.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(data: dict[str, Any], models: dict[str, Any], path: Path, seed: int) -> None:
    frequency = [(k + 0.5) * 0.5 / BINS for k in range(BINS)]
    fig = plt.figure(figsize=(10, 6.2))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    ax = fig.add_subplot(grid[0, :])
    for method in METHODS:
        r = data["results"].get("set14", {}).get(method)
        if r is not None:
            ax.plot(frequency, r["spectrum_ratio"], label=LABELS[method])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axvline(0.5 / SCALE, color="grey", ls="--", lw=0.8)
    ax.text(0.5 / SCALE + 0.005, 1.2, "LR Nyquist 1/(2s)", color="grey", fontsize=8)
    ax.set(yscale="log", xlabel="frequency (cycles / pixel)", ylabel="power SR / power HR")
    ax.set_title("Set14: radially averaged power spectrum of SR relative to HR", fontsize=10)
    ax.legend(fontsize=8)
    name, image, top, left, side = CROP
    hr_full = modcrop(read_image(DATASETS / name / image)[0], SCALE)
    crops = {"HR": hr_full}
    for method in METHODS:
        if method not in models:
            continue
        model = models[method]
        with torch.inference_mode():
            if model is None:
                from flowlearn.irn.evaluate import bicubic_rescale

                sr = bicubic_rescale(hr_full, SCALE)
            else:
                lr = model.downscale(hr_full[None])
                gen = torch.Generator().manual_seed(seed)
                sr = model.upscale(lr, generator=gen)[0]
        crops[LABELS[method]] = sr.clamp(0, 1)
    for k, (label, img) in enumerate(crops.items()):
        ax = fig.add_subplot(grid[1, k])
        ax.imshow(img[:, top : top + side, left : left + side].permute(1, 2, 0).numpy())
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    write_figure(path, fig, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plus", default="x4_plus", help="IRN+ x4 weights (file or name)")
    parser.add_argument("--irn", default="x4", help="IRN x4 weights (file or name)")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "irn_plus_tradeoff.json"
    )
    parser.add_argument("--figure", type=Path, help="write the spectra and crops here (PNG)")
    parser.add_argument("--threads", type=int, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data: dict[str, Any] = {"results": {}, "models": {}}
    if args.json.is_file():
        data = json.loads(args.json.read_text())
    data.update(scale=SCALE, cutoff=0.5 / SCALE, bins=BINS, seed=args.seed)
    models: dict[str, Any] = {"bicubic": None}
    for method, spec in (("irn", args.irn), ("irn_plus", args.plus)):
        if method in args.methods or args.figure is not None:
            models[method] = load(spec, scale=SCALE)
            if method in args.methods:
                meta = model_info(spec)["metadata"] or {}
                data["models"][method] = {
                    "source": Path(spec).name,  # a shipped name or a file name, no folders
                    "steps": meta.get("steps", meta.get("step")),
                }
    for name in SETS:
        for method in args.methods:
            result = run(method, models[method], name, args.draws, args.seed)
            data["results"].setdefault(name, {})[method] = result
    write_json(args.json, data)
    print(table(data["results"]))
    if args.figure is not None:
        figure(data, models, args.figure, args.seed)


if __name__ == "__main__":
    main()
