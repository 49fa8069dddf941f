"""Tiled IRN rescaling: how far an edit propagates, memory per pixel, and a 24-megapixel photo.

Usage:
    python benchmarks/irn_tiling.py --margin [--scales 2 4] [--size 1024]
    python benchmarks/irn_tiling.py --calibrate [--scales 2 4] [--sides 256 512 768 1024] [--jobs N]
    python benchmarks/irn_tiling.py [--scales 2 4] [--photo 6000x4000] [--memory MB] [--threads N]
    python benchmarks/irn_tiling.py --agreement [--scales 2 4]
    python benchmarks/irn_tiling.py --tables

Each mode stores its part (`margin`, `calibrate`, `agreement`, `photo`) in
`benchmarks/results/irn_tiling_cpu.json` (`--out` to change), keeping the other parts;
`--tables` prints the Markdown tables of `flowlearn.irn.tiling`'s docstring from that file.

* `--margin`: with the shipped models, on a `--size`² crop of a photo (a BSDS500 test photo
  resized ×2 and mirrored to fill it), change one pixel in the middle: for the forward map one
  HR pixel (to 0 if it is above 1/2, else to 1), for the inverse one LR pixel (the same way) or
  one pixel of the latent z (+3 in every latent channel). For each Chebyshev distance r in LR
  pixels, the largest change of any output value at distance r (the HR output is max-pooled
  over s×s blocks onto the LR grid) is recorded, and the largest distance at which the change
  exceeds 0 (the receptive field actually reached), 1e-6 (float32 round-off) and 1/510 (half an
  8-bit level). Then the tiling error itself: for margins m, a 32² LR tile at four interior
  places is run with m LR pixels around it, and its centre is compared with the whole-image
  result (forward: the LR channels before rounding; inverse: the HR image).
* `--calibrate`: for each scale, direction, form (the paper form `IRN`, and the fast
  arrangement `flowlearn.irn.fast.accelerate(IRN)` that the command line runs) and HR side in
  `--sides`, a fresh process runs one tile of side² HR pixels (`model.downscale`, or
  `model.inverse` of `[LR, z]`) without gradients; the rise of the peak resident set size
  (`ru_maxrss`) over the resident size before the call is recorded, and a line
  `rise = workspace + bytes_per_pixel * side²` is fitted (least squares over sides >= 512).
* `--agreement`: every Set5 and Set14 image (cropped to a multiple of the scale) is
  downscaled and upscaled (seed 0) whole and in tiles of half its size with the default margin;
  the protocol's PSNR (Y and RGB, `evaluate_pair`) of both against the HR image, the PSNR
  between the two reconstructions and the share of LR values that differ are recorded.
* default: a `--photo` photo is written to a temporary folder (the mirrored BSDS500 photo,
  never committed), then `flowlearn irn downscale` and `flowlearn irn upscale --seed 0` run on
  it for each scale, each in a fresh process under `/usr/bin/time -v` (where it exists), which
  gives the peak resident set size and the wall time.

`--margin` and `--agreement` record which shipped files they measured (name and SHA-256), so
that a new shipped model without a new measurement shows. They replace only the scales in
`--scales` and keep the others' results, each scale with the machine description of its own
run (`meta`, keyed by scale). The machine's load is recorded with
the results (`os.getloadavg` before and after, the CPU
count): timings on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "irn_tiling_cpu.json"
BSDS_PHOTO = "test/100007.jpg"
THRESHOLDS = {"any": 0.0, "round_off": 1e-6, "half_8bit": 1 / 510}
SWEEP_MARGINS = [0, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40]  # LR pixels
SWEEP_TILE = 32
FORMS = ("paper", "fast")  # IRN as written, and flowlearn.irn.fast.accelerate(IRN)


def _shared_dataset(name: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import shared_path

    return Path(shared_path("datasets", name))


def make_photo(width: int, height: int) -> Image.Image:
    """A `width` × `height` RGB photo: a BSDS500 test photo resized ×2, mirrored to fill it."""
    with Image.open(_shared_dataset("bsds500") / BSDS_PHOTO) as im:
        photo = im.convert("RGB")
    photo = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.LANCZOS)
    pw, ph = photo.size
    canvas = Image.new("RGB", (width, height))
    for j, top in enumerate(range(0, height, ph)):
        for i, left in enumerate(range(0, width, pw)):
            piece = ImageOps.mirror(photo) if i % 2 else photo
            piece = ImageOps.flip(piece) if j % 2 else piece
            canvas.paste(piece, (left, top))
    return canvas


def _photo_tensor(side: int) -> torch.Tensor:
    from flowlearn.images.io import read_image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.png"
        make_photo(side, side).save(path)
        return read_image(path)[0][None]  # (1, 3, side, side)


def _meta() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _weights(scale: int) -> dict[str, str]:
    """The shipped model measured: its file name and the SHA-256 of its bytes."""
    from flowlearn.irn.checkpoint import model_info

    path = Path(model_info(f"x{scale}")["path"])
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


# ------------------------------------------------------------------------------------ margin


def _profile(delta: torch.Tensor, centre: tuple[int, int]) -> list[float]:
    """Largest value of `delta` (h, w) at each Chebyshev distance from `centre`."""
    h, w = delta.shape
    rows = (torch.arange(h) - centre[0]).abs()[:, None]
    cols = (torch.arange(w) - centre[1]).abs()[None, :]
    dist = torch.maximum(rows, cols)
    top = int(dist.max())
    out = torch.zeros(top + 1, dtype=torch.float64).scatter_reduce(
        0, dist.flatten(), delta.double().flatten(), reduce="amax"
    )
    return out.tolist()


def _radii(profile: list[float]) -> dict[str, int]:
    return {
        name: max((r for r, v in enumerate(profile) if v > level), default=-1)
        for name, level in THRESHOLDS.items()
    }


def _flip(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0.5, torch.zeros_like(x), torch.ones_like(x))


def measure_margin(scale: int, size: int) -> dict[str, Any]:
    """Propagation of a one-pixel change, and the tiling error against the margin."""
    from flowlearn.irn.checkpoint import load

    model = load(f"x{scale}").eval()
    s = scale
    hr = _photo_tensor(size)
    h = size // s
    c = h // 2  # the LR pixel changed: (c, c)
    result: dict[str, Any] = {"scale": s, "size": size}
    with torch.no_grad():
        y = model(hr)[0]  # (1, 3s², h, w)
        edited = hr.clone()
        edited[..., c * s, c * s] = _flip(edited[..., c * s, c * s])
        delta = (model(edited)[0] - y).abs().amax(dim=(0, 1))
        result["forward_hr_pixel"] = {"profile": _profile(delta, (c, c))}
        lr, z = model.split(y)
        lr = model.downscale(hr)
        x = model.inverse(model.join(lr, z))[0]
        for name, part in (("inverse_lr_pixel", "lr"), ("inverse_z_pixel", "z")):
            lr2, z2 = lr.clone(), z.clone()
            if part == "lr":
                lr2[..., c, c] = _flip(lr2[..., c, c])
            else:
                z2[..., c, c] += 3.0
            dx = (model.inverse(model.join(lr2, z2))[0] - x).abs().amax(dim=(0, 1))
            pooled = dx.reshape(h, s, h, s).amax(dim=(1, 3))  # onto the LR grid
            result[name] = {"profile": _profile(pooled, (c, c))}
        for entry in result.values():
            if isinstance(entry, dict):
                entry["radius"] = _radii(entry["profile"])
                entry["profile"] = [float(f"{v:.3g}") for v in entry["profile"]]

        # the tiling error: an interior tile with margin m against the whole image
        lr_float = y[:, : model.channels]
        places = [(h // 4, h // 4), (h // 4, 3 * h // 4), (3 * h // 4, h // 4), (h // 2, h // 2)]
        sweep = []
        t = SWEEP_TILE
        for m in SWEEP_MARGINS:
            forward_err, inverse_err = 0.0, 0.0
            for top, left in places:
                a, b = top - t // 2, left - t // 2  # tile centre [a, a + t) x [b, b + t)
                ra, rb = a - m, b - m  # region start
                crop = hr[..., ra * s : (a + t + m) * s, rb * s : (b + t + m) * s]
                out = model(crop)[0][:, : model.channels, m : m + t, m : m + t]
                whole = lr_float[..., a : a + t, b : b + t]
                forward_err = max(forward_err, float((out - whole).abs().max()))
                joined = model.join(lr, z)[..., ra : a + t + m, rb : b + t + m]
                back = model.inverse(joined)[0][..., m * s : (m + t) * s, m * s : (m + t) * s]
                whole_x = x[..., a * s : (a + t) * s, b * s : (b + t) * s]
                inverse_err = max(inverse_err, float((back - whole_x).abs().max()))
            sweep.append(
                {"margin": m, "forward_max_err": forward_err, "inverse_max_err": inverse_err}
            )
            print(f"  x{s} margin {m:3d}: forward {forward_err:.2e}  inverse {inverse_err:.2e}")
        result["tile_error_vs_margin"] = sweep
    result["weights"] = _weights(s)
    return result


# --------------------------------------------------------------------------------- calibrate


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _one_tile(scale: int, direction: str, side: int, form: str) -> dict[str, float]:
    """Run in a fresh process: the peak-memory rise of one tile."""
    from flowlearn.irn.checkpoint import load
    from flowlearn.irn.fast import accelerate

    model = load(f"x{scale}").eval()
    if form == "fast":
        accelerate(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if direction == "forward":
            x = torch.rand(1, 3, side, side, generator=g)
        else:
            x = model.join(
                torch.rand(1, 3, side // scale, side // scale, generator=g),
                torch.randn(model.latent_shape((1, 3, side // scale, side // scale)), generator=g),
            )
        before = _rss_bytes()
        start = time.perf_counter()
        if direction == "forward":
            model.downscale(x)
        else:
            model.inverse(x)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rise_mb": (peak - before) / 2**20, "rss_before_mb": before / 2**20, "seconds": seconds}


def _calibration_row(s: int, direction: str, form: str, side: int) -> dict[str, Any]:
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import irn_tiling; "
        f"print(json.dumps(irn_tiling._one_tile({s}, {direction!r}, {side}, {form!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    row: dict[str, Any] = {"scale": s, "direction": direction, "form": form, "side": side}
    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    print(row, flush=True)
    return row


def calibrate(scales: list[int], sides: list[int], jobs: int = 1) -> dict[str, Any]:
    cases = [(s, d, f) for s in scales for d in ("forward", "inverse") for f in FORMS]
    with ThreadPoolExecutor(jobs) as pool:  # each row in its own fresh process
        rows = list(
            pool.map(lambda a: _calibration_row(*a), [(*c, n) for c in cases for n in sides])
        )
    fits = []
    for s, direction, form in cases:
        pts = [
            (r["side"] ** 2, r["rise_mb"] * 2**20)
            for r in rows
            if (r["scale"], r["direction"], r["form"]) == (s, direction, form) and r["side"] >= 512
        ]
        n = len(pts)
        mx = sum(p for p, _ in pts) / n
        my = sum(b for _, b in pts) / n
        slope = sum((p - mx) * (b - my) for p, b in pts) / sum((p - mx) ** 2 for p, _ in pts)
        fits.append(
            {
                "scale": s,
                "direction": direction,
                "form": form,
                "bytes_per_pixel": slope,
                "workspace_mb": (my - slope * mx) / 2**20,
            }
        )
    return {"rows": rows, "fits": fits}


# -------------------------------------------------------------------------------- agreement


def agreement(scales: list[int]) -> dict[str, Any]:
    """Tiled against whole-image results on every Set5 and Set14 image (tiles of half the image)."""
    from flowlearn.images.io import list_images, read_image
    from flowlearn.images.metrics import modcrop, psnr
    from flowlearn.irn.checkpoint import load
    from flowlearn.irn.evaluate import evaluate_pair
    from flowlearn.irn.fast import accelerate
    from flowlearn.irn.tiling import downscale_tiled, plan_tiles, upscale_tiled

    rows: list[dict[str, Any]] = []
    for s in scales:
        model = accelerate(load(f"x{s}")).eval()
        for dataset in ("set5", "set14"):
            for path in list_images(_shared_dataset(dataset)):
                hr = modcrop(read_image(path)[0], s)[None]
                h, w = hr.shape[-2] // s, hr.shape[-1] // s
                tile = max(h, w) // 2
                with torch.no_grad():
                    lr_whole = model.downscale(hr)
                    sr_whole = model.upscale(lr_whole, generator=torch.Generator().manual_seed(0))
                lr = downscale_tiled(model, hr, tile=tile)
                sr = upscale_tiled(model, lr, generator=torch.Generator().manual_seed(0), tile=tile)
                ours, theirs = evaluate_pair(hr, sr, s), evaluate_pair(hr, sr_whole, s)
                row: dict[str, Any] = {
                    "scale": s,
                    "image": f"{dataset}/{path.name}",
                    "tiles": len(plan_tiles(h, w, s, tile=tile)),
                    "lr_values_differing": float((lr != lr_whole).double().mean()),
                    "psnr_between_sr_db": float(psnr(sr.double(), sr_whole.double())),
                    "psnr_y_tiled": ours["psnr_y"],
                    "psnr_y_whole": theirs["psnr_y"],
                    "psnr_rgb_tiled": ours["psnr_rgb"],
                    "psnr_rgb_whole": theirs["psnr_rgb"],
                }
                print(row, flush=True)
                rows.append(row)
    weights = {f"x{s}": _weights(s) for s in scales}
    return {"rows": rows, "max_abs_psnr_difference_db": worst_difference(rows), "weights": weights}


def worst_difference(rows: list[dict[str, Any]]) -> float:
    """The largest |tiled - whole| PSNR difference (Y or RGB) over agreement rows, in dB."""
    return max(abs(r[f"psnr_{c}_tiled"] - r[f"psnr_{c}_whole"]) for r in rows for c in ("y", "rgb"))


# ------------------------------------------------------------------------------------- photo


def _timed(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a command in a fresh process; its peak resident set size and wall time."""
    use_time = Path("/usr/bin/time").exists()
    full = ["/usr/bin/time", "-v", *command] if use_time else command
    start = time.perf_counter()
    proc = subprocess.Popen(
        full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    result: dict[str, Any] = {"command": " ".join(command[1:]), "wall_s": wall}
    if use_time:
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
        user = re.search(r"User time \(seconds\): ([\d.]+)", stderr)
        system = re.search(r"System time \(seconds\): ([\d.]+)", stderr)
        cpu = re.search(r"Percent of CPU this job got: (\d+)%", stderr)
        assert rss and user and system and cpu, stderr[-2000:]
        result["peak_rss_mb"] = int(rss.group(1)) / 1024
        result["cpu_s"] = float(user.group(1)) + float(system.group(1))
        result["cpu_percent"] = int(cpu.group(1))
    else:
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def photo_benchmark(
    scales: list[int], width: int, height: int, memory: int | None, threads: int | None, out: Path
) -> None:
    """Downscale then upscale a `width` x `height` photo with the command line, per scale.

    The results are stored under `photo` in `out` after every command, with the machine's
    load before and after it.
    """
    results: dict[str, Any] = {
        "size": [width, height],
        "memory_mb": memory,
        "threads": threads,
        "meta": _meta(),
        "runs": {},
    }
    extra = [] if memory is None else ["--memory", str(memory)]
    env = dict(os.environ)
    if threads is not None:  # torch's intra-op threads in the command's process
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.png"
        make_photo(width, height).save(photo)
        cli = [sys.executable, "-m", "flowlearn", "irn"]
        for s in scales:
            lr = Path(folder) / f"photo_x{s}_lr.png"
            steps = {
                "downscale": ["downscale", str(photo)],
                "upscale": ["upscale", str(lr), "--seed", "0"],
            }
            run: dict[str, Any] = {}
            results["runs"][f"x{s}"] = run
            for step, argv in steps.items():
                load = list(os.getloadavg())
                run[step] = _timed([*cli, *argv, "--model", f"x{s}", "--out", folder, *extra], env)
                run[step]["loadavg_before"] = load
                run[step]["loadavg_after"] = list(os.getloadavg())
                print(step, f"x{s}", json.dumps(run[step]), flush=True)
                _store(out, "photo", results)
            with Image.open(Path(folder) / f"photo_x{s}_sr.png") as im:
                assert im.size == (width, height), im.size


# -------------------------------------------------------------------------------------- tables


def _scales(part: dict[str, Any]) -> list[str]:
    return sorted((k for k in part if k.startswith("x")), key=lambda k: int(k[1:]))


def margin_tables(margin: dict[str, Any]) -> list[str]:
    """How far a one-pixel change reaches, and the tile error for each margin (Markdown)."""
    lines = [
        "| scale | change | reach (any) | above 1e-6 | above 1/510 |",
        "|---|---|---|---|---|",
    ]
    names = {
        "forward_hr_pixel": "one HR pixel, forward",
        "inverse_lr_pixel": "one LR pixel, inverse",
        "inverse_z_pixel": "one z pixel, inverse",
    }
    for key in _scales(margin):
        for name, label in names.items():
            r = margin[key][name]["radius"]
            lines.append(
                f"| ×{margin[key]['scale']} | {label} | {r['any']} | {r['round_off']} | "
                f"{r['half_8bit']} |"
            )
    heads = [f"×{margin[k]['scale']} {d}" for k in _scales(margin) for d in ("forward", "inverse")]
    lines += ["", "| margin | " + " | ".join(heads) + " |", "|---" * (1 + len(heads)) + "|"]
    sweeps = [margin[k]["tile_error_vs_margin"] for k in _scales(margin)]
    for i, row in enumerate(sweeps[0]):
        cells = [f"{sw[i][f'{d}_max_err']:.1e}" for sw in sweeps for d in ("forward", "inverse")]
        lines.append(f"| {row['margin']} | " + " | ".join(cells) + " |")
    return lines


def memory_table(calibration: dict[str, Any]) -> list[str]:
    """The fitted working memory per HR pixel of a tile (Markdown)."""
    lines = [
        "| scale | direction | form | bytes per HR pixel | workspace (MiB) |",
        "|---|---|---|---|---|",
    ]
    for fit in calibration["fits"]:
        lines.append(
            f"| ×{fit['scale']} | {fit['direction']} | {fit['form']} | "
            f"{fit['bytes_per_pixel']:.0f} | {fit['workspace_mb']:.0f} |"
        )
    return lines


def photo_table(photo: dict[str, Any]) -> list[str]:
    """Peak memory and time of the command line on the big photo (Markdown)."""
    width, height = photo["size"]
    lines = [
        "| scale | command | peak RSS (MiB) | wall time (min) | CPU time (min) | load average |",
        "|---|---|---|---|---|---|",
    ]
    for key in _scales(photo["runs"]):
        for step, run in photo["runs"][key].items():
            load = (run["loadavg_before"][1] + run["loadavg_after"][1]) / 2
            lines.append(
                f"| {key.replace('x', '×')} | `{step}` {width}x{height} | {run['peak_rss_mb']:.0f} "
                f"| {run['wall_s'] / 60:.1f} | {run.get('cpu_s', float('nan')) / 60:.1f} | "
                f"{load:.1f} |"
            )
    return lines


def tables(data: dict[str, Any], parts: tuple[str, ...] = ("margin", "calibrate")) -> str:
    """The Markdown tables of the stored results: by default those of the tiling docstring."""
    makers = {"margin": margin_tables, "calibrate": memory_table, "photo": photo_table}
    blocks = ["\n".join(makers[part](data[part])) for part in parts if part in data]
    return "\n\n".join(blocks)


def merge_scales(old: dict[str, Any], new: dict[str, Any], scale: int) -> dict[str, Any]:
    """A `margin` or `agreement` part with the results of one scale replaced by `new`'s.

    Each scale keeps the machine description (`meta`) of its own run; a part stored before
    `meta` was kept per scale lends its single description to every scale it held.
    """
    key = f"x{scale}"
    kept = sorted({int(k[1:]) for k in [*_scales(old), *old.get("weights", {})]} - {scale})
    old_meta = old.get("meta", {})
    if not any(k.startswith("x") for k in old_meta):
        old_meta = {f"x{s}": old_meta for s in kept} if old_meta else {}
    meta = {**{f"x{s}": old_meta[f"x{s}"] for s in kept if f"x{s}" in old_meta}, **new["meta"]}
    if "rows" not in new:  # margin: one entry per scale
        merged = {f"x{s}": old[f"x{s}"] for s in kept}
        merged[key] = new[key]
    else:  # agreement: rows tagged with their scale, and the weights measured at each
        rows = [r for r in old.get("rows", []) if r["scale"] != scale] + new["rows"]
        rows.sort(key=lambda r: r["scale"])
        weights = {f"x{s}": old["weights"][f"x{s}"] for s in kept}
        merged = {"rows": rows, "max_abs_psnr_difference_db": worst_difference(rows)}
        merged["weights"] = {**weights, key: new["weights"][key]}
    merged["meta"] = dict(sorted(meta.items(), key=lambda kv: int(kv[0][1:])))
    return merged


def _store(path: Path, key: str, value: Any) -> None:
    from flowlearn.images.io import write_json

    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    write_json(path, data, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--margin", action="store_true", help="propagation and tiling error")
    parser.add_argument("--calibrate", action="store_true", help="memory per pixel")
    parser.add_argument("--tables", action="store_true", help="print the docstring's tables")
    parser.add_argument("--agreement", action="store_true", help="tiled vs whole on Set5/14")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--size", type=int, default=1024, help="--margin: side of the photo")
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512, 768, 1024])
    parser.add_argument("--jobs", type=int, default=1, help="--calibrate: processes at once")
    parser.add_argument("--photo", default="6000x4000", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--memory", type=int, default=None, help="--memory of the command line")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the commands")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.tables:
        print(tables(json.loads(args.out.read_text()), ("margin", "calibrate", "photo")))
        return
    if args.margin or args.agreement:
        # one scale at a time, so that a new model at one scale leaves the other's results alone
        part = "margin" if args.margin else "agreement"
        stored = json.loads(args.out.read_text()) if args.out.exists() else {}
        for s in args.scales:
            meta = _meta()
            new = {f"x{s}": measure_margin(s, args.size)} if args.margin else agreement([s])
            new["meta"] = {f"x{s}": {**meta, "loadavg_after": list(os.getloadavg())}}
            stored[part] = merge_scales(stored.get(part, {}), new, s)
            _store(args.out, part, stored[part])
    elif args.calibrate:
        meta = _meta()
        value = calibrate(args.scales, args.sides, args.jobs)
        value["meta"] = {**meta, "loadavg_after": list(os.getloadavg())}
        _store(args.out, "calibrate", value)
    else:
        width, height = (int(v) for v in args.photo.lower().split("x"))
        photo_benchmark(args.scales, width, height, args.memory, args.threads, args.out)


if __name__ == "__main__":
    main()
