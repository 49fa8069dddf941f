"""Colour of the IRN's LR image: its fidelity to the bicubic LR, and the training data's colour.

Usage:
    python benchmarks/irn_colour.py [--scales 2 4] [--model x2=FILE ...] [--figure PREFIX]
        [--noisy-figure PREFIX] [--out benchmarks/results/irn_colour_cpu.json]
    python benchmarks/irn_colour.py --tables

For each scale and model (the shipped one, `flowlearn.irn.load("x<s>")`, or `--model
x<s>=FILE`, several allowed, each stored under its own name) and each of Set5, Set14 and the
demo photo (the package's `astronaut_256.png`), every image is cropped to a multiple of the scale
and downscaled; the LR as delivered (rounded to 8 bits) is compared with the bicubic LR (MATLAB
`imresize`, rounded to 8 bits), which the LR-guidance loss trains it to follow:

* `lr_psnr_rgb`: PSNR over the three channels, in dB (no border);
* `lr_p999`: the 99.9th percentile of the per-pixel colour error, the Euclidean length of the
  RGB difference in 8-bit levels (a blotch is a few per cent of the pixels far off in colour);
* `lr_luma_rmse`, `lr_chroma_rmse`: the error split into BT.601 luma Y and the two colour
  differences $C_b = 0.564 (B - Y)$, $C_r = 0.713 (R - Y)$ (RMS over both), in 8-bit levels;
* `sr_psnr_rgb`, `sr_psnr_y`: the reconstruction with $z \\sim \\mathcal N(0, I)$ (seed 0) by the
  paper's protocol (`evaluate_pair`, border = scale).

Dataset values are means over the images (the demo photo is one image); `min_lr_psnr_rgb` names
the worst image.

The `data` part measures why the colour drifts: the share of fine colour detail in a photo,
$r = (E_{C_b} + E_{C_r}) / E_Y$ where $E$ is the energy of the 2×2 Haar detail bands (the finest
octave) of each channel, for the BSDS500 training JPEGs as they are and resized by 0.5
(`data.prescale`), and for Set5/Set14 (PNG). JPEG usually stores $C_b, C_r$ at half resolution
(4:2:0), so full-size JPEGs have almost no finest-octave colour detail for the model to learn.

The `cause` part (per model) tests that explanation on the model itself: the LR's RGB PSNR on
Set5 and Set14 as they are, with their colour at half resolution (as a 4:2:0 JPEG keeps it) and,
as a control, with their luma at half resolution (`without_detail`).

The `noise` part (per model) measures how the LR's colour holds up on noisy images: the LR's
RGB PSNR on Set5 and Set14 as they are and with Gaussian noise of standard deviation
`NOISE_LEVELS` (8-bit levels) added independently to every pixel and channel (seeded, clamped and
rounded to 8 bits), each against the bicubic LR of the image it was given. Noise that differs
between R, G and B is colour detail at the finest scale, which JPEG training photos lack. A mean
PSNR hides a blotch (a few dozen pixels of one image far off in colour), so the part also counts
the LR pixels whose colour error exceeds `FAR_OFF` levels (`far`, summed over the images, and
`far_worst`, the image with the most, at each noise level). Sharp edges of high contrast (the
text of ppt3.png) have such pixels in every model; a blotch shows as a count that jumps on one
image.

`--merge` keeps the stored results of models and parts that a run does not measure (a run with
`--no-cause` keeps a model's stored `cause`; `--no-scores` its per-set scores). `--no-shipped`
measures only the `--model` files. Each model's entry names the machine of its last run
(`machine`: CPU, CPU count, torch, threads); the top-level `machine` is that of the last run.

`--figure PREFIX` writes, for each scale, `PREFIX_x<s>.png`: crops of the demo photo's LR images
(bicubic, then each model) where one model's colour error is largest, enlarged 4× with nearest
neighbours. `--noisy-figure PREFIX` writes `PREFIX_x<s>.png`: the same for a Set5 image with the
`noise` part's colour noise of σ = 5 (top row) and 10 (bottom row), by default the image with
the most LR pixels far off in colour at σ = 10 (`--noisy-image NAME` picks another).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowlearn.images.imresize import imresize
from flowlearn.images.io import list_images, read_image, write_image, write_json
from flowlearn.images.metrics import modcrop, psnr, quantize_8bit
from flowlearn.irn import IRN, load
from flowlearn.irn.evaluate import bicubic_downscale, evaluate_pair

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
DEMO = ROOT / "flowlearn" / "irn" / "weights" / "astronaut_256.png"
FAR_OFF = 30.0
"""Colour error (Euclidean RGB length, 8-bit levels) beyond which an LR pixel counts as far off."""


def ycbcr(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""BT.601 luma $Y$ and the colour differences $C_b, C_r$ of `(..., 3, H, W)` RGB."""
    r, g, b = x.unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, 0.564 * (b - y), 0.713 * (r - y)


def colour_error(lr: Tensor, ref: Tensor) -> Tensor:
    """Per-pixel colour error of `(..., 3, H, W)` images: the length of the RGB difference in
    8-bit levels, `(..., H, W)`; more than `FAR_OFF` counts as far off."""
    return (lr - ref).norm(dim=-3) * 255


def lr_colour(
    model: IRN, hr: Tensor, scale: int, seed: int = 0, *, sr: bool = True
) -> dict[str, Any]:
    """The LR's colour error against the bicubic LR, and the SR's PSNR, for one HR image.

    With `sr=False` only the LR's RGB PSNR (`lr_psnr_rgb`) and its number of pixels more than
    `FAR_OFF` levels off in colour (`lr_far`), without upscaling.
    """
    with torch.no_grad():
        lr = quantize_8bit(model.downscale(hr[None]))  # (1, 3, H/s, W/s)
    ref = quantize_8bit(bicubic_downscale(hr, scale))[None]
    error = colour_error(lr, ref).flatten()
    if not sr:
        return {"lr_psnr_rgb": float(psnr(lr, ref)), "lr_far": int((error > FAR_OFF).sum())}
    with torch.no_grad():
        sr_image = model.upscale(lr, generator=torch.Generator().manual_seed(seed)).clamp(0, 1)
    (y1, cb1, cr1), (y2, cb2, cr2) = ycbcr(lr), ycbcr(ref)
    chroma = ((cb1 - cb2).square() + (cr1 - cr2).square()) / 2
    sr_scores = evaluate_pair(hr, sr_image[0], scale)
    return {
        "lr_psnr_rgb": float(psnr(lr, ref)),
        "lr_p999": float(torch.quantile(error, 0.999)),
        "lr_luma_rmse": float((y1 - y2).square().mean().sqrt() * 255),
        "lr_chroma_rmse": float(chroma.mean().sqrt() * 255),
        "sr_psnr_rgb": sr_scores["psnr_rgb"],
        "sr_psnr_y": sr_scores["psnr_y"],
    }


def hr_images(name: str, scale: int) -> list[tuple[str, Tensor]]:
    """`(file name, HR image cropped to a multiple of the scale)` of a test set or the demo."""
    files = [DEMO] if name == "demo" else list_images(DATASETS / name)
    return [(f.name, modcrop(read_image(f)[0], scale)) for f in files]


def model_scores(model: IRN, scale: int) -> dict[str, Any]:
    """`lr_colour` averaged over Set5, Set14 and the demo photo."""
    result: dict[str, Any] = {}
    for name in ("set5", "set14", "demo"):
        rows = {f: lr_colour(model, hr, scale) for f, hr in hr_images(name, scale)}
        keys = next(iter(rows.values()))
        mean: dict[str, Any] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
        worst = min(rows, key=lambda f: rows[f]["lr_psnr_rgb"])
        mean["min_lr_psnr_rgb"] = [worst, rows[worst]["lr_psnr_rgb"]]
        result[name] = mean
        print(f"x{scale} {name}: " + json.dumps(mean), flush=True)
    return result


def from_ycbcr(y: Tensor, cb: Tensor, cr: Tensor) -> Tensor:
    """RGB `(..., 3, H, W)` from the BT.601 `ycbcr` parts (its exact inverse)."""
    b, r = cb / 0.564 + y, cr / 0.713 + y
    return torch.stack((r, (y - 0.299 * r - 0.114 * b) / 0.587, b), dim=-3)


def without_detail(x: Tensor, part: str) -> Tensor:
    """`(3, H, W)` RGB with its colour (`"colour"`: $C_b, C_r$) or its luma (`"grey"`: $Y$) at
    half resolution: box-averaged over 2×2 pixels and bilinearly upsampled, as a 4:2:0 JPEG
    stores and a decoder restores the colour (without JPEG's quantisation)."""

    def half(c: Tensor) -> Tensor:
        low = torch.nn.functional.avg_pool2d(c[None, None], 2)
        return torch.nn.functional.interpolate(low, scale_factor=2, mode="bilinear")[0, 0]

    x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    y, cb, cr = ycbcr(x)
    if part == "colour":
        return from_ycbcr(y, half(cb), half(cr)).clamp(0, 1)
    return from_ycbcr(half(y), cb, cr).clamp(0, 1)


def cause_scores(model: IRN, scale: int) -> dict[str, Any]:
    """LR RGB PSNR on Set5 and Set14 as they are, and with their colour or their luma at half
    resolution (`without_detail`).

    A model that drifts on fine colour detail it never saw in training gets its LR back when
    the images' colour is halved in resolution, and not when their luma is.
    """
    result: dict[str, Any] = {}
    for name in ("set5", "set14"):
        rows: dict[str, list[float]] = {"as_is": [], "colour": [], "grey": []}
        for _, hr in hr_images(name, 2 * scale):
            for part in rows:
                image = hr if part == "as_is" else without_detail(hr, part)
                rows[part].append(lr_colour(model, image, scale, sr=False)["lr_psnr_rgb"])
        result[name] = {k: float(np.mean(v)) for k, v in rows.items()}
        print(f"x{scale} {name} without fine detail: " + json.dumps(result[name]), flush=True)
    return result


NOISE_LEVELS = (2.0, 5.0, 10.0)
"""Standard deviations of the `noise` part's Gaussian noise, in 8-bit levels."""


def noisy(x: Tensor, level: float, seed: int) -> Tensor:
    """`x` with Gaussian noise of standard deviation `level` 8-bit levels, clamped, 8-bit."""
    g = torch.Generator().manual_seed(seed)
    return quantize_8bit((x + level / 255 * torch.randn(x.shape, generator=g)).clamp(0, 1))


def noise_scores(model: IRN, scale: int) -> dict[str, Any]:
    """LR RGB PSNR on Set5 and Set14 as they are and with colour noise of each `NOISE_LEVELS`.

    A model whose LR follows the bicubic LR on clean images but not on noisy ones has not
    learned what to do with fine colour detail: it shifts the LR's colour in spots.
    """
    result: dict[str, Any] = {}
    for name in ("set5", "set14"):
        columns = ("as_is", *(f"{v:g}" for v in NOISE_LEVELS))
        rows: dict[str, list[float]] = {k: [] for k in columns}
        far: dict[str, list[tuple[int, str]]] = {k: [] for k in columns}
        for seed, (image_name, hr) in enumerate(hr_images(name, scale)):
            images = [hr, *(noisy(hr, level, seed) for level in NOISE_LEVELS)]
            for column, image in zip(columns, images, strict=True):
                scores = lr_colour(model, image, scale, sr=False)
                rows[column].append(scores["lr_psnr_rgb"])
                far[column].append((scores["lr_far"], image_name))
        result[name] = {k: float(np.mean(v)) for k, v in rows.items()}
        result[name]["far"] = {k: sum(n for n, _ in v) for k, v in far.items()}
        result[name]["far_worst"] = {k: list(max(v))[::-1] for k, v in far.items()}
        print(f"x{scale} {name} with colour noise: " + json.dumps(result[name]), flush=True)
    return result


def detail_ratio(x: Tensor) -> float:
    r"""$(E_{C_b} + E_{C_r}) / E_Y$ over the 2×2 Haar detail bands of a `(3, H, W)` image."""
    x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]

    def detail(c: Tensor) -> float:
        a, b, d, e = c[0::2, 0::2], c[0::2, 1::2], c[1::2, 0::2], c[1::2, 1::2]
        return float(((a - b + d - e) ** 2 + (a + b - d - e) ** 2 + (a - b - d + e) ** 2).mean())

    y, cb, cr = ycbcr(x)
    return (detail(cb) + detail(cr)) / detail(y)


def data_scores() -> dict[str, Any]:
    """The share of finest-octave colour detail in the training photos and the test images."""
    train = [read_image(f)[0] for f in list_images(DATASETS / "bsds500" / "train")]
    out = {
        "bsds500_train": float(np.mean([detail_ratio(x) for x in train])),
        "bsds500_train_prescale_0.5": float(
            np.mean([detail_ratio(imresize(x, 0.5).clamp(0, 1)) for x in train])
        ),
    }
    for name in ("set5", "set14"):
        out[name] = float(np.mean([detail_ratio(x) for _, x in hr_images(name, 1)]))
    print("colour detail ratio:", json.dumps(out), flush=True)
    return out


def crops_figure(models: dict[str, IRN], scale: int, path: Path, size: int = 32) -> None:
    """Bicubic LR and each model's LR on the demo photo, where one of them errs most."""
    hr = hr_images("demo", scale)[0][1]
    check_crop_size(size, hr, scale, "the demo photo's")
    ref, lrs = lr_panels(models, hr, scale)
    i, j = worst_window(torch.stack([colour_error(lr, ref) for lr in lrs.values()]), size)
    save_crops([[ref, *lrs.values()]], i, j, size, path)
    print(f"wrote {path}: bicubic | {' | '.join(lrs)} at LR ({i}, {j}), {size}² LR pixels")


def noisy_crops_figure(
    models: dict[str, IRN],
    scale: int,
    path: Path,
    image: str | None = None,
    size: int = 24,
    levels: tuple[float, ...] = NOISE_LEVELS[1:],
) -> None:
    """Bicubic LR and each model's LR of a Set5 image with colour noise, one row per level.

    The noise is that of the `noise` part (the same seed per image), so the crops show the
    pixels that its `far` counts. `image` defaults to the Set5 image with the most LR pixels
    more than `FAR_OFF` levels off at the highest level, in any of the models; the crop is
    where the models' colour error is largest over all rows.
    """
    images = hr_images("set5", scale)
    names = [n for n, _ in images]
    if image is not None and image not in names:
        raise SystemExit(f"irn_colour: no image {image!r} in Set5; expected one of {names}")
    rows: dict[str, list[list[Tensor]]] = {}  # image -> per level: [bicubic, model, ...]
    for seed, (name, hr) in enumerate(images):  # the seeds of noise_scores
        if image is None or name == image:
            check_crop_size(size, hr, scale, f"{name}'s")
            rows[name] = []
            for level in levels:
                ref, lrs = lr_panels(models, noisy(hr, level, seed), scale)
                rows[name].append([ref, *lrs.values()])

    def far_off(row: list[Tensor]) -> int:  # the most pixels far off in colour of any model
        return max(int((colour_error(lr, row[0]) > FAR_OFF).sum()) for lr in row[1:])

    chosen = max(rows, key=lambda name: far_off(rows[name][-1]))
    errors = torch.stack([colour_error(lr, row[0]) for row in rows[chosen] for lr in row[1:]])
    i, j = worst_window(errors, size)
    save_crops(rows[chosen], i, j, size, path)
    print(
        f"wrote {path}: {chosen} with noise σ = {', '.join(f'{v:g}' for v in levels)} (rows); "
        f"bicubic | {' | '.join(models)} at LR ({i}, {j}), {size}² LR pixels"
    )


def check_crop_size(size: int, hr: Tensor, scale: int, what: str) -> None:
    """Exit with a clear message unless crops of `size`² LR pixels fit the LR of `hr`."""
    height, width = (n // scale for n in hr.shape[-2:])
    if not 0 < size <= min(height, width):
        raise SystemExit(
            f"irn_colour: crops of {size}² LR pixels do not fit {what} {width}×{height} LR at "
            f"×{scale}; expected a size of 1 to {min(height, width)}"
        )


def lr_panels(models: dict[str, IRN], hr: Tensor, scale: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The 8-bit bicubic LR of `hr` `(3, H, W)` and each model's 8-bit LR of it."""
    ref = quantize_8bit(bicubic_downscale(hr, scale))
    with torch.no_grad():
        lrs = {n: quantize_8bit(m.downscale(hr[None]))[0] for n, m in models.items()}
    return ref, lrs


def worst_window(errors: Tensor, size: int) -> tuple[int, int]:
    """Top-left corner, on a grid of 4 pixels, of the `size`² window where the largest of the
    `(N, H, W)` `errors` is largest on average."""
    error = torch.nn.functional.avg_pool2d(errors.amax(0)[None, None], size, stride=4)
    i, j = divmod(int(error.flatten().argmax()), error.shape[-1])
    return 4 * i, 4 * j


def save_crops(rows: list[list[Tensor]], i: int, j: int, size: int, path: Path) -> None:
    """The `size`² crops at `(i, j)` of each row's images side by side, rows stacked, 4× (PNG)."""
    grid = torch.cat(
        [torch.cat([p[:, i : i + size, j : j + size] for p in row], dim=2) for row in rows], dim=1
    )
    write_image(path, grid.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2))


def tables(data: dict[str, Any]) -> str:
    """The model card's tables from a result of this script (Markdown)."""
    lines = [
        "| scale | model | images | LR RGB PSNR (dB) | worst image (dB) | p99.9 colour error "
        "| luma RMSE | chroma RMSE | SR RGB PSNR (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"set5": "Set5", "set14": "Set14", "demo": "demo photo"}
    cause = [
        "",
        "| scale | model | images | LR RGB PSNR (dB) as they are | colour at half resolution "
        "| luma at half resolution |",
        "|---|---|---|---|---|---|",
    ]
    for key in (k for k in data if k.startswith("x")):
        for model, sets in data[key].items():
            for name, c in sets.get("cause", {}).items():
                cause.append(
                    f"| ×{key[1:]} | {model} | {names[name]} | {c['as_is']:.2f} "
                    f"| {c['colour']:.2f} | {c['grey']:.2f} |"
                )
            for name, r in ((n, r) for n, r in sets.items() if n in names):
                worst = f"{r['min_lr_psnr_rgb'][1]:.1f} ({r['min_lr_psnr_rgb'][0]})"
                lines.append(
                    f"| ×{key[1:]} | {model} | {names[name]} | {r['lr_psnr_rgb']:.2f} | {worst} "
                    f"| {r['lr_p999']:.1f} | {r['lr_luma_rmse']:.2f} | {r['lr_chroma_rmse']:.2f} "
                    f"| {r['sr_psnr_rgb']:.2f} |"
                )
    if len(cause) > 3:
        lines += cause
    levels = " | ".join(f"noise σ = {v:g}" for v in NOISE_LEVELS)
    columns = ("as_is", *(f"{v:g}" for v in NOISE_LEVELS))
    noise = [
        "",
        f"| scale | model | images | LR RGB PSNR (dB) as they are | {levels} |",
        "|---|---|---|---|" + "---|" * len(NOISE_LEVELS),
    ]
    far = [
        "",
        f"| scale | model | images | LR pixels > {FAR_OFF:g} levels off: as they are | {levels} "
        f"| most at σ = {NOISE_LEVELS[-1]:g} |",
        "|---|---|---|---|" + "---|" * (len(NOISE_LEVELS) + 1),
    ]
    for key in (k for k in data if k.startswith("x")):
        for model, sets in data[key].items():
            for name, c in sets.get("noise", {}).items():
                cells = " | ".join(f"{c[k]:.2f}" for k in columns)
                noise.append(f"| ×{key[1:]} | {model} | {names[name]} | {cells} |")
                if "far" in c:  # not in results measured before the count existed
                    counts = " | ".join(str(c["far"][k]) for k in columns)
                    image, count = c["far_worst"][columns[-1]]
                    far.append(
                        f"| ×{key[1:]} | {model} | {names[name]} | {counts} | {image} ({count}) |"
                    )
    if len(noise) > 3:
        lines += noise
    if len(far) > 3:
        lines += far
    if "data" in data:
        d = data["data"]
        lines += [
            "",
            "| images | finest-octave colour detail $r$ |",
            "|---|---|",
            f"| BSDS500 training photos (JPEG) | {d['bsds500_train']:.3f} |",
            f"| the same, resized by 0.5 | {d['bsds500_train_prescale_0.5']:.3f} |",
            f"| Set5 (PNG) | {d['set5']:.3f} |",
            f"| Set14 (PNG) | {d['set14']:.3f} |",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--model", action="append", default=[], metavar="xS=FILE", help="a model to add"
    )
    parser.add_argument(
        "--figure", type=Path, metavar="PREFIX", help="PREFIX_x<s>.png: the demo's LR crops"
    )
    parser.add_argument(
        "--crop-size", type=int, default=32, help="LR pixels per side of each crop (--figure)"
    )
    parser.add_argument(
        "--noisy-figure",
        type=Path,
        metavar="PREFIX",
        help="PREFIX_x<s>.png: LR crops of a Set5 image with colour noise of σ = 5 and 10",
    )
    parser.add_argument(
        "--noisy-image",
        metavar="NAME",
        help="the Set5 image of --noisy-figure (default: the "
        "one with the most LR pixels far off in colour at σ = 10)",
    )
    parser.add_argument("--no-data", action="store_true", help="skip the training-data part")
    parser.add_argument(
        "--no-cause", action="store_true", help="skip the half-resolution colour / luma part"
    )
    parser.add_argument("--no-noise", action="store_true", help="skip the colour-noise part")
    parser.add_argument(
        "--no-scores", action="store_true", help="skip the per-set LR and SR scores"
    )
    parser.add_argument(
        "--no-shipped", action="store_true", help="measure only the --model files, not the shipped"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--tables", action="store_true", help="print the Markdown tables of the stored result"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/irn_colour_cpu.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep what --out holds that this run does not measure (other models, parts)",
    )
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(json.loads(args.out.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    extra: dict[int, list[str]] = {}
    for item in args.model:
        key, _, file = item.partition("=")
        if not key.startswith("x") or not file:
            parser.error(f"--model takes x<scale>=FILE, got {item!r}")
        extra.setdefault(int(key[1:]), []).append(file)
    if args.no_shipped and set(args.scales) - set(extra):
        parser.error(
            f"--no-shipped leaves nothing to measure: give --model xS=FILE for each of "
            f"--scales {' '.join(map(str, args.scales))}"
        )
    out: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "threads": args.threads,
    }
    if not args.no_data:
        out["data"] = data_scores()
    from irn_speed import machine_meta  # this folder: run as a script

    machine = {**machine_meta(), "threads": args.threads}
    for s in args.scales:
        models = {} if args.no_shipped else {f"shipped x{s}": load(f"x{s}").eval()}
        models.update({Path(f).name: load(f).eval() for f in extra.get(s, [])})
        out[f"x{s}"] = {}
        for name, model in models.items():
            print(f"== {name}", flush=True)
            entry = out[f"x{s}"][name] = {} if args.no_scores else model_scores(model, s)
            if not args.no_cause:
                entry["cause"] = cause_scores(model, s)
            if not args.no_noise:
                entry["noise"] = noise_scores(model, s)
            entry["machine"] = machine
        if args.figure:
            path = args.figure.with_name(f"{args.figure.name}_x{s}.png")
            crops_figure(models, s, path, size=args.crop_size)
        if args.noisy_figure:
            path = args.noisy_figure.with_name(f"{args.noisy_figure.name}_x{s}.png")
            noisy_crops_figure(models, s, path, image=args.noisy_image)
    if args.merge and args.out.is_file():
        out = merged(json.loads(args.out.read_text()), out)
    write_json(args.out, out, indent=1)
    print(f"wrote {args.out}")
    return 0


def merged(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`stored` updated with `new`: per scale and model, the parts measured anew replace theirs."""
    result = {**stored, **{k: v for k, v in new.items() if not k.startswith("x")}}
    for key in (k for k in new if k.startswith("x")):
        models = dict(stored.get(key, {}))
        for name, entry in new[key].items():
            models[name] = {**models.get(name, {}), **entry}
        result[key] = models
    return result


if __name__ == "__main__":
    sys.exit(main())
