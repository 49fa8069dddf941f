r"""The test protocol of the Invertible Rescaling Net paper, and its bicubic baseline.

For every ground-truth image $x$ of a folder (Set5, Set14, ...):

1. $x$ is cropped to a multiple of the scale $s$ (`modcrop`; the result lists the images it
   changed).
2. IRN: $y = \mathrm{Quantize}(f(x)_{\mathrm{LR}})$ (`model.downscale`), then for each draw
   $d = 0..D-1$ a latent $z \sim \mathcal{N}(0, T^2 I)$ from a generator seeded `seed + d`
   and $\hat{x} = f^{-1}(y, z)$ (`model.upscale`). Bicubic baseline: $y$ = MATLAB bicubic
   downscaling rounded to 8 bits, $\hat{x}$ = bicubic upscaling of $y$ rounded to 8 bits.
3. $x$ and $\hat{x}$ are rounded to 8 bits; PSNR and SSIM are computed on RGB and on the BT.601
   luma Y (floating point, from the 8-bit RGB), with $s$ pixels shaved off each side.
4. Per image, the metrics are averaged over the draws; the dataset score is the mean over images,
   and the spread of that mean across draws is reported next to it.

The paper's tables give Y-channel numbers (PSNR/SSIM on Y).

References:
    M. Xiao, S. Zheng, C. Liu, Y. Wang, D. He, G. Ke, J. Bian, Z. Lin, T.-Y. Liu, 2020,
    "Invertible Image Rescaling", arXiv:2005.05650, §4.1 (protocol, mean of 5 draws) and
    Table 1 ("Bicubic & Bicubic": Set5 Y-PSNR 33.66 dB at ×2, 28.42 dB at ×4).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import Tensor, nn
from tqdm import tqdm

from flowlearn.images.imresize import imresize
from flowlearn.images.io import list_images, read_image, write_image
from flowlearn.images.metrics import modcrop, psnr, quantize_8bit, rgb_to_y, ssim, to_uint8
from flowlearn.irn.tiling import check_pixels, downscale_tiled, upscale_tiled

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = [
    "METRICS",
    "RescalingModel",
    "bicubic_downscale",
    "bicubic_rescale",
    "bicubic_upscale",
    "evaluate_folder",
    "evaluate_pair",
    "format_table",
]

METRICS: tuple[str, ...] = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
"""The four per-image metrics of the protocol, in table order."""


class RescalingModel(Protocol):
    r"""What `evaluate_folder` needs from a model (the `IRN` class has it)."""

    scale: int

    def downscale(self, hr: Tensor) -> Tensor:
        r"""`(B, 3, H, W)` → 8-bit quantised `(B, 3, H/s, W/s)`."""
        ...

    def upscale(
        self, lr: Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""`(B, 3, h, w)` → `(B, 3, s h, s w)`, drawing the latent from `generator`."""
        ...


def _check_scale(scale: object) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return scale


def _one_image(x: Tensor, name: str) -> Tensor:
    # (3, H, W) or (1, 3, H, W) -> (1, 3, H, W)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(
            f"{name}: expected one RGB image (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}"
        )
    return x


def evaluate_pair(
    hr: Tensor, sr: Tensor, scale: int, *, border: int | None = None
) -> dict[str, float]:
    r"""PSNR and SSIM of one reconstruction, on RGB and on Y, as the protocol computes them.

    Both images are rounded to 8 bits first (`to_uint8`); Y is computed in floating point from the
    8-bit RGB; `border` (default: `scale`) pixels are shaved off each side.

    Args:
        hr: Ground truth `(3, H, W)` or `(1, 3, H, W)` in [0, 1].
        sr: Reconstruction of the same shape.
        scale: Rescaling factor $s$ (the default border).
        border: Pixels shaved off each side; `None` means `scale`.

    Returns:
        `{"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"}` as floats (PSNR in dB).

    Examples:
        >>> hr = torch.rand(3, 32, 32)
        >>> evaluate_pair(hr, hr, 2)["ssim_y"]
        1.0
    """
    scale = _check_scale(scale)
    hr, sr = _one_image(hr, "evaluate_pair(hr)"), _one_image(sr, "evaluate_pair(sr)")
    if hr.shape != sr.shape:
        raise ValueError(f"evaluate_pair: hr {tuple(hr.shape)} and sr {tuple(sr.shape)} differ")
    border = scale if border is None else border
    hr8 = to_uint8(hr).to(torch.float64) / 255  # the protocol's tensor2img, back on [0, 1]
    sr8 = to_uint8(sr).to(torch.float64) / 255
    hr_y, sr_y = rgb_to_y(hr8), rgb_to_y(sr8)
    return {
        "psnr_rgb": psnr(hr8, sr8, border=border)[0].item(),
        "ssim_rgb": ssim(hr8, sr8, border=border)[0].item(),
        "psnr_y": psnr(hr_y, sr_y, border=border)[0].item(),
        "ssim_y": ssim(hr_y, sr_y, border=border)[0].item(),
    }


def _check_divisible(x: Tensor, scale: int, name: str) -> None:
    h, w = x.shape[-2], x.shape[-1]
    if h % scale or w % scale:
        raise ValueError(
            f"{name}: image {h}×{w} is not a multiple of the scale {scale}; "
            f"crop it first with flowlearn.images.metrics.modcrop"
        )


def bicubic_downscale(hr: Tensor, scale: int) -> Tensor:
    r"""MATLAB bicubic downscaling by `scale`, rounded to 8 bits (the baseline's LR image).

    Args:
        hr: Images `(..., 3, H, W)` in [0, 1], H and W multiples of `scale`.
        scale: Integer factor $s$.

    Returns:
        `(..., 3, H/s, W/s)` on the 8-bit grid.

    Examples:
        >>> bicubic_downscale(torch.rand(3, 8, 12), 4).shape
        torch.Size([3, 2, 3])
    """
    scale = _check_scale(scale)
    _check_divisible(hr, scale, "bicubic_downscale")
    h, w = hr.shape[-2], hr.shape[-1]
    return quantize_8bit(imresize(hr, size=(h // scale, w // scale)))


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    r"""MATLAB bicubic upscaling by `scale`, rounded to 8 bits (the baseline's reconstruction).

    Args:
        lr: Images `(..., 3, h, w)` in [0, 1].
        scale: Integer factor $s$.

    Returns:
        `(..., 3, s h, s w)` on the 8-bit grid.

    Examples:
        >>> bicubic_upscale(torch.rand(3, 2, 3), 4).shape
        torch.Size([3, 8, 12])
    """
    scale = _check_scale(scale)
    h, w = lr.shape[-2], lr.shape[-1]
    return quantize_8bit(imresize(lr, size=(h * scale, w * scale)))


def bicubic_rescale(hr: Tensor, scale: int) -> Tensor:
    r"""The "Bicubic & Bicubic" baseline: downscale then upscale, each rounded to 8 bits.

    The protocol crops the ground truth to a multiple of `scale` first (`modcrop`); this function
    expects that done and raises otherwise, so the caller knows the image changed.

    Args:
        hr: Images `(..., 3, H, W)` in [0, 1], H and W multiples of `scale`.
        scale: Integer factor $s$.

    Returns:
        Reconstruction of the shape of `hr`, on the 8-bit grid.

    Examples:
        >>> hr = torch.rand(3, 16, 16)
        >>> bicubic_rescale(hr, 2).shape
        torch.Size([3, 16, 16])
    """
    return bicubic_upscale(bicubic_downscale(hr, scale), scale)


def _model_device(model: object) -> torch.device:
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(model: object) -> Iterator[None]:
    # Evaluate in eval mode and leave the caller's model in the mode it was in.
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _std(values: list[float]) -> float:
    # Sample standard deviation (n - 1); 0 for a single value.
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


class _ModelOutputError(ValueError):
    r"""A model output of the wrong shape: a broken model, which stops the evaluation."""


def evaluate_folder(
    model: RescalingModel | None,
    data_dir: str | os.PathLike[str],
    scale: int,
    *,
    draws: int = 5,
    seed: int = 0,
    temperature: float = 1.0,
    save_images: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    memory_mb: float | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    r"""Run the paper's test protocol on every image of a folder (see the module docstring).

    With `model=None` the "Bicubic & Bicubic" baseline is evaluated (deterministic: one draw).
    With a model, the LR image is `lr = model.downscale(hr)` and draw $d$ is
    `model.upscale(lr, temperature=temperature, generator=g)` with
    `g = torch.Generator(device).manual_seed(seed + d)`, under `torch.inference_mode()` and in
    eval mode (restored afterwards).

    Args:
        model: An `IRN` (anything with `scale`, `downscale`, `upscale`) or `None` for bicubic.
        data_dir: Folder of ground-truth images (`list_images`).
        scale: Rescaling factor; must equal `model.scale`.
        draws: Number of latent draws per image (the paper averages 5).
        seed: Seed of draw 0; draw $d$ uses `seed + d`.
        temperature: Standard deviation $T$ of the latent.
        save_images: If given, folder receiving `<stem>_LR.png` and `<stem>_SR.png` (draw 0).
        progress: Show a tqdm progress bar on stderr.
        device: Where to compute; default: the model's device (CPU for bicubic).
        memory_mb: If given, an `IRN` downscales and upscales tile by tile within this budget
            (`flowlearn.irn.tiling.downscale_tiled` / `upscale_tiled`, the same latent draws);
            images that fit are one tile and give exactly the results of the whole-image calls.
        max_pixels: If given, images of more pixels are refused (`ValueError`).

    Returns:
        A JSON-serialisable dict: `scale`, `method` (`"irn"` or `"bicubic"`), `draws`, `seed`,
        `temperature`, `border`, `data_dir`, `num_images`, `mean` (each metric of `METRICS`
        averaged over images, plus `<metric>_std_over_draws`: the sample standard deviation over
        draws of the dataset mean; IRN adds `lr_psnr_rgb`/`lr_psnr_y`, the 8-bit LR against the
        8-bit bicubic LR), `per_draw_mean` (`{metric: [dataset mean of draw d]}`), `modcropped`
        (names of the images cropped to a multiple of `scale`), `notes` (`{name: conversion
        note}` from `read_image`), `failed` (one `{"name", "reason"}` per image that could not be
        read or evaluated: the others are still evaluated, and the means are over them; with
        none left, `mean` and `per_draw_mean` are empty) and `images`: one dict per image with
        `name`, `hr_size`,
        `size` (after modcrop), `modcropped`, `note`, the metrics averaged over draws, and
        `<metric>_draws` (one value per draw). A perfect reconstruction has PSNR `inf`, which
        `json.dumps` writes as `Infinity`.

    Raises:
        ValueError: Bad arguments, a model whose `scale` differs, or a model output of the wrong
            shape. `ImageError` (a `ValueError`) for a missing or empty folder. A bad image
            (unreadable, too large, too small) is listed in `failed` instead.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_image(f"{folder}/a.png", torch.rand(3, 34, 33))
        >>> result = evaluate_folder(None, folder, 2, progress=False)
        >>> result["method"], result["modcropped"], result["images"][0]["size"]
        ('bicubic', ['a.png'], [34, 32])
    """
    scale = _check_scale(scale)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"evaluate_folder: draws must be a positive integer, got {draws!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"evaluate_folder: temperature must be finite and >= 0, got {temperature}")
    if model is not None and getattr(model, "scale", None) != scale:
        raise ValueError(
            f"evaluate_folder: the model rescales by {getattr(model, 'scale', None)!r}"
            f", but scale={scale} was asked for"
        )
    paths = list_images(data_dir)
    dev = torch.device(device) if device is not None else _model_device(model)
    method = "bicubic" if model is None else "irn"
    n_draws = 1 if model is None else draws
    out_dir = Path(save_images) if save_images is not None else None

    downscale: Callable[[Tensor], Tensor] | None = None
    upscale: Callable[..., Tensor] | None = None
    if model is not None and memory_mb is not None:
        net = cast("IRN", model)
        downscale = partial(downscale_tiled, net, memory_mb=memory_mb, max_pixels=max_pixels)
        upscale = partial(upscale_tiled, net, memory_mb=memory_mb, max_pixels=max_pixels)
    elif model is not None:
        downscale, upscale = model.downscale, model.upscale

    images: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    with torch.inference_mode(), _eval_mode(model):
        for path in tqdm(paths, desc=f"{method} ×{scale}", unit="image", disable=not progress):
            try:
                hr_full, note = read_image(path)
                try:
                    check_pixels(hr_full.shape[-2], hr_full.shape[-1], max_pixels)
                except ValueError as err:
                    raise ValueError(f"{path.name}: {err}") from None
                hr = modcrop(hr_full, scale).unsqueeze(0).to(dev)  # (1, 3, H', W')
                h, w = hr.shape[-2], hr.shape[-1]
                lr_ref = imresize(hr, size=(h // scale, w // scale))  # bicubic LR, float
                if model is None:
                    lr = bicubic_downscale(hr, scale)
                    srs: Iterable[Tensor] = [bicubic_upscale(lr, scale)]
                else:
                    assert downscale is not None and upscale is not None
                    lr = downscale(hr)
                    if lr.shape != lr_ref.shape:
                        raise _ModelOutputError(
                            f"evaluate_folder: model.downscale gave {tuple(lr.shape)} "
                            f"for {path.name}, expected {tuple(lr_ref.shape)}"
                        )
                    # Lazily, one draw at a time, so only one reconstruction is held in memory.
                    srs = (
                        upscale(
                            lr,
                            temperature=temperature,
                            generator=torch.Generator(dev).manual_seed(seed + d),
                        )
                        for d in range(n_draws)
                    )
                per_draw = []
                for d, sr in enumerate(srs):
                    if sr.shape != hr.shape:
                        raise _ModelOutputError(
                            f"evaluate_folder: model.upscale gave {tuple(sr.shape)} "
                            f"for {path.name}, expected {tuple(hr.shape)}"
                        )
                    per_draw.append(evaluate_pair(hr, sr, scale))
                    if out_dir is not None and d == 0:
                        write_image(out_dir / f"{path.stem}_SR.png", sr)
                if out_dir is not None:
                    write_image(out_dir / f"{path.stem}_LR.png", lr)
                record: dict[str, Any] = {
                    "name": path.name,
                    "hr_size": [hr_full.shape[-2], hr_full.shape[-1]],
                    "size": [h, w],
                    "modcropped": (h, w) != tuple(hr_full.shape[-2:]),
                    "note": note,
                }
                for m in METRICS:
                    values = [p[m] for p in per_draw]
                    record[m] = sum(values) / len(values)
                    record[f"{m}_draws"] = values
                if model is not None:
                    record["lr_psnr_rgb"] = psnr(
                        to_uint8(lr[0]).double(), to_uint8(lr_ref[0]).double(), data_range=255.0
                    ).item()
                    record["lr_psnr_y"] = psnr(
                        rgb_to_y(to_uint8(lr[0]).double() / 255),
                        rgb_to_y(to_uint8(lr_ref[0]).double() / 255),
                    ).item()
                images.append(record)
            except _ModelOutputError:  # the model is broken, not this image
                raise
            except (ValueError, OSError) as err:  # this image fails; the others go on
                failed.append({"name": path.name, "reason": " ".join(str(err).split())})

    n = len(images)
    per_draw_mean: dict[str, list[float]] = {}
    mean: dict[str, float] = {}
    if n:  # with every image failed, no means
        per_draw_mean = {
            m: [sum(r[f"{m}_draws"][d] for r in images) / n for d in range(n_draws)]
            for m in METRICS
        }
        for m in METRICS:
            mean[m] = sum(r[m] for r in images) / n
        for m in METRICS:
            mean[f"{m}_std_over_draws"] = _std(per_draw_mean[m])
        if model is not None:
            for m in ("lr_psnr_rgb", "lr_psnr_y"):
                mean[m] = sum(r[m] for r in images) / n
    return {
        "scale": scale,
        "method": method,
        "draws": n_draws,
        "seed": None if model is None else seed,
        "temperature": None if model is None else float(temperature),
        "border": scale,
        "data_dir": str(data_dir),
        "num_images": n,
        "mean": mean,
        "per_draw_mean": per_draw_mean,
        "modcropped": [r["name"] for r in images if r["modcropped"]],
        "notes": {r["name"]: r["note"] for r in images if r["note"] is not None},
        "images": images,
        "failed": failed,
    }


def format_table(result: dict[str, Any]) -> str:
    r"""A readable table of an `evaluate_folder` result: one row per image, then the mean.

    Args:
        result: The dict returned by `evaluate_folder`.

    Returns:
        Multi-line text (no trailing newline).

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_image(f"{folder}/a.png", torch.rand(3, 32, 32))
        >>> print(format_table(evaluate_folder(None, folder, 2, progress=False)))
        Bicubic & Bicubic ×2 on ..., border 2 px; PSNR in dB, Y = BT.601 luma
        image   PSNR-Y  SSIM-Y  PSNR-RGB  SSIM-RGB
        ...
        mean    ...
    """
    if result["method"] == "irn":
        title = (
            f"IRN ×{result['scale']} on {result['data_dir']}, {result['draws']} draw(s), "
            f"seed {result['seed']}, temperature {result['temperature']}"
        )
    else:
        title = f"Bicubic & Bicubic ×{result['scale']} on {result['data_dir']}"
    title += f", border {result['border']} px; PSNR in dB, Y = BT.601 luma"
    names = [r["name"] for r in result["images"]]
    width = max(len("std over draws"), *(len(n) for n in names))
    heads = ("PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB")
    fmts = ("{:>8.2f}", "{:>8.4f}", "{:>10.2f}", "{:>10.4f}")

    def row(label: str, values: list[float]) -> str:
        cells = "".join(f.format(v) for f, v in zip(fmts, values))
        return f"{label:<{width}}{cells}"

    head = f"{'image':<{width}}{heads[0]:>8}{heads[1]:>8}{heads[2]:>10}{heads[3]:>10}"
    lines = [title, head]
    lines += [row(r["name"], [r[m] for m in METRICS]) for r in result["images"]]
    lines.append("-" * len(head))
    if not result["mean"]:  # every image failed
        lines.append(f"{'mean':<{width}}  (no image could be evaluated)")
    else:
        lines.append(row("mean", [result["mean"][m] for m in METRICS]))
    if result["draws"] > 1 and result["mean"]:
        lines.append(
            row("std over draws", [result["mean"][f"{m}_std_over_draws"] for m in METRICS])
        )
    for failure in result.get("failed", []):
        lines.append(f"failed: {failure['name']}: {failure['reason']}")
    if result["modcropped"]:
        sizes = {r["name"]: r for r in result["images"]}
        crops = ", ".join(
            f"{n} ({sizes[n]['hr_size'][0]}×{sizes[n]['hr_size'][1]} → "
            f"{sizes[n]['size'][0]}×{sizes[n]['size'][1]})"
            for n in result["modcropped"]
        )
        lines.append(f"cropped to a multiple of {result['scale']}: {crops}")
    for name, note in result["notes"].items():
        lines.append(f"{name}: {note}")
    return "\n".join(lines)
