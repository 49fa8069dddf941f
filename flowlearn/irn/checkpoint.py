r"""Loading and saving IRN weights: one `load` for whatever a user has, one `save`.

`load(source)` returns the `IRN` in eval mode, in the dtype asked for (float32 by default,
whatever the stored dtype: float16, bfloat16, float32 or float64), from

* the **name of a shipped model**, `"x2"`, `"x4"` (or the scale `2`, `4`), `"x4_plus"` (IRN+,
  the GAN fine-tune of `x4`): a file of `flowlearn/irn/weights/` (`available_models()`);
  nothing is downloaded;
* a **flowlearn checkpoint** written by `save(model, "model.pt")` (the `model.pt` of a training
  run): a `torch.save` dict `{"format": "flowlearn.irn", "version": 1, "config": {...},
  "state_dict": {...}, "metadata": {...}}`, where `config` holds the arguments of `IRN`;
* a **training checkpoint**, the `checkpoint.pt` of a run of `flowlearn.irn.train`;
* a **state dict of the original code** (`IRN_x4.pth`, …): keys `operations.<i>.haar_weights`
  for the fixed Haar filters and `operations.<i>.{F,G,H}.conv{1..5}.{weight,bias}` for the
  couplings, bare or wrapped in `{"state_dict": ...}` / `{"params": ...}`, perhaps with the
  `module.` prefix of `DataParallel`. The scale, the blocks per level, the growth and the channels
  are read from the keys and shapes; the Haar filters are checked and dropped (flowlearn computes
  them). A flowlearn `model.state_dict()` (the same keys without the Haar filters) reads the same;
* a **safetensors** file, recognised by its content (an 8-byte little-endian header length, then
  a JSON header), whatever its name: the shipped models, whose header holds the config and the
  metadata as JSON, or any safetensors file holding one of the state dicts above;
* any of these dicts already loaded in Python.

No code stored in a file runs: PyTorch files are read with `torch.load(..., weights_only=True)`,
safetensors files hold tensors and strings only. Every problem is one `CheckpointError` line
naming the file, what it holds and what was expected.

`save(model, path)` picks the format from the suffix: `.safetensors` writes the shipped format
(optionally in float16, which halves the file), `.pt` or `.pth` a flowlearn checkpoint; both are
written atomically. `to_official(model)` gives the weights in the original code's layout, Haar
filters included, so that the original code can load a flowlearn model.

References:
    M. Xiao et al., 2020, "Invertible Image Rescaling", ECCV 2020, arXiv:2005.05650, §3.2 (the
    operations: Haar transformation, then InvBlocks, per level). The original code,
    github.com/pkuxmq/Invertible-Image-Rescaling: codes/models/modules/Inv_arch.py
    (`InvRescaleNet.operations`, `HaarDownsampling.haar_weights`), codes/models/base_model.py
    (`save_network` / `load_network`: the `module.` prefix).
"""

from __future__ import annotations

import importlib.resources
import io
import json
import os
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowlearn.images.io import atomic_write
from flowlearn.irn.model import IRN
from flowlearn.layers.haar import HaarDownsampling, haar_kernel

__all__ = [
    "FORMAT",
    "SHIPPED_FORMAT",
    "TRAINING_FORMAT",
    "VERSION",
    "CheckpointError",
    "ModelNotAvailableError",
    "available_models",
    "load",
    "model_info",
    "save",
    "to_official",
    "weights_dir",
]

FORMAT = "flowlearn.irn"
"""The `"format"` entry of a flowlearn checkpoint (`save` to `.pt` / `.pth`)."""
SHIPPED_FORMAT = "flowlearn.irn.pretrained"
"""The `"format"` entry of the JSON header of a flowlearn `.safetensors` model."""
TRAINING_FORMAT = "flowlearn-irn-train"
"""The `"format"` entry of the `checkpoint.pt` of a training run (`flowlearn.irn.train`)."""
VERSION = 1
"""Version of the layouts written by `save`; `load` reads up to this one."""

Source = str | os.PathLike[str] | int | Mapping[str, Any]
_EXPECTED = (
    "expected a shipped model name (x2, x4), a flowlearn checkpoint (.pt), a state dict of the "
    "original IRN code (.pth) or a .safetensors model"
)
_NAME = re.compile(r"\s*[xX]([1-9][0-9]*)(_plus)?\s*")  # "x4"; "x4_plus": IRN+ (GAN fine-tune)
_FILE = re.compile(r"irn_x([1-9][0-9]*)(_plus)?\.(safetensors|pt)")
_SUFFIXES = (".safetensors", ".pt")  # preference order when a scale has both files
_KEY = re.compile(r"operations\.(\d+)\.(haar_weights|[FGH]\.conv[1-5]\.(?:weight|bias))")
_HEADER_KEY = "flowlearn"  # the safetensors `__metadata__` entry holding the JSON header
_MAX_HEADER = 100_000_000  # safetensors' own limit on the header size


class CheckpointError(ValueError):
    r"""A file or dict that is not IRN weights, or not those of the IRN asked for."""


class ModelNotAvailableError(FileNotFoundError):
    r"""No shipped model of that name in this installation; the message lists what there is."""


@dataclass
class _Weights:
    # What a source holds, in flowlearn's terms: IRN(**config) and its state dict.
    kind: str
    format: str | None
    version: int | None
    config: dict[str, Any]
    state: dict[str, Any]
    metadata: dict[str, Any]


def _brief(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# ------------------------------------------------------------------------------ shipped models


def weights_dir() -> Path:
    r"""The package folder that holds the shipped models, `flowlearn/irn/weights/`.

    Returns:
        Its path (it may not exist in a build that ships no model).
    """
    return Path(str(importlib.resources.files("flowlearn.irn") / "weights"))


def available_models() -> dict[str, Path]:
    r"""The models shipped in this installation, by name.

    Returns:
        `{"x2": Path(".../irn_x2.safetensors"), ...}` sorted by scale, IRN+ after IRN
        (`"x4_plus"`: `irn_x4_plus.safetensors`, the GAN fine-tune of `x4`); a `.safetensors`
        file is preferred to a `.pt` file of the same name. Empty when none is shipped.
    """
    folder = weights_dir()
    found: dict[tuple[int, str], Path] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _FILE.fullmatch(path.name)
            if match is None or not path.is_file():
                continue
            key = (int(match[1]), match[2] or "")
            old = found.get(key)
            if old is None or _SUFFIXES.index(path.suffix) < _SUFFIXES.index(old.suffix):
                found[key] = path
    return {f"x{scale}{plus}": found[scale, plus] for scale, plus in sorted(found)}


def _shipped_name(source: object) -> str | None:
    # "x4" for 4, "x4", "X4"; None when `source` does not name a shipped model.
    if isinstance(source, int) and not isinstance(source, bool):
        if source < 1:
            raise ValueError(
                f"a shipped model is named by its scale, such as 'x2' or 4; got {source}"
            )
        return f"x{source}"
    match = _NAME.fullmatch(source) if isinstance(source, str) else None
    return f"x{int(match[1])}{match[2] or ''}" if match else None


def _locate(source: str | os.PathLike[str] | int) -> Path:
    # The file that `source` names: a shipped model or an existing file.
    name = _shipped_name(source)
    if name is not None:
        models = available_models()
        if name not in models:
            listed = ", ".join(models) if models else "none"
            raise ModelNotAvailableError(
                f"no shipped model {name!r} in this installation; available: {listed}"
            )
        return models[name]
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"load: got a {type(source).__name__}; {_EXPECTED}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path} is a folder, not a model file; {_EXPECTED}")
    return path


# ------------------------------------------------------------------------------ reading


def _torch_load(path: Path, data: bytes) -> Any:
    if data.startswith(b"PK") and not zipfile.is_zipfile(io.BytesIO(data)):  # no zip directory
        raise CheckpointError(f"{path} is a truncated PyTorch file; {_EXPECTED}")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # in our words: never PyTorch's advice to load unsafely
        text = str(err)
        if "Weights only load failed" in text:
            what = "holds pickled Python objects besides tensors (loading it could run code)"
        elif isinstance(err, EOFError) or "unexpected EOF" in text:
            what = "is a truncated PyTorch file"
        else:
            what = f"is a damaged PyTorch file ({text.split('.')[0].strip() or type(err).__name__})"
        raise CheckpointError(f"{path} {what}; {_EXPECTED}") from None


def _read_safetensors(path: Path, data: bytes) -> _Weights:
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(data)
        header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    except Exception as err:  # a damaged header or tensor table
        raise CheckpointError(f"{path} is a damaged safetensors file ({err})") from None
    stored = header.get("__metadata__") or {}
    if _HEADER_KEY not in stored:  # a plain state dict saved as safetensors
        return _from_state_dict(tensors, str(path))
    try:
        meta = json.loads(stored[_HEADER_KEY])
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != SHIPPED_FORMAT:
        raise CheckpointError(
            f"{path}: its {_HEADER_KEY!r} metadata is not a flowlearn header "
            f"(format {SHIPPED_FORMAT!r})"
        )
    return _checked(
        _Weights(
            kind="flowlearn safetensors model",
            format=SHIPPED_FORMAT,
            version=meta.get("version"),
            config=meta.get("config"),  # type: ignore[arg-type]
            state=tensors,
            metadata=meta.get("metadata") or {},
        ),
        str(path),
    )


def _read_file(path: Path) -> _Weights:
    # Recognised by content, not by name: safetensors, a PyTorch file, or neither.
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path} is empty (0 bytes); {_EXPECTED}")
    if len(data) >= 9 and data[8:9] == b"{":
        header_size = struct.unpack("<Q", data[:8])[0]
        if header_size <= _MAX_HEADER:
            if 8 + header_size > len(data):
                raise CheckpointError(
                    f"{path} is a truncated safetensors file (a {header_size}-byte header "
                    f"announced, {len(data)} bytes in all)"
                )
            return _read_safetensors(path, data)
    if data.startswith(b"PK\x03\x04") or data[:1] == b"\x80":  # torch.save: zip or pickle
        return _from_object(_torch_load(path, data), str(path))
    try:
        data[:256].decode("utf-8")
        what = f"a text file ({data[:40].decode('utf-8', 'replace').splitlines()[0]!r}…)"
    except UnicodeDecodeError:
        what = f"neither a PyTorch nor a safetensors file (it starts with {data[:8]!r})"
    raise CheckpointError(f"{path} is {what}; {_EXPECTED}")


def _from_object(obj: Any, name: str) -> _Weights:
    # A loaded dict: flowlearn checkpoint, training checkpoint or a state dict.
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name} holds a {type(obj).__name__}; {_EXPECTED}")
    fmt = obj.get("format")
    if fmt in (FORMAT, TRAINING_FORMAT):
        training = fmt == TRAINING_FORMAT  # the checkpoint.pt of flowlearn.irn.train
        meta = obj.get("metadata")
        if training:
            meta = {k: obj.get(k) for k in ("step", "seconds")}
            meta["training_config"] = obj.get("config", {})
        weights = _Weights(
            "training checkpoint" if training else "flowlearn checkpoint",
            fmt,
            obj.get("version"),
            obj.get("model_config" if training else "config"),  # type: ignore[arg-type]
            obj.get("model" if training else "state_dict"),  # type: ignore[arg-type]
            dict(meta) if isinstance(meta, Mapping) else {},
        )
        return _checked(weights, name)
    if fmt is not None:
        raise CheckpointError(f"{name} has the unknown format {fmt!r}; {_EXPECTED}")
    return _from_state_dict(obj, name)


def _checked(weights: _Weights, name: str) -> _Weights:
    version = weights.version
    if weights.format != TRAINING_FORMAT and (not isinstance(version, int) or version > VERSION):
        raise CheckpointError(
            f"{name} is a {weights.kind} of version {version!r}; this flowlearn reads up to "
            f"{VERSION}"
        )
    if not isinstance(weights.config, Mapping) or not isinstance(weights.state, Mapping):
        raise CheckpointError(f"{name} is a {weights.kind} without its config or its weights")
    weights.config, weights.state = dict(weights.config), dict(weights.state)
    return weights


def _from_state_dict(obj: Mapping[str, Any], name: str) -> _Weights:
    # The original code's state dict (or flowlearn's, without Haar filters): the architecture
    # is read from the keys and shapes; the Haar filters are checked and dropped.
    for wrapper in ("state_dict", "params"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    ops: dict[int, set[str]] = {}
    unknown = []
    for key in state:
        match = _KEY.fullmatch(key)
        if match is None:
            unknown.append(key)
        else:
            ops.setdefault(int(match[1]), set()).add(match[2])
    if unknown or not ops:
        found = f"unexpected keys {_brief(unknown)}" if unknown else "no keys"
        raise CheckpointError(
            f"{name} is not an IRN state dict ({found}); expected keys "
            "operations.<i>.haar_weights and operations.<i>.{F,G,H}.conv<1-5>.{weight,bias}"
        )
    n_ops = max(ops) + 1
    if any("haar_weights" in keys for keys in ops.values()):  # the original layout
        haar = [i for i in range(n_ops) if "haar_weights" in ops.get(i, set())]
        absent = [str(i) for i in range(n_ops) if i not in ops]
        if absent:
            raise CheckpointError(f"{name} lacks every key of operations {_brief(absent)}")
    else:  # flowlearn's state dict: the Haar levels are the operations without weights
        haar = [i for i in range(n_ops) if i not in ops]
    if not haar or haar[0] != 0 or len(haar) not in (1, 2, 3):
        raise CheckpointError(
            f"{name}: expected 1, 2 or 3 Haar levels (scale 2, 4 or 8), the first at "
            f"operations.0; found them at operations {_brief([str(i) for i in haar]) or 'none'}"
        )
    blocks = [end - start - 1 for start, end in zip(haar, [*haar[1:], n_ops])]

    def size(suffix: str, dim: int, default: int) -> int:
        key = next((k for k in state if k.endswith(suffix)), None)
        value = state.get(key) if key else None
        return int(value.shape[dim]) if isinstance(value, Tensor) and value.ndim > dim else default

    channels = size(".G.conv1.weight", 1, 3)  # G sees the LR branch: (growth, C, 3, 3)
    for level, i in enumerate(haar):
        kernel = state.pop(f"operations.{i}.haar_weights", None)
        if kernel is None:
            continue
        expected = haar_kernel(channels * 4**level)  # (4C, 1, 2, 2) of ±1
        if not (
            isinstance(kernel, Tensor)
            and kernel.shape == expected.shape
            and torch.equal(kernel.to(expected), expected)
        ):
            shape = tuple(kernel.shape) if isinstance(kernel, Tensor) else type(kernel).__name__
            raise CheckpointError(
                f"{name}: operations.{i}.haar_weights {shape} is not the fixed ±1 Haar filter "
                f"bank of shape {tuple(expected.shape)}"
            )
    config = {
        "scale": 2 ** len(haar),
        "blocks": blocks,
        "growth": size(".F.conv1.weight", 0, 32),
        "channels": channels,
    }
    return _Weights("state dict of the original IRN code", None, None, config, state, {})


def _read(source: Source) -> tuple[_Weights, str]:
    if isinstance(source, Mapping):
        return _from_object(source, "the given dict"), "the given dict"
    path = _locate(source)
    return _read_file(path), str(path)


def _check_state(model: IRN, state: Mapping[str, Any], name: str) -> None:
    # Strict: every weight present, nothing else, right shapes, floating tensors.
    expected = model.state_dict()
    bad = [k for k, v in state.items() if not (isinstance(v, Tensor) and v.is_floating_point())]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and k not in bad and state[k].shape != v.shape
    ]
    problems = [
        f"{what}: {_brief(keys)}"
        for what, keys in (
            ("not floating-point tensors", bad),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", shapes),
        )
        if keys
    ]
    if problems:
        config = ", ".join(f"{k}={v}" for k, v in model.config.items())
        raise CheckpointError(f"{name} does not match IRN({config}): " + "; ".join(problems))


def load(
    source: Source,
    *,
    scale: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> IRN:
    r"""The IRN that `source` holds, in eval mode (see the module docstring for every kind).

    Args:
        source: a shipped model name (`"x2"`, `"x4"`, or the scale `2`, `4`), the path of a
            model file (flowlearn checkpoint, training checkpoint, original `.pth`,
            `.safetensors`; recognised by content), or such a dict already loaded.
        scale: when given, the model must have this scale.
        dtype: floating dtype of the returned model, whatever the stored one.
        device: where the model goes.

    Returns:
        The `IRN`, in eval mode, on `device`, in `dtype`.

    Raises:
        CheckpointError: the source is not IRN weights (the message names it, what it holds and
            what was expected), or the model has another scale than `scale`.
        ModelNotAvailableError: no shipped model of that name (a `FileNotFoundError`); the
            message lists the models that are.
        FileNotFoundError: no such file.

    Examples:
        >>> import tempfile
        >>> from flowlearn.irn import IRN
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> folder = tempfile.mkdtemp()
        >>> torch.save(to_official(net), f"{folder}/IRN_x2.pth")  # the original layout
        >>> load(f"{folder}/IRN_x2.pth", scale=2).config == net.config
        True
        >>> load(save(net, f"{folder}/model.pt"), dtype=torch.float64).training
        False
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"load: dtype must be a floating-point torch.dtype, got {dtype!r}")
    weights, name = _read(source)
    found = weights.config.get("scale")
    if scale is not None and found != scale:
        raise CheckpointError(f"{name} holds a x{found} model, expected scale {scale}")
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten
            model = IRN(**weights.config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name} has an invalid config {weights.config}: {err}") from None
    _check_state(model, weights.state, name)
    model.to(dtype).load_state_dict(weights.state)  # copied into `dtype`
    return model.to(device).eval()


def model_info(name_or_path: str | int | os.PathLike[str]) -> dict[str, Any]:
    r"""What a shipped model (by name) or a model file (by path) holds, without building it.

    Returns:
        `{"kind", "format", "version", "dtype", "config", "metadata", "path", "file_size"}`:
        `kind` such as `"flowlearn safetensors model"`, `dtype` the stored floating dtype(s)
        (`"float16"`), `config` the arguments of `IRN`, `metadata` what `save` was given (for
        the shipped models: training steps, wall time, hardware, training data, measured PSNR,
        …; for a training checkpoint: step, seconds and the training configuration).

    Examples:
        >>> info = model_info("x2")
        >>> info["config"]["scale"], info["dtype"]
        (2, 'float16')
    """
    path = _locate(name_or_path)
    weights = _read_file(path)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in weights.state.values()})
    return {
        "kind": weights.kind,
        "format": weights.format,
        "version": weights.version,
        "dtype": ", ".join(dtypes),
        "config": weights.config,
        "metadata": weights.metadata,
        "path": path,
        "file_size": path.stat().st_size,
    }


# ------------------------------------------------------------------------------ writing


def to_official(model: IRN) -> OrderedDict[str, Tensor]:
    r"""The weights in the original code's layout and key order, Haar filters included.

    Args:
        model: the `IRN`.

    Returns:
        An `OrderedDict` that the original `InvRescaleNet.load_state_dict` accepts (and `load`).
    """
    ref = next(model.parameters(), None)
    kw: dict[str, Any] = {"dtype": ref.dtype, "device": ref.device} if ref is not None else {}
    out: OrderedDict[str, Tensor] = OrderedDict()
    for i, op in enumerate(model.operations):
        if isinstance(op, HaarDownsampling):
            out[f"operations.{i}.haar_weights"] = haar_kernel(op.channels, **kw)  # (4C, 1, 2, 2)
        else:
            out.update(op.state_dict(prefix=f"operations.{i}.", keep_vars=False))
    return out


def save(
    model: IRN,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    r"""Write `model` to `path`, atomically, in the format its suffix names.

    * `.safetensors`: the shipped format, the `state_dict` tensors plus a JSON header
      `{"format": "flowlearn.irn.pretrained", "version": 1, "dtype": ..., "config": ...,
      "metadata": ...}` in the safetensors metadata entry `"flowlearn"`;
    * `.pt` or `.pth`: a flowlearn checkpoint, `torch.save` of
      `{"format": "flowlearn.irn", "version": 1, "config", "state_dict", "metadata"}`.

    Args:
        model: the `IRN` (any device and floating dtype).
        path: destination file (its folder must exist).
        metadata: plain JSON values stored alongside (training steps, measured quality, …).
        dtype: store the weights in this dtype (`torch.float16` for the shipped models: half
            the size, each weight within a relative $2^{-11}$); `None` keeps the model's.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: another suffix, metadata that JSON cannot hold, or a weight that does not
            fit in `dtype` (beyond ±65504 in float16).
    """
    path = Path(path)
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"save: {path} must end in .safetensors (shipped format), .pt or .pth")
    meta = dict(metadata or {})
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"save: metadata must be plain JSON values (str, int, float, bool, None, lists, "
            f"dicts): {err}"
        ) from None
    state: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        stored = value.detach().to("cpu", dtype or value.dtype).contiguous()
        if torch.isfinite(value).all() and not torch.isfinite(stored).all():
            raise ValueError(f"save: {key} does not fit in {stored.dtype} (|w| too large)")
        state[key] = stored
    if path.suffix == ".safetensors":
        from safetensors.torch import save as safetensors_bytes

        dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
        header = {
            "format": SHIPPED_FORMAT,
            "version": VERSION,
            "dtype": ", ".join(dtypes),
            "config": model.config,
            "metadata": meta,
        }
        data = safetensors_bytes(state, metadata={_HEADER_KEY: json.dumps(header)})
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
    else:
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "config": model.config,
            "state_dict": state,
            "metadata": meta,
        }
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)
    return path
