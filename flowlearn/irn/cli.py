r"""`flowlearn irn …`: downscale, upscale, test and train Invertible Rescaling Nets.

* `flowlearn irn downscale IMAGE... --model M --out DIR [--pad]` writes the 8-bit LR of each
  image as `DIR/<stem>_x<s>_lr.png`.
* `flowlearn irn upscale IMAGE... --model M --out DIR [--temperature T] [--seed S] [--crop WxH]`
  rebuilds HR images from LR images alone (with a sampled $z$), as `DIR/<stem>_x<s>_sr.png`
  (a `_x<s>_lr` ending of the input name is replaced).
* `flowlearn irn test --model M --data DIR` (or `--bicubic --scale S`) prints per-image and mean
  PSNR/SSIM (RGB and Y) under the paper's protocol; `--json FILE` saves the numbers.
  `--config test_IRN_x4.yml` reads an original test option file (`load_test_options`): its
  model, scale, temperature and test sets, each of which the other options override.
* `flowlearn irn train --config FILE|NAME [--data DIR] [--resume] [--steps N] [--device D]`
  trains from a YAML configuration or a shipped one (`x2`, `x4`, `x8`, `tiny`).

`--model` takes a flowlearn checkpoint, an original IRN `.pth` file or the name of a shipped
model (`flowlearn.irn.checkpoint.load`).

User errors (unreadable files, sizes that are not a multiple of the scale, a model of another
scale, an output folder that cannot be written, bad configurations) print one line
`flowlearn irn <command>: error: …` on stderr and give exit status 1; the remaining files are
still processed. Conversions of unusual images (grey, RGBA, 16-bit, palette) print a note.

No command overwrites an existing file unless `--overwrite` is given, and no output is ever
written onto one of the command's inputs (even with `--overwrite`); `test --save-images`
refuses the data folder and any folder inside it. `test` goes on past images that fail, lists
them at the end and in the JSON (`"failed"`), and exits with status 1.

`downscale` marks each LR PNG with a `flowlearn` text chunk: the scale and a short fingerprint
of the model's weights (`model_fingerprint`). `upscale` reads it: without `--model` and
`--scale` it takes the scale from the mark, and it warns in one line when an image carries no
mark or another model's (IRN is not a super-resolution model: on an LR image it did not make, the
result is no better than bicubic).

`downscale`, `upscale` and `test` run the network in overlapping tiles when an image is larger
than one tile (`flowlearn.irn.tiling`): `--memory MB` is the budget for the image tensors and
the network's working memory (default 1024 MiB; the Python runtime and the model come on top),
and images of more than `--max-pixels` HR pixels (default 100 megapixels) are refused before
they are decoded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from flowlearn.irn.tiling import DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = ["register"]

_USER_ERRORS = (ValueError, OSError)  # ImageError, CheckpointError, ConfigError are ValueErrors


def _model(args: argparse.Namespace) -> IRN:
    r"""The IRN of `--model` (default: the shipped model of `--scale`, else x4) on `--device`.

    The model is read by `flowlearn.irn.checkpoint.load` (shipped names, flowlearn and original
    checkpoints, safetensors), checked against `--scale`, and put in its fast arrangement
    (`flowlearn.irn.fast.accelerate`: the same map up to float round-off).
    """
    from flowlearn.irn.checkpoint import load
    from flowlearn.irn.fast import accelerate
    from flowlearn.irn.train import resolve_device

    spec = args.model or f"x{args.scale or 4}"
    return accelerate(load(spec, scale=args.scale, device=resolve_device(args.device))).eval()


class _Reporter:
    r"""Prints one-line errors and notes for a subcommand and remembers whether any failed."""

    def __init__(self, command: str) -> None:
        self.prefix = f"flowlearn irn {command}"
        self.failed = False

    def error(self, message: object) -> None:
        debug = os.environ.get("FLOWLEARN_DEBUG", "") not in ("", "0")
        if debug and isinstance(message, Exception):
            raise message  # --debug: the traceback, from the except block that called this
        self.failed = True
        print(f"{self.prefix}: error: {_one_line(message)}", file=sys.stderr)

    def warning(self, message: object) -> None:
        print(f"{self.prefix}: warning: {_one_line(message)}", file=sys.stderr)

    def note(self, message: object) -> None:
        print(f"{self.prefix}: note: {_one_line(message)}", file=sys.stderr)

    @property
    def status(self) -> int:
        return 1 if self.failed else 0


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or not int(width) * int(height):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 481x321, got {text!r}")
    return int(width), int(height)


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of MiB, got {text!r}")
    return value


def _max_pixels(text: str) -> int | None:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of pixels (0: no limit), got {text!r}")
    return int(text) or None


def _prepare_out(folder: Path, report: _Reporter) -> bool:
    from flowlearn.images.io import make_folder

    try:
        make_folder(folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except NotADirectoryError as err:
        report.error(err)
        return False
    except OSError as err:
        report.error(f"cannot write to the output folder {folder}: {err.strerror or err}")
        return False
    return True


def _rescale_files(args: argparse.Namespace, command: str, convert: Callable[..., Any]) -> int:
    r"""Shared loop of `downscale` and `upscale`: load model, then each file independently."""
    from flowlearn.images.io import read_image, read_png_text, write_image

    report = _Reporter(command)
    if command == "upscale" and args.model is None and args.scale is None:
        marks = [_read_mark(read_png_text(name)) for name in args.images]
        scales = {mark["scale"] for mark in marks if mark is not None}
        if len(scales) == 1:
            args.scale = scales.pop()
            report.note(
                f"using the shipped x{args.scale} model (the images are marked x{args.scale})"
            )
    try:
        model = _model(args)
    except _USER_ERRORS as err:
        report.error(err)
        return report.status
    fingerprint = model_fingerprint(model)
    mark = {MARK_KEY: json.dumps({"scale": model.scale, "model": fingerprint})}
    if not _prepare_out(args.out, report):
        return report.status
    device = next(model.parameters()).device
    written: set[Path] = set()
    inputs = {Path(name).resolve() for name in args.images}
    for name in args.images:
        try:
            _check_pixels(name, args.max_pixels, model.scale if command == "upscale" else 1)
            x, note = read_image(name)  # (3, H, W) in [0, 1]
            if note:
                report.note(f"{name}: {note}")
            target = args.out / _output_name(Path(name), model.scale, command)
            if target in written:
                raise ValueError(f"{name}: would overwrite {target}, written for an earlier input")
            _check_target(target, inputs, args.overwrite)
            with torch.inference_mode():
                y = convert(model, x.to(device)[None], Path(name), report)  # (1, 3, h, w)
            if command == "upscale":
                _warn_unmarked(report, name, _read_mark(read_png_text(name)), model, fingerprint)
            write_image(target, y[0], metadata=mark if command == "downscale" else None)
            written.add(target)
            print(f"{target}  ({y.shape[-1]}x{y.shape[-2]})")
        except _USER_ERRORS as err:
            report.error(err)
    return report.status


MARK_KEY = "flowlearn"
r"""Key of the PNG text chunk that `downscale` writes: `{"scale": s, "model": fingerprint}`."""


def model_fingerprint(model: torch.nn.Module) -> str:
    r"""12 hex digits of the SHA-256 of the weights (as float32, in state-dict order).

    The same for a model saved in any dtype and loaded in float32; different for other weights.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        values = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:12]


def _read_mark(text: dict[str, str]) -> dict[str, Any] | None:
    try:
        mark = json.loads(text[MARK_KEY])
    except (KeyError, ValueError):
        return None
    ok = isinstance(mark, dict) and mark.get("scale") in (2, 4, 8)
    return mark if ok else None


def _warn_unmarked(
    report: _Reporter, name: str, mark: dict[str, Any] | None, model: Any, fingerprint: str
) -> None:
    r"""One line when the LR image was not made by this model's `downscale`."""
    if mark is None:
        why = "carries no flowlearn mark, so IRN probably did not make it"
    elif mark["scale"] != model.scale:
        why = f"was made at x{mark['scale']}, but the model is x{model.scale}"
    elif mark.get("model") != fingerprint:
        why = f"was made by another model ({mark.get('model')}, this one is {fingerprint})"
    else:
        return
    report.warning(
        f"{name} {why}; the result will be no better than bicubic (IRN is not a "
        "super-resolution model: it restores the LR images its own downscale made)"
    )


def _check_target(target: Path, inputs: set[Path], overwrite: bool) -> None:
    r"""Refuse to write `target` onto an input, or onto an existing file without `--overwrite`."""
    if target.resolve() in inputs:
        raise ValueError(f"{target} is also an input; choose another --out folder")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} exists; pass --overwrite to replace it, or choose another --out folder"
        )


def _check_save_folder(save: Path, data: list[Path], overwrite: bool) -> None:
    r"""Refuse a `--save-images` folder that is (inside) a data folder or holds earlier results."""
    from flowlearn.images.io import list_images

    where = save.resolve()
    for folder in data:
        root = folder.resolve()
        if where == root or root in where.parents:
            raise ValueError(
                f"--save-images {save} is inside the data folder {folder}: its images would be "
                "scored as ground truth next time; choose a folder outside it"
            )
        if overwrite or not where.is_dir():
            continue
        for image in list_images(folder):
            for kind in ("LR", "SR"):
                if (where / f"{image.stem}_{kind}.png").exists():
                    raise FileExistsError(
                        f"{save / f'{image.stem}_{kind}.png'} exists; pass --overwrite to "
                        "replace the saved images, or choose another --save-images folder"
                    )


def _check_pixels(name: str, max_pixels: int | None, factor: int) -> None:
    r"""Refuse an image whose HR size (each side times `factor`) is over the pixel limit.

    Only the file's header is read; a file Pillow cannot open is left to `read_image` to report.
    """
    import warnings

    from PIL import Image

    from flowlearn.irn.tiling import check_pixels

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(name) as im:
                width, height = im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return
    try:
        check_pixels(height * factor, width * factor, max_pixels)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _output_name(path: Path, scale: int, command: str) -> str:
    stem = path.stem
    if command == "downscale":
        return f"{stem}_x{scale}_lr.png"
    return f"{stem.removesuffix(f'_x{scale}_lr')}_x{scale}_sr.png"


def _cmd_downscale(args: argparse.Namespace) -> int:
    from flowlearn.irn.tiling import downscale_tiled

    def convert(model: Any, hr: torch.Tensor, name: Path, report: _Reporter) -> torch.Tensor:
        s = model.scale
        H, W = hr.shape[-2:]
        if H % s or W % s:
            if not args.pad:
                raise ValueError(
                    f"{name}: size {W}x{H} is not a multiple of the scale {s} "
                    f"(crop it, or pass --pad to reflect-pad it)"
                )
            ph, pw = -H % s, -W % s
            if ph >= H or pw >= W:
                raise ValueError(f"{name}: {W}x{H} is too small to pad to a multiple of {s}")
            hr = F.pad(hr, (0, pw, 0, ph), mode="reflect")  # (1, 3, H + ph, W + pw)
            report.note(
                f"{name}: reflect-padded {W}x{H} to {W + pw}x{H + ph}; "
                f"upscale with --crop {W}x{H} to get the original size back"
            )
        return downscale_tiled(
            model,
            hr,
            memory_mb=args.memory,
            max_pixels=args.max_pixels,
            progress=sys.stderr.isatty(),
        )

    return _rescale_files(args, "downscale", convert)


def _cmd_upscale(args: argparse.Namespace) -> int:
    from flowlearn.irn.tiling import upscale_tiled

    def convert(model: Any, lr: torch.Tensor, name: Path, report: _Reporter) -> torch.Tensor:
        generator = None
        if args.seed is not None:
            generator = torch.Generator(lr.device).manual_seed(args.seed)
        hr = upscale_tiled(
            model,
            lr,
            temperature=args.temperature,
            generator=generator,
            memory_mb=args.memory,
            max_pixels=args.max_pixels,
            progress=sys.stderr.isatty(),
        )
        if args.crop is not None:
            width, height = args.crop
            if width > hr.shape[-1] or height > hr.shape[-2]:
                raise ValueError(
                    f"{name}: --crop {width}x{height} is larger than the upscaled "
                    f"{hr.shape[-1]}x{hr.shape[-2]}"
                )
            hr = hr[..., :height, :width]
        return hr

    return _rescale_files(args, "upscale", convert)


def _cmd_test(args: argparse.Namespace) -> int:
    from flowlearn.images.io import write_json
    from flowlearn.irn.evaluate import evaluate_folder, format_table

    report = _Reporter("test")
    sets: dict[str, Path] = {}
    if args.config is not None:  # an original option file: defaults for the other options
        try:
            sets = _test_options(args)
        except _USER_ERRORS as err:
            report.error(err)
            return report.status
    if args.data is None and not sets:
        report.error("give --data FOLDER (or --config with a dataroot_GT)")
        return 2
    if args.temperature is None:
        args.temperature = 1.0
    if args.bicubic == (args.model is not None):
        report.error("give exactly one of --model M and --bicubic")
        return 2
    if args.bicubic and args.scale is None:
        report.error("--bicubic needs --scale")
        return 2
    try:
        model = None if args.bicubic else _model(args)
        scale = args.scale if model is None else model.scale
        if model is not None and args.blocks not in (None, model.blocks):
            raise ValueError(
                f"{args.config}: network_G.block_num is {args.blocks}, the model has {model.blocks}"
            )
        folders = {"data": args.data} if args.data is not None else sets
        if args.save_images is not None:
            _check_save_folder(args.save_images, list(folders.values()), args.overwrite)
            if not _prepare_out(args.save_images, report):
                return report.status
        if args.json is not None:
            if args.json.is_dir():
                raise IsADirectoryError(f"--json {args.json} is a folder; expected a file name")
            if args.json.exists() and not args.overwrite:
                raise FileExistsError(
                    f"{args.json} exists; pass --overwrite to replace it, or choose another --json"
                )
            if not _prepare_out(args.json.parent, report):
                return report.status
        results = {}
        for name, folder in folders.items():
            result = evaluate_folder(
                model,
                folder,
                scale,
                draws=args.draws,
                seed=args.seed,
                temperature=args.temperature,
                save_images=args.save_images,
                progress=sys.stderr.isatty(),
                memory_mb=args.memory,
                max_pixels=args.max_pixels,
            )
            if args.data is None:
                print(f"{name}:")
            print(format_table(result))
            results[name] = result
        if args.json is not None:
            write_json(args.json, results["data"] if args.data is not None else results)
        for result in results.values():  # at the end, after the tables and the JSON
            for failure in result["failed"]:
                reason = failure["reason"]
                if failure["name"] not in reason:
                    reason = f"{failure['name']}: {reason}"
                report.error(f"{Path(result['data_dir']) / failure['name']} skipped: {reason}")
    except _USER_ERRORS as err:
        report.error(err)
    return report.status


def _test_options(args: argparse.Namespace) -> dict[str, Path]:
    r"""Fill unset `test` options from an original test option file; its test sets by name."""
    from flowlearn.irn.config import load_test_options

    options = load_test_options(args.config)
    if args.scale is None:
        args.scale = options.scale
    elif args.scale != options.scale:
        raise ValueError(f"{args.config} is for x{options.scale}, but --scale {args.scale}")
    if args.model is None and not args.bicubic:
        if options.model is None or not options.model.is_file():
            raise FileNotFoundError(
                f"{args.config}: path.pretrain_model_G {options.model} does not exist; "
                "give the weights with --model"
            )
        args.model = str(options.model)
    args.blocks = options.blocks
    if args.temperature is None:
        args.temperature = options.temperature
    return {name: folder for name, folder in options.datasets.items() if folder is not None}


_RESUME_SETTABLE = ("optim.steps", "data.train", "data.workers", "data.pin_memory")
r"""Keys `--set` may change on `--resume` (with every `run.` key): where and how long, not what."""


def _check_resume_overrides(config: Any, settings: list[str]) -> None:
    r"""Refuse a `--set` that `--resume` would ignore: one that changes the run's configuration.

    The run goes on as recorded in its `config.yaml`; only `run.*` keys and `_RESUME_SETTABLE`
    may differ from it.
    """
    import yaml

    from flowlearn.irn.config import ConfigError

    saved_file = Path(config.run.output) / "config.yaml"
    if not saved_file.is_file():
        return  # nothing to resume: train says so
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    current = config.to_dict()
    for text in settings:
        key = text.partition("=")[0].strip()
        section, _, name = key.partition(".")
        if section == "run" or key in _RESUME_SETTABLE:
            continue
        new = yaml.safe_load(yaml.safe_dump(current.get(section, {}).get(name)))
        old = (saved.get(section) or {}).get(name)
        if new != old:
            raise ConfigError(
                f"--resume continues the run as recorded in {saved_file}, where {key} is "
                f"{old!r}; --set {key}={new!r} would be ignored: drop it, or start a new run "
                "from these weights (--set model.init=RUN/model.pt)"
            )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps >= 1, got {text!r}")
    return int(text)


def _cmd_train(args: argparse.Namespace) -> int:
    from flowlearn.irn.config import load_config
    from flowlearn.irn.train import TrainingError, train

    report = _Reporter("train")
    overrides = list(args.set)
    for key, value in [("data.train", args.data), ("run.output", args.output)]:
        if value is not None:
            overrides.append(f"{key}={json.dumps(str(value))}")
    if args.device is not None:
        overrides.append(f"run.device={args.device}")
    try:
        config = load_config(args.config, overrides=overrides)
        if args.resume:
            _check_resume_overrides(config, args.set)
        result = train(config, resume=args.resume, progress=not args.quiet, max_steps=args.steps)
    except (*_USER_ERRORS, TrainingError) as err:
        report.error(err)
        return report.status
    if result.rank == 0:  # under torchrun, the process that wrote them
        print(f"step {result.step}: weights in {result.model_path}, log in {result.log_csv}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    r"""Add the `irn` command group to an argparse subparsers object.

    Each subcommand sets `func`, which takes the parsed arguments and returns the exit status.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `irn` parser.

    Examples:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="flowlearn")
        >>> _ = register(parser.add_subparsers())
        >>> args = parser.parse_args(["irn", "test", "--bicubic", "--scale", "4", "--data", "d"])
        >>> args.scale, args.draws, callable(args.func)
        (4, 5, True)
    """
    irn = subparsers.add_parser(
        "irn",
        help="Invertible Rescaling Net: downscale, upscale, test, train",
        description="Downscale, upscale, evaluate and train Invertible Rescaling Nets.",
    )
    sub = irn.add_subparsers(dest="irn_command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scale", type=int, choices=(2, 4, 8), help="check the model's scale")
        p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
        p.add_argument(
            "--memory",
            type=_megabytes,
            default=DEFAULT_MEMORY_MB,
            metavar="MB",
            help="MiB for the image tensors and the network's working memory; larger images "
            "run in tiles (default %(default)s)",
        )
        p.add_argument(
            "--max-pixels",
            type=_max_pixels,
            default=DEFAULT_MAX_PIXELS,
            metavar="N",
            help="refuse images of more HR pixels (default %(default)s; 0: no limit)",
        )

    model_help = (
        "shipped model (x2, x4; default: x{--scale or 4}), flowlearn checkpoint or original .pth"
    )
    down = sub.add_parser("downscale", help="HR images → 8-bit LR PNGs")
    down.add_argument("images", nargs="+", metavar="IMAGE")
    down.add_argument("--model", "-m", help=model_help)
    down.add_argument("--out", "-o", required=True, type=Path, help="output folder")
    down.add_argument(
        "--pad", action="store_true", help="reflect-pad sizes that are not a multiple of the scale"
    )
    down.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common(down)
    down.set_defaults(func=_cmd_downscale)

    up = sub.add_parser("upscale", help="LR images → HR PNGs (z sampled)")
    up.add_argument("images", nargs="+", metavar="IMAGE")
    up.add_argument("--model", "-m", help=model_help)
    up.add_argument("--out", "-o", required=True, type=Path, help="output folder")
    up.add_argument("--temperature", type=float, default=1.0, help="std of z (0: z = 0)")
    up.add_argument("--seed", type=int, default=None, help="seed of z (default: random)")
    up.add_argument("--crop", type=_size, metavar="WxH", help="crop the result to this size")
    up.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common(up)
    up.set_defaults(func=_cmd_upscale)

    test = sub.add_parser("test", help="PSNR/SSIM of a folder of HR images (paper protocol)")
    test.add_argument("--model", "-m", help=model_help)
    test.add_argument("--bicubic", action="store_true", help="bicubic baseline (needs --scale)")
    test.add_argument("--data", type=Path, help="folder of HR images")
    test.add_argument(
        "--config", "-c", help="an original IRN test option file (test_IRN_x4.yml, …)"
    )
    test.add_argument("--json", type=Path, help="write the results as JSON")
    test.add_argument("--save-images", type=Path, metavar="DIR", help="save LR and SR images")
    test.add_argument("--draws", type=int, default=5, help="z draws averaged (default 5)")
    test.add_argument("--seed", type=int, default=0)
    test.add_argument("--temperature", type=float, help="std of z (default 1)")
    test.add_argument(
        "--overwrite", action="store_true", help="replace an existing --json file and saved images"
    )
    common(test)
    test.set_defaults(func=_cmd_test, blocks=None)

    tr = sub.add_parser("train", help="train from a YAML configuration")
    tr.add_argument(
        "--config",
        "-c",
        required=True,
        help="YAML file, original option file, or shipped name: x2, x4, x8, x4_plus_gan, tiny",
    )
    tr.add_argument("--data", type=Path, help="training images (sets data.train)")
    tr.add_argument("--output", type=Path, help="run folder (sets run.output)")
    tr.add_argument("--resume", action="store_true", help="continue the run in run.output")
    tr.add_argument("--steps", type=_positive, help="stop at this step (the schedule is unchanged)")
    tr.add_argument("--device", choices=("cpu", "cuda", "auto"), help="sets run.device")
    tr.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. optim.lr=1e-4"
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)
    return irn
