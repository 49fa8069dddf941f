r"""Reading and writing IRN weights: the original code's state dicts and flowlearn's own format.

Two formats are understood:

* **original** — the `state_dict` saved by the authors' code (`IRN_x4.pth`, …): keys
  `operations.<i>.haar_weights` for the fixed Haar filters and
  `operations.<i>.{F,G,H}.conv{1..5}.{weight,bias}` for the couplings (IRN_SPEC §1.6), perhaps
  with a `module.` prefix. The scale, the blocks per level, the growth and the channels are read
  from the keys and shapes; the Haar filters are checked and dropped (flowlearn does not store
  them). `to_official` writes this layout back, filters included, so the original code can
  load a flowlearn model.
* **flowlearn** — a dict `{"format": "flowlearn.irn", "version": 1, "config": {...},
  "state_dict": {...}, "metadata": {...}}` written by `IRN.save`, where `config` holds the
  constructor arguments of `IRN`.

Every file is read with `torch.load(..., weights_only=True)`: no code in a checkpoint runs.
Every problem is one `CheckpointError` saying what was found and what was expected.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowlearn.layers.haar import haar_kernel

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "from_official",
    "load",
    "load_irn",
    "save",
    "to_official",
]

FORMAT = "flowlearn.irn"
"""Value of the `"format"` entry of flowlearn IRN checkpoints."""
VERSION = 1
"""Version of the flowlearn IRN checkpoint layout written by `save`."""

PathLike = str | os.PathLike[str]
_OFFICIAL_KEY = re.compile(r"operations\.(\d+)\.(haar_weights|[FGH]\.conv[1-5]\.(?:weight|bias))")
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not describe the requested IRN."""


def _brief(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _read(path: PathLike) -> Any:
    """`torch.load` with weights only, onto the CPU; unreadable files become `CheckpointError`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {os.fspath(path)} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, not a torch file, or unsafe pickle
        raise CheckpointError(f"{os.fspath(path)} is not a readable checkpoint: {err}") from err


def _build(config: Mapping[str, Any]) -> IRN:
    """A new IRN that leaves the global random state untouched (its weights are overwritten)."""
    from flowlearn.irn.model import IRN

    with torch.random.fork_rng(devices=[]):
        return IRN(**config)


def _load_weights(model: IRN, state: Mapping[str, Any], source: str) -> IRN:
    """Load `state` strictly into `model`, listing missing, unexpected and misshaped entries."""
    expected = model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
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
            ("not tensors", bad),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", shapes),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not match IRN({_fmt_config(model.config)}): " + "; ".join(problems)
        )
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())  # keep float64 weights float64
    model.load_state_dict(state)
    return model


def _fmt_config(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def _check_scale(found: int, expected: int | None, source: str) -> None:
    if expected is not None and found != expected:
        raise CheckpointError(f"{source}: checkpoint is for scale {found}, expected {expected}")


# ------------------------------------------------------------------------------ original code


def _unwrap_official(obj: Any, source: str) -> dict[str, Any]:
    """The bare state dict: unwrap `{"state_dict": ...}` / `{"params": ...}`, strip `module.`."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, expected a state dict")
    if obj.get("format") == FORMAT:
        raise CheckpointError(f"{source} is a flowlearn checkpoint; read it with IRN.load")
    for wrapper in ("state_dict", "params"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _official_config(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Scale, blocks per level, growth and channels read from the original keys and shapes."""
    ops: dict[int, set[str]] = {}
    unknown = []
    for key in state:
        match = _OFFICIAL_KEY.fullmatch(key)
        if match is None:
            unknown.append(key)
            continue
        ops.setdefault(int(match[1]), set()).add(match[2])
    if unknown:
        raise CheckpointError(
            f"{source} is not an IRN state dict of the original code: unexpected keys "
            f"{_brief(unknown)}"
        )
    if sorted(ops) != list(range(len(ops))) or "haar_weights" not in ops.get(0, ()):
        raise CheckpointError(
            f"{source}: expected operations 0, 1, … starting with a Haar layer "
            f"(operations.0.haar_weights), found operations {_brief([str(i) for i in sorted(ops)])}"
        )
    haar = [i for i in sorted(ops) if "haar_weights" in ops[i]]
    levels = len(haar)
    if levels not in (1, 2, 3):
        raise CheckpointError(
            f"{source} has {levels} Haar levels, expected 1, 2 or 3 (scale 2, 4 or 8)"
        )
    blocks = [end - start - 1 for start, end in zip(haar, [*haar[1:], len(ops)])]
    channels = int(state["operations.0.haar_weights"].shape[0]) // 4
    growth_key = next((k for k in state if k.endswith(".F.conv1.weight")), None)
    growth = int(state[growth_key].shape[0]) if growth_key else 32
    return {"scale": 2**levels, "blocks": blocks, "growth": growth, "channels": channels}


def _from_official_obj(obj: Any, source: str, scale: int | None) -> IRN:
    state = _unwrap_official(obj, source)
    config = _official_config(state, source)
    _check_scale(config["scale"], scale, source)
    model = _build(config)
    current = model.channels
    for i in range(len(model.operations)):
        key = f"operations.{i}.haar_weights"
        if key in state:
            weights = state.pop(key)
            expected = haar_kernel(current)
            if (
                not isinstance(weights, Tensor)
                or weights.shape != expected.shape
                or not torch.equal(weights.to(expected), expected)
            ):
                shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights)
                raise CheckpointError(
                    f"{source}: {key} {shape} is not the fixed ±1 Haar filter bank of shape "
                    f"{tuple(expected.shape)}"
                )
            current *= 4
    return _load_weights(model, state, source)


def from_official(source: PathLike | Mapping[str, Any], *, scale: int | None = None) -> IRN:
    """Build an `IRN` from a state dict of the original code (a file or a loaded dict).

    Args:
        source: path of a `.pth` file, or the loaded state dict (a `module.` prefix and a
            `{"state_dict": ...}` or `{"params": ...}` wrapper are accepted).
        scale: expected scale; a checkpoint of another scale is a `CheckpointError`.

    Returns:
        The model on the CPU, in the dtype of the stored weights.
    """
    if isinstance(source, Mapping):
        return _from_official_obj(source, "state dict", scale)
    return _from_official_obj(_read(source), os.fspath(source), scale)


def to_official(model: IRN) -> OrderedDict[str, Tensor]:
    """The weights in the original code's layout and key order, Haar filters included.

    Args:
        model: the `IRN`.

    Returns:
        An `OrderedDict` loadable by the original `InvRescaleNet.load_state_dict`.
    """
    from flowlearn.layers.haar import HaarDownsampling

    ref = next(model.parameters(), None)
    kw: dict[str, Any] = {"dtype": ref.dtype, "device": ref.device} if ref is not None else {}
    out: OrderedDict[str, Tensor] = OrderedDict()
    for i, op in enumerate(model.operations):
        if isinstance(op, HaarDownsampling):
            out[f"operations.{i}.haar_weights"] = haar_kernel(op.channels, **kw)  # (4C, 1, 2, 2)
        else:
            out.update(op.state_dict(prefix=f"operations.{i}.", keep_vars=False))
    return out


# ------------------------------------------------------------------------------ flowlearn format


def _check_plain(obj: Any, where: str) -> None:
    """Metadata must survive `weights_only` loading: plain Python values and tensors only."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, (*_PLAIN, Tensor)):
        raise TypeError(
            f"{where} is a {type(obj).__name__}; metadata may hold str, int, float, bool, None, "
            "tensors, lists and dicts"
        )


def save(model: IRN, path: PathLike, *, metadata: Mapping[str, Any] | None = None) -> None:
    """Write `model` as a flowlearn checkpoint, atomically (temporary file + `os.replace`).

    Args:
        model: the `IRN`.
        path: destination file (its folder must exist).
        metadata: optional plain values to store alongside (training step, data set, …).
    """
    meta = dict(metadata or {})
    _check_plain(meta, "metadata")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config,
        "state_dict": OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items()),
        "metadata": meta,
    }
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _from_payload(obj: Mapping[str, Any], source: str, scale: int | None) -> IRN:
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{source} has checkpoint version {version!r}; this flowlearn reads up to {VERSION}"
        )
    config, state = obj.get("config"), obj.get("state_dict")
    if not isinstance(config, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError(f"{source} lacks its 'config' or 'state_dict' entry")
    _check_scale(config.get("scale"), scale, source)  # type: ignore[arg-type]
    try:
        model = _build(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source} has an invalid config {dict(config)}: {err}") from err
    return _load_weights(model, state, source)


def load(
    path: PathLike, *, scale: int | None = None, map_location: str | torch.device = "cpu"
) -> IRN:
    """Read a flowlearn checkpoint written by `save`.

    Args:
        path: the file.
        scale: expected scale; a checkpoint of another scale is a `CheckpointError`.
        map_location: device the model is moved to.
    """
    obj = _read(path)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{os.fspath(path)} is not a flowlearn IRN checkpoint (no 'format': {FORMAT!r}); "
            "for weights of the original code use IRN.from_official or load_irn"
        )
    return _from_payload(obj, os.fspath(path), scale).to(map_location)


def _resolve(path_or_name: PathLike) -> Path:
    """An existing checkpoint file (shipped models are loaded by `flowlearn.irn.pretrained`)."""
    path = Path(path_or_name)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {os.fspath(path_or_name)} does not exist")
    return path


def load_irn(
    path_or_name: PathLike | Mapping[str, Any],
    *,
    scale: int | None = None,
    map_location: str | torch.device = "cpu",
) -> IRN:
    """Load an IRN from either format, recognised by its keys.

    Args:
        path_or_name: a flowlearn checkpoint or an original `.pth` state dict (a path, the name
            or an already loaded dict).
        scale: expected scale; a checkpoint of another scale is a `CheckpointError`.
        map_location: device the model is moved to.

    Examples:
        >>> import tempfile, os, torch
        >>> from flowlearn.irn import IRN, load_irn
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     net.save(os.path.join(tmp, "model.pt"))
        ...     torch.save(net.to_official(), os.path.join(tmp, "official.pth"))
        ...     a = load_irn(os.path.join(tmp, "model.pt"))
        ...     b = load_irn(os.path.join(tmp, "official.pth"), scale=2)
        >>> a.config == b.config == net.config
        True
    """
    if isinstance(path_or_name, Mapping):
        obj: Any = path_or_name
        source = "checkpoint dict"
    else:
        path = _resolve(path_or_name)
        obj, source = _read(path), os.fspath(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        model = _from_payload(obj, source, scale)
    else:
        model = _from_official_obj(obj, source, scale)
    return model.to(map_location)
