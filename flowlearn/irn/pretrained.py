r"""Pretrained Invertible Rescaling Nets shipped inside the package, loaded by name.

The package folder `flowlearn/irn/weights/` holds one file per shipped model, named
`irn_x<s>.safetensors` (or `irn_x<s>.pt`, a flowlearn checkpoint written by `IRN.save`), and
the name of the model is `"x<s>"`: `load_pretrained("x4")`, `load_pretrained(4)` and
`IRN.pretrained(4)` all read `irn_x4.safetensors`. Nothing is downloaded.

The `.safetensors` files (`save_pretrained`) hold the weights of the flowlearn `state_dict` in
float16, which halves the size of the wheel, and one metadata entry `"flowlearn"`: a JSON
string

    {"format": "flowlearn.irn.pretrained", "version": 1, "dtype": "float16",
     "config": {"scale": 4, "blocks": [8, 8], "clamp": 1.0, "growth": 32, "channels": 3},
     "metadata": {"steps": ..., "set5_psnr_y": ..., ...}}

where `config` holds the arguments of `IRN(**config)` and `metadata` describes the training
run and the measured quality (see `flowlearn/irn/weights/README.md`). Loading upcasts to float32
(or the `dtype` asked for). A safetensors file holds tensors and strings only: reading one runs
no code.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowlearn.irn.checkpoint import CheckpointError

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = [
    "FORMAT",
    "ModelNotAvailableError",
    "available_models",
    "is_model_name",
    "load_pretrained",
    "load_pretrained_file",
    "pretrained_info",
    "save_pretrained",
    "weights_dir",
]

FORMAT = "flowlearn.irn.pretrained"
"""Value of the `"format"` entry of the JSON metadata of a shipped `.safetensors` model."""
VERSION = 1
_METADATA_KEY = "flowlearn"
_NAME = re.compile(r"x([1-9][0-9]*)", re.IGNORECASE)
_FILE = re.compile(r"irn_x([1-9][0-9]*)\.(safetensors|pt)")
_SUFFIXES = (".safetensors", ".pt")  # preference order when both files exist
PathLike = str | os.PathLike[str]


class ModelNotAvailableError(FileNotFoundError):
    r"""No shipped model of that name in this installation; the message lists what there is."""


def weights_dir() -> Path:
    r"""The package folder that holds the shipped models, `flowlearn/irn/weights/`.

    Returns:
        Its path (it may not exist in a build that ships no model).
    """
    return Path(str(importlib.resources.files("flowlearn.irn") / "weights"))


def is_model_name(spec: object) -> bool:
    r"""Whether `spec` is a model name (`"x2"`, `"X4"`, …) rather than a file path.

    Examples:
        >>> is_model_name("x4"), is_model_name("runs/x4/model.pt"), is_model_name(4)
        (True, False, False)
    """
    return isinstance(spec, str) and _NAME.fullmatch(spec) is not None


def _name(name_or_scale: str | int) -> str:
    """`"x4"` for `4`, `"4"`, `"x4"` or `"X4"`; a `ValueError` for anything else."""
    if isinstance(name_or_scale, int) and not isinstance(name_or_scale, bool):
        if name_or_scale > 0:
            return f"x{name_or_scale}"
    elif isinstance(name_or_scale, str):
        text = name_or_scale.strip()
        match = _NAME.fullmatch(text) or _NAME.fullmatch(f"x{text}")
        if match:
            return f"x{int(match[1])}"
    raise ValueError(
        f"a shipped model is named by its scale, such as 'x2' or 4; got {name_or_scale!r}"
    )


def available_models() -> dict[str, Path]:
    r"""The models shipped in this installation, by name.

    Returns:
        `{"x2": Path(".../irn_x2.safetensors"), ...}` sorted by scale; a `.safetensors` file is
        preferred to a `.pt` file of the same scale. Empty when none is shipped.
    """
    folder = weights_dir()
    found: dict[int, Path] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _FILE.fullmatch(path.name)
            if match is None or not path.is_file():
                continue
            scale = int(match[1])
            old = found.get(scale)
            if old is None or _SUFFIXES.index(path.suffix) < _SUFFIXES.index(old.suffix):
                found[scale] = path
    return {f"x{s}": found[s] for s in sorted(found)}


def _shipped(name_or_scale: str | int) -> tuple[str, Path]:
    name = _name(name_or_scale)
    models = available_models()
    if name not in models:
        listed = ", ".join(models) if models else "none"
        raise ModelNotAvailableError(
            f"no shipped model {name!r} in this installation; available: {listed}"
        )
    return name, models[name]


# ------------------------------------------------------------------------------ writing


def save_pretrained(
    model: IRN, path: PathLike, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    r"""Write `model` as a compact shipped model: float16 safetensors plus JSON metadata.

    The file is written atomically (a temporary file in the destination folder, then
    `os.replace`).

    Args:
        model: the `IRN` (any device and floating dtype).
        path: destination, ending in `.safetensors`.
        metadata: JSON-serialisable description of the training run and its measured quality
            (steps, wall time, hardware, training data, Set5/Set14 Y-PSNR, …).

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: a wrong suffix, metadata that JSON cannot hold, or a weight that is not
            finite in float16 (beyond ±65504).

    Examples:
        >>> import tempfile, torch
        >>> from flowlearn.irn import IRN
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> path = save_pretrained(net, f"{tempfile.mkdtemp()}/irn_x2.safetensors",
        ...                        metadata={"steps": 0})
        >>> pretrained_info(path)["metadata"], load_pretrained_file(path).config == net.config
        ({'steps': 0}, True)
    """
    from safetensors.torch import save as safetensors_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_pretrained: {path} must end in .safetensors")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": "float16",
        "config": model.config,
        "metadata": dict(metadata or {}),
    }
    try:
        text = json.dumps(header, allow_nan=False, sort_keys=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_pretrained: metadata must be plain JSON values: {err}") from None
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        half = value.detach().to("cpu", torch.float16).contiguous()
        if value.is_floating_point() and not torch.isfinite(half).all():
            raise ValueError(f"save_pretrained: {key} does not fit in float16 (|w| > 65504)")
        tensors[key] = half
    data = safetensors_bytes(tensors, metadata={_METADATA_KEY: text})
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------ reading


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The decoded JSON header and the tensors of a shipped `.safetensors` file."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            stored = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # corrupt, truncated or not a safetensors file
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        header = json.loads(stored[_METADATA_KEY])
    except (KeyError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a flowlearn pretrained model (no {_METADATA_KEY!r} metadata "
            f"with format {FORMAT!r})"
        )
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} has version {version!r}; this flowlearn reads up to {VERSION}"
        )
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{path} lacks the 'config' entry of its metadata")
    return header, tensors


def _read_info(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # runs no stored code
    except Exception as err:  # corrupt, truncated, not a torch file, or unsafe pickle
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("config"), Mapping):
        raise CheckpointError(f"{path} is not a flowlearn IRN checkpoint (IRN.save)")
    meta = obj.get("metadata")
    return {
        "format": obj.get("format"),
        "version": obj.get("version"),
        "dtype": "as stored",
        "config": dict(obj["config"]),
        "metadata": dict(meta) if isinstance(meta, Mapping) else {},
    }


def _check_state(model: IRN, state: Mapping[str, Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{what} {', '.join(keys[:3])}" + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("misshaped", shapes))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not match its config {model.config}: " + "; ".join(problems)
        )


def load_pretrained_file(
    path: PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> IRN:
    r"""Load a model file of the shipped kinds (`.safetensors` from `save_pretrained`, or `.pt`).

    Args:
        path: the file.
        device: where the model goes.
        dtype: floating dtype of the weights (float16 files are upcast).

    Returns:
        The `IRN`, in eval mode.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is unreadable or does not describe an IRN.
    """
    from flowlearn.irn.checkpoint import load as load_checkpoint
    from flowlearn.irn.model import IRN

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix != ".safetensors":
        return load_checkpoint(path).to(device=device, dtype=dtype).eval()
    header, tensors = _read_safetensors(path)
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten
            model = IRN(**header["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an invalid config {header['config']}: {err}") from None
    _check_state(model, tensors, path)
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return model.to(device=device, dtype=dtype).eval()


def load_pretrained(
    name_or_scale: str | int,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> IRN:
    r"""The IRN shipped with flowlearn under a name: `"x2"` (or `2`), `"x4"` (or `4`).

    Args:
        name_or_scale: `"x<s>"`, `"<s>"` or the integer scale `s`.
        device: where the model goes.
        dtype: floating dtype of the weights (the shipped float16 values are upcast).

    Returns:
        The `IRN`, in eval mode.

    Raises:
        ModelNotAvailableError: no such model shipped (a `FileNotFoundError`); the message lists
            the models that are.
        ValueError: a name that is not a scale.

    Examples:
        >>> try:
        ...     load_pretrained("x8")
        ... except ModelNotAvailableError as err:
        ...     print(str(err).split(";")[0])
        no shipped model 'x8' in this installation
    """
    _, path = _shipped(name_or_scale)
    return load_pretrained_file(path, device=device, dtype=dtype)


def pretrained_info(name_or_path: str | int | os.PathLike[str]) -> dict[str, Any]:
    r"""The stored description of a shipped model (by name) or of a model file (by path).

    Returns:
        `{"format", "version", "dtype", "config", "metadata", "path", "file_size"}`, where
        `metadata` holds what `save_pretrained` was given (steps, wall time, hardware, training
        data, measured PSNR, …).
    """
    if isinstance(name_or_path, int) or is_model_name(name_or_path):
        _, path = _shipped(name_or_path)  # type: ignore[arg-type]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
    info = _read_info(path)
    return {**info, "path": path, "file_size": path.stat().st_size}
