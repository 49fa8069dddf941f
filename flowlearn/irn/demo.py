r"""`flowlearn demo`: rescale a photo with the shipped IRN models and with bicubic, side by side.

For every scale $s$ whose model is shipped (`flowlearn.irn.checkpoint.available_models`), the
photo $x$ (cropped to a multiple of the largest scale, with a note when that changes it) is

* downscaled by IRN to the 8-bit LR image $y = \mathrm{Quantize}(f(x)_{\mathrm{LR}})$ and
  upscaled back from $y$ alone, $\hat{x} = f^{-1}(y, z)$ with $z \sim \mathcal{N}(0, I)$ drawn
  from a generator seeded `seed`;
* downscaled and upscaled by MATLAB-style bicubic resizing ("Bicubic & Bicubic").

Both reconstructions are scored with the paper's protocol (`flowlearn.irn.evaluate.evaluate_pair`:
8-bit images, $s$ border pixels shaved, PSNR and SSIM on the BT.601 luma Y and on RGB). The
output folder receives `demo.png` (the images and zoomed crops side by side), `hr.png` and, per
scale, `x<s>_irn_lr.png`, `x<s>_irn_sr.png`, `x<s>_bicubic_lr.png`, `x<s>_bicubic_sr.png`, each
written atomically. Without an image argument the photo shipped in `flowlearn/irn/weights/` is used
(a NASA portrait, public domain; see the README there). Everything runs offline on the CPU.

References:
    M. Xiao et al., 2020, "Invertible Image Rescaling", arXiv:2005.05650, §3.1 (downscale with
    $f$, upscale with $f^{-1}$ and a sampled $z$) and §4.1 (protocol).
"""

from __future__ import annotations

import argparse
import importlib.resources
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from flowlearn.images.io import atomic_write, make_folder, read_image, write_image
from flowlearn.images.metrics import modcrop
from flowlearn.irn.checkpoint import ModelNotAvailableError, available_models, load
from flowlearn.irn.evaluate import bicubic_downscale, bicubic_upscale, evaluate_pair
from flowlearn.irn.fast import accelerate

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "DemoError",
    "DemoResult",
    "add_arguments",
    "bundled_image",
    "command",
    "format_rows",
    "run_demo",
]

BUNDLED_IMAGE = "astronaut_256.png"
"""File name of the demo photo in `flowlearn/irn/weights/`."""
MIN_SIZE = 32
"""Smallest height and width (after cropping) the demo accepts."""


class DemoError(ValueError):
    r"""The demo cannot run: no shipped model for any requested scale, an image too small, …"""


@dataclass
class DemoResult:
    r"""What `run_demo` computed and wrote.

    Attributes:
        rows: one dict per (scale, method): `scale`, `method`, and the four metrics.
        files: every file written, `demo.png` first.
        skipped: `{scale: reason}` for scales whose model is not shipped.
        seconds: wall time of the whole run.
    """

    rows: list[dict[str, float | int | str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def bundled_image() -> Path:
    r"""The photo shipped for the demo: a 256×256 crop of a NASA portrait (public domain)."""
    return Path(str(importlib.resources.files("flowlearn.irn") / "weights" / BUNDLED_IMAGE))


def _zoom_window(hr: Tensor, size: int, step: int) -> tuple[int, int]:
    # Top-left corner (multiples of `step`) of the size×size window with the most detail,
    # measured as the summed gradient magnitude of the mean channel.
    grey = hr.mean(dim=0, keepdim=True)[None]  # (1, 1, H, W)
    gy = (grey[..., 1:, :-1] - grey[..., :-1, :-1]).abs()
    gx = (grey[..., :-1, 1:] - grey[..., :-1, :-1]).abs()
    energy = F.avg_pool2d(gx + gy, size - 1, stride=step)  # (1, 1, rows, cols)
    index = int(energy.flatten().argmax())
    cols = energy.shape[-1]
    return (index // cols) * step, (index % cols) * step


def _figure(
    hr: Tensor, panels: dict[int, dict[str, Tensor]], rows: list[dict[str, float | int | str]]
) -> bytes:
    """`demo.png` as PNG bytes: per scale, the full images, then zoomed crops below them."""
    from matplotlib.figure import Figure  # Agg through Figure: no display, no pyplot state
    from matplotlib.patches import Rectangle

    scales = sorted(panels)
    step = max(scales)
    h, w = hr.shape[-2:]
    size = max(step * 4, (min(h, w) // 4) // step * step)
    top, left = _zoom_window(hr, size, step)
    score = {(r["scale"], r["method"]): r for r in rows}

    def image(ax: Axes, x: Tensor, title: str, nearest: bool = False) -> None:
        pixels = x.clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, 3) for imshow
        ax.imshow(pixels, interpolation="nearest" if nearest else "antialiased")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()

    fig = Figure(figsize=(10, 5.2 * len(scales)), dpi=110)
    grid = fig.subplots(2 * len(scales), 4, squeeze=False)
    for i, s in enumerate(scales):
        p = panels[s]
        irn, bic = score[(s, "IRN")], score[(s, "Bicubic")]
        full = grid[2 * i]
        image(full[0], hr, f"HR {w}×{h}")
        image(full[1], p["irn_lr"], f"IRN LR ×{s} ({w // s}×{h // s})", nearest=True)
        image(full[2], p["irn_sr"], f"IRN upscaled from LR\nY-PSNR {irn['psnr_y']:.2f} dB")
        image(full[3], p["bic_sr"], f"Bicubic & Bicubic ×{s}\nY-PSNR {bic['psnr_y']:.2f} dB")
        full[0].add_patch(
            Rectangle((left - 0.5, top - 0.5), size, size, fill=False, edgecolor="yellow", lw=1)
        )
        hr_crop = (..., slice(top, top + size), slice(left, left + size))
        lr_crop = (..., slice(top // s, (top + size) // s), slice(left // s, (left + size) // s))
        zoom = grid[2 * i + 1]
        image(zoom[0], hr[hr_crop], "HR (zoom)", nearest=True)
        image(zoom[1], p["irn_lr"][lr_crop], f"IRN LR ×{s} (zoom)", nearest=True)
        image(zoom[2], p["irn_sr"][hr_crop], "IRN (zoom)", nearest=True)
        image(zoom[3], p["bic_sr"][hr_crop], "Bicubic (zoom)", nearest=True)
    fig.suptitle("Invertible Rescaling Net vs bicubic: downscale, then upscale from the LR alone")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def format_rows(rows: list[dict[str, float | int | str]], seed: int) -> str:
    r"""The metrics table printed by the demo (Y = BT.601 luma; border = scale)."""
    head = f"{'scale':<6}{'method':<22}{'PSNR-Y':>8}{'SSIM-Y':>8}{'PSNR-RGB':>10}{'SSIM-RGB':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        label = f"IRN (z seed {seed})" if r["method"] == "IRN" else "Bicubic & Bicubic"
        lines.append(
            f"{'×' + str(r['scale']):<6}{label:<22}{r['psnr_y']:>8.2f}{r['ssim_y']:>8.4f}"
            f"{r['psnr_rgb']:>10.2f}{r['ssim_rgb']:>10.4f}"
        )
    return "\n".join(lines)


def run_demo(
    image: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str] = "demo",
    scales: Sequence[int] = (2, 4),
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
    overwrite: bool = False,
) -> DemoResult:
    r"""Run the demo (see the module docstring) and return the metrics and the files written.

    Args:
        image: a photo; `None` uses `bundled_image()`.
        out: output folder (created).
        scales: the scales to show; those without a shipped model are skipped (reported in
            `skipped` and through `log`).
        seed: seed of the generator that draws $z$.
        log: receives one progress message at a time.
        overwrite: replace files of these names already in `out` (never the input image).

    Raises:
        ImageError: the image cannot be read (a `ValueError`).
        DemoError: no requested scale has a shipped model, the image is too small, an output
            would replace the input, or (without `overwrite`) an output file exists.
        OSError: the output folder cannot be written.
    """
    started = time.perf_counter()
    path = bundled_image() if image is None else Path(image)
    hr_full, note = read_image(path)  # (3, H, W) in [0, 1]
    log(f"read {path.name} ({hr_full.shape[-1]}×{hr_full.shape[-2]})")
    if note:
        log(f"note: {note}")
    result = DemoResult()
    models = {}
    for s in sorted(set(scales)):
        try:
            models[s] = accelerate(load(s))  # the same map, faster
        except ModelNotAvailableError as err:
            result.skipped[s] = str(err)
            log(f"note: skipping ×{s}: {err}")
    if not models:
        asked = " or ".join(f"×{s}" for s in sorted(set(scales)))
        shipped = ", ".join(available_models()) or "none"
        raise DemoError(
            f"no shipped IRN model for {asked} in this installation; available: {shipped}"
        )
    step = max(models)
    hr = modcrop(hr_full, step) if min(hr_full.shape[-2:]) >= step else hr_full
    h, w = hr.shape[-2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise DemoError(
            f"{path.name} is {w}×{h} after cropping to a multiple of {step}; the demo needs at "
            f"least {MIN_SIZE}×{MIN_SIZE}"
        )
    if (h, w) != tuple(hr_full.shape[-2:]):
        log(
            f"note: cropped {hr_full.shape[-1]}×{hr_full.shape[-2]} to {w}×{h} "
            f"(a multiple of {step}, as the protocol's modcrop)"
        )
    if h * w > 1024 * 1024:
        log(f"note: {w}×{h} is a large image; on a CPU this takes minutes (crop it to try faster)")
    out = Path(out)
    kinds = ("irn_lr", "irn_sr", "bicubic_lr", "bicubic_sr")
    names = ["demo.png", "hr.png"] + [f"x{s}_{kind}.png" for s in models for kind in kinds]
    for target in (out / name for name in names):  # checked before anything is written
        if target.resolve() == path.resolve():
            raise DemoError(f"{target} is the input image; choose another --out folder")
        if target.exists() and not overwrite:
            raise DemoError(
                f"{target} exists; pass --overwrite to replace it, or choose another --out folder"
            )
    make_folder(out)
    result.files.append(write_image(out / "hr.png", hr))
    panels: dict[int, dict[str, Tensor]] = {}
    with torch.inference_mode():
        for s, model in models.items():
            t0 = time.perf_counter()
            log(f"×{s}: IRN downscaling to {w // s}×{h // s} ...")
            irn_lr = model.downscale(hr[None])  # (1, 3, h/s, w/s), 8-bit
            log(f"×{s}: IRN upscaling from the LR alone (z ~ N(0, I), seed {seed}) ...")
            generator = torch.Generator().manual_seed(seed)
            irn_sr = model.upscale(irn_lr, generator=generator)[0]  # (3, H, W)
            log(f"×{s}: bicubic down and up, scoring ...")
            bic_lr = bicubic_downscale(hr, s)  # (3, h/s, w/s), 8-bit
            bic_sr = bicubic_upscale(bic_lr, s)
            for method, sr in (("IRN", irn_sr), ("Bicubic", bic_sr)):
                result.rows.append({"scale": s, "method": method, **evaluate_pair(hr, sr, s)})
            panels[s] = {"irn_lr": irn_lr[0], "irn_sr": irn_sr.clamp(0, 1), "bic_sr": bic_sr}
            for name, x in (
                ("irn_lr", irn_lr[0]),
                ("irn_sr", irn_sr),
                ("bicubic_lr", bic_lr),
                ("bicubic_sr", bic_sr),
            ):
                result.files.append(write_image(out / f"x{s}_{name}.png", x))
            log(f"×{s}: done in {time.perf_counter() - t0:.1f} s")
    log("drawing demo.png ...")
    figure = out / "demo.png"
    with atomic_write(figure) as tmp:
        tmp.write_bytes(_figure(hr, panels, result.rows))
    result.files.insert(0, figure)
    result.seconds = time.perf_counter() - started
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""Add the arguments of `flowlearn demo` to `parser` and set `func` to `command`."""
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE", help="a photo (default: the bundled 256×256 photo)"
    )
    parser.add_argument(
        "--out", "-o", type=Path, default=Path("demo"), help="output folder (default: ./demo)"
    )
    parser.add_argument(
        "--scales", type=int, nargs="+", default=[2, 4], choices=(2, 4, 8), metavar="S",
        help="scales to show, from 2, 4, 8 (default: 2 4)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of z (default 0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace files already in the output folder"
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    r"""Run `flowlearn demo` with parsed arguments; print the table; return the exit status.

    Progress goes to stderr, the table and the list of files to stdout; an error is one line
    `flowlearn demo: error: …` on stderr and exit status 1.
    """

    def log(message: str) -> None:
        print(f"flowlearn demo: {message}", file=sys.stderr, flush=True)

    try:
        result = run_demo(
            args.image,
            out=args.out,
            scales=args.scales,
            seed=args.seed,
            log=log,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as err:  # ImageError, DemoError, CheckpointError; file system
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"flowlearn demo: error: {text}", file=sys.stderr)
        return 1
    print(format_rows(result.rows, args.seed))
    print("PSNR in dB; Y = BT.601 luma; border = scale; images rounded to 8 bits (paper protocol)")
    for s, reason in result.skipped.items():
        print(f"×{s} skipped: {reason}")
    print(f"wrote {len(result.files)} files to {args.out}/ (demo.png: the side-by-side figure)")
    print(f"total {result.seconds:.1f} s")
    return 0
