"""Where the training log's latent-loss spikes come from, and what they have to do with LR spots.

Usage:
    python benchmarks/irn_latent_spikes.py [--model x4] [--seed 29] [--batches 250 300]
        [--batch 16] [--patch 144] [--noise 0.5] [--noise-level 10] [--redraws 4]
        [--out benchmarks/results/irn_latent_spikes_cpu.json]

`flowlearn irn train` logs $L_\\text{distr} = \\frac1B\\sum_b \\|z_b\\|_2^2$ averaged since the
last logged step; on the noisy training data of the ×4 fine-tunes it sometimes jumps from
about 1.5 to 15–60 for one log interval. Two parts:

* `batches`: the training batches `--batches FROM TO` (0-based, `TO` excluded; batch $k$ is
  the one of training step $k + 1$, so the default is the interval logged at step 300) as a
  run with `data.seed = --seed` draws them (`PatchSampler` and `IRNTrainSet` on the 400
  BSDS500 photos, the run's noise settings), each patch through `--model` (float32). For every
  batch the mean $\\|z\\|^2$; for every patch above `--spike` times the median patch: the same
  patch without its noise and with `--redraws` fresh noise draws of the same level, where its
  latent energy sits (the share within the 1 % of LR pixels with the most), and the LR's
  largest colour error against its reference there and elsewhere.
* `noisy_test_images`: Set5 with Gaussian noise of σ = 10 (the colour benchmark's `noise`
  part, the same draws): for each image the LR pixel farthest off in colour against the
  bicubic LR, the LR pixel with the most latent energy, their distance, and the share of the
  latent energy within two pixels of the colour error's worst pixel.

Both parts also ask whether the response needs the image border: each spiking patch is run
again inside its photo (`in_photo`: up to 8 LR pixels of the photo around it, with fresh noise
of the patch's level there), each noisy image with 8 LR pixels of mirrored context
(`with_context`), and the LR and energy cropped back.

Prints one line per batch and per image, and the JSON at the end (also to `--out`).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from irn_colour import DATASETS, NOISE_LEVELS, colour_error, hr_images, noisy  # this folder
from irn_speed import machine_meta, print_json
from torch import Tensor
from torch.nn import functional as F

from flowlearn.images.metrics import quantize_8bit
from flowlearn.irn import IRN, load
from flowlearn.irn.data import FLIPS, IRNTrainSet, PatchSampler
from flowlearn.irn.evaluate import bicubic_downscale
from flowlearn.irn.fast import accelerate


def latent_energy(model: IRN, hr: Tensor) -> tuple[Tensor, Tensor]:
    """The LR `(3, h, w)` and the latent energy per LR pixel `(h, w)` of one HR image."""
    with torch.no_grad():
        y = model(hr[None])[0][0]
    return y[: model.channels], y[model.channels :].pow(2).sum(0)


def with_context(model: IRN, hr: Tensor, lr_pixels: int = 8) -> tuple[Tensor, Tensor]:
    """`latent_energy` of `hr` given `lr_pixels` LR pixels of context on every side.

    The image is mirrored outwards (reflect padding) by `lr_pixels` times the scale, run through
    the model, and the LR and energy cropped back to `hr`'s own pixels: the same content, no
    longer at the border where the convolutions' zero padding starts.
    """
    pad = lr_pixels * model.scale
    lr, energy = latent_energy(model, F.pad(hr[None], (pad,) * 4, mode="reflect")[0])
    k = lr_pixels
    return lr[:, k:-k, k:-k], energy[k:-k, k:-k]


def in_photo(
    model: IRN,
    data: IRNTrainSet,
    item: tuple[int, int],
    hr: Tensor,
    sigma: float,
    lr_pixels: int = 8,
) -> tuple[Tensor, Tensor, list[int]]:
    """`latent_energy` of the training patch `hr` (patch `item` of `data`) inside its photo.

    The crop is widened by up to `lr_pixels` LR pixels on each side, as far as the photo goes,
    and flipped like the patch; the patch itself, with its own noise, goes in the middle, and
    the ring around it gets fresh noise of the patch's level `sigma`. The LR and energy are
    cropped back to the patch. Also returns the context each side got, in LR pixels (top,
    bottom, left, right, in the patch's own orientation).
    """
    s, p = model.scale, data.patch_size // model.scale
    i, j, flips = data.placement(item)
    photo = data.image(item[0])
    h, w = photo.shape[-2] // s, photo.shape[-1] // s
    rows = [min(lr_pixels, i), min(lr_pixels, h - i - p)]  # context above, below
    cols = [min(lr_pixels, j), min(lr_pixels, w - j - p)]  # left, right
    big = photo[
        :, s * (i - rows[0]) : s * (i + p + rows[1]), s * (j - cols[0]) : s * (j + p + cols[1])
    ]
    hflip, vflip, transpose = flips
    for flag, op in zip(flips, FLIPS, strict=True):
        if flag:
            big = op(big)
    if hflip:
        cols.reverse()
    if vflip:
        rows.reverse()
    if transpose:
        rows, cols = cols, rows
    g = torch.Generator().manual_seed(item[1] % 2**63 + 1)
    x = (big + sigma * torch.randn(big.shape, generator=g)).clamp(0, 1)
    a, b = rows[0], cols[0]
    x[:, s * a : s * (a + p), s * b : s * (b + p)] = hr
    lr, energy = latent_energy(model, x)
    return lr[:, a : a + p, b : b + p], energy[a : a + p, b : b + p], rows + cols


def _where(energy: Tensor) -> tuple[int, int]:
    return divmod(int(energy.argmax()), energy.shape[1])


def _around(t: Tensor, where: tuple[int, int]) -> Tensor:
    """The 5×5 pixels of `t` `(h, w)` centred on `where` (fewer at the border)."""
    i, j = where
    return t[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3]


def _top_share(energy: Tensor, fraction: float = 0.01) -> float:
    flat = energy.flatten()
    k = max(1, round(fraction * flat.numel()))
    return float(flat.topk(k).values.sum() / flat.sum())


def batches(model: IRN, args: argparse.Namespace) -> dict[str, Any]:
    """Mean latent energy of each training batch, and what makes a spiking patch spike."""
    data = DATASETS / "bsds500"
    noisy_set = IRNTrainSet(
        data, model.scale, args.patch, noise=args.noise, noise_level=args.noise_level
    )
    # the same photos, LR references and crop draws without the noise (decoded once)
    clean_set = copy.copy(noisy_set)
    clean_set.noise = 0.0
    sampler = PatchSampler(len(noisy_set), args.batch, seed=args.seed)
    names = [f.name for f in noisy_set.files]
    steps, spikes = [], []
    for step in range(*args.batches):
        items = sampler.batch(step)
        found = []
        for item in items:
            hr, lr_ref = noisy_set[item]
            lr, energy = latent_energy(model, hr)
            found.append((float(energy.sum()), item, hr, lr_ref, lr, energy))
        totals = [f[0] for f in found]
        median = statistics.median(totals)
        steps.append({"batch": step, "mean": statistics.fmean(totals), "median": median})
        print(f"batch {step}: mean |z|^2 {steps[-1]['mean']:.2f}, median {median:.2f}", flush=True)
        for total, item, hr, lr_ref, lr, energy in found:
            if total > args.spike * median:
                spikes.append(
                    spike(
                        model, step, item, names, clean_set, (hr, lr_ref, lr, energy), args.redraws
                    )
                )
    return {"batches": steps, "spikes": spikes}


def spike(
    model: IRN,
    step: int,
    item: tuple[int, int],
    names: list[str],
    clean_set: IRNTrainSet,
    seen: tuple[Tensor, Tensor, Tensor, Tensor],
    redraws: int,
) -> dict[str, Any]:
    """One spiking patch: its latent energy with its noise, without it and with fresh draws.

    `seen` is the patch as trained on: HR, LR reference, the model's LR and latent energy.
    """
    hr, lr_ref, lr, energy = seen
    clean_hr, clean_ref = clean_set[item]
    clean_lr, clean_energy = latent_energy(model, clean_hr)
    noise = hr - clean_hr
    sigma = float(noise.std())
    g = torch.Generator().manual_seed(item[1] % 2**63)
    fresh = []
    for _ in range(redraws):
        draw = (clean_hr + sigma * torch.randn(hr.shape, generator=g)).clamp(0, 1)
        fresh.append(float(latent_energy(model, draw)[1].sum()))
    error = colour_error(lr, lr_ref)
    where = _where(energy)
    photo_lr, photo_energy, context = in_photo(model, clean_set, item, hr, sigma)
    out = {
        "batch": step,
        "image": names[item[0]],
        "z2": float(energy.sum()),
        "z2_without_noise": float(clean_energy.sum()),
        "z2_fresh_noise_same_level": fresh,
        "noise_sigma_levels": sigma * 255,
        "z2_share_top_1pc_pixels": _top_share(energy),
        "z2_max_at": list(where),
        "lr_error_max_levels": float(error.max()),
        "lr_error_max_at": list(_where(error)),
        "lr_error_max_near_z2_max_levels": float(_around(error, where).max()),
        "lr_error_max_without_noise_levels": float(colour_error(clean_lr, clean_ref).max()),
        "z2_in_photo": float(photo_energy.sum()),
        "lr_error_max_in_photo_levels": float(colour_error(photo_lr, lr_ref).max()),
        "photo_context_lr_pixels": context,
    }
    print("  spike: " + json.dumps(out), flush=True)
    return out


def noisy_test_images(model: IRN) -> list[dict[str, Any]]:
    """Set5 at σ = 10: is the LR's worst colour error where the latent energy is?"""
    level = NOISE_LEVELS[-1]
    rows = []
    for seed, (name, hr) in enumerate(hr_images("set5", model.scale)):
        x = noisy(hr, level, seed)  # the colour benchmark's draw for this image
        lr, energy = latent_energy(model, x)
        reference = bicubic_downscale(x, model.scale)
        error = colour_error(quantize_8bit(lr), reference)
        (i, j), (zi, zj) = _where(error), _where(energy)
        around = _around(energy, (i, j))
        context_error = colour_error(quantize_8bit(with_context(model, x)[0]), reference)
        row = {
            "image": name,
            "noise_levels": level,
            "lr_error_max_levels": float(error.max()),
            "lr_error_max_at": [i, j],
            "lr_size": list(error.shape),
            "z2_max_at": [zi, zj],
            "distance": max(abs(i - zi), abs(j - zj)),
            "z2_share_within_2px_of_lr_error_max": float(around.sum() / energy.sum()),
            "share_of_lr_pixels_within_2px": around.numel() / energy.numel(),
            "lr_error_with_context_levels": float(context_error[i, j]),
            "lr_error_max_with_context_levels": float(context_error.max()),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="x4", help="shipped name or weights file")
    parser.add_argument("--seed", type=int, default=29, help="the run's data.seed")
    parser.add_argument(
        "--batches",
        type=int,
        nargs=2,
        default=[250, 300],
        metavar=("FROM", "TO"),
        help="batch numbers, 0-based, TO excluded (batch k is trained on at step k + 1)",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=144)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--noise-level", type=float, default=10.0)
    parser.add_argument("--spike", type=float, default=20.0, help="times the batch's median")
    parser.add_argument("--redraws", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = accelerate(load(args.model))  # the same map, faster
    result = {
        "batches": batches(model, args),
        "noisy_test_images": noisy_test_images(model),
        "meta": {
            "model": args.model,
            "seed": args.seed,
            "batches": args.batches,
            "batch": args.batch,
            "patch": args.patch,
            "noise": args.noise,
            "noise_level": args.noise_level,
            "spike": args.spike,
            **machine_meta(),
        },
    }
    print_json(result, str(args.out) if args.out else None)
    return result


if __name__ == "__main__":
    main()
