r"""Training configuration for the Invertible Rescaling Net: a typed schema read from YAML.

A configuration has five sections. Every field, its default and its meaning:

`model` — the network (`flowlearn.irn.IRN`):

* `scale` (int, 2): the rescaling factor $s$, one of 2, 4, 8.
* `blocks` (list of int or null): InvBlocks per Haar level, one entry per level
  ($\log_2 s$ levels); null means 8 per level as in the paper.
* `clamp` (float, 1.0): bound of the affine exponent in each InvBlock.
* `growth` (int, 32): channels added by each convolution of the dense-block subnets.
* `init` (path or null): weights to start from (a flowlearn checkpoint or an original `.pth`),
  loaded with `flowlearn.irn.load` before training.

`data` — the training set (`flowlearn.irn.data.IRNTrainSet`):

* `train` (path or null): folder of HR training images. Must be set before training.
* `patch_size` (int, 144): side of the square HR patch; a multiple of `scale`.
* `batch_size` (int, 16): patches per step: the **global** batch, over all processes when the
  run is launched with `torchrun` (each of $W$ processes trains on `batch_size / W` of them;
  $W$ must divide it). The patches and latents a sample gets do not depend on $W$.
* `flips` (bool, true): random horizontal flip.
* `rotations` (bool, true): random vertical flip and transpose (together with `flips`, the
  eight symmetries of the square).
* `workers` (int, 0): `DataLoader` worker processes (0 loads in the training process), per
  training process.
* `pin_memory` (bool, true): on CUDA, load batches into pinned (page-locked) memory and copy
  them to the GPU without blocking (`non_blocking=True`); ignored on a CPU.
* `seed` (int, 10): seed of the patch sampler, the latent draws and the weight initialisation.

`optim` — Adam with a step learning-rate schedule:

* `lr` (float, 2e-4), `betas` (two floats, [0.9, 0.999]), `weight_decay` (float, 1e-5, coupled
  L2 as in `torch.optim.Adam`).
* `milestones` (list of int, [100000, 200000, 300000, 400000]) and `gamma` (float, 0.5):
  `MultiStepLR`, the rate is multiplied by `gamma` at each milestone step.
* `grad_clip` (float, 10.0): global L2 norm of the gradients is clipped to this.
* `steps` (int, 500000): optimisation steps in total.

`loss` — weights of the three terms (Xiao et al. 2020, arXiv:2005.05650, §3.3; `lambda_fit_forw`,
`lambda_rec_back`, `lambda_ce_forw` in the original codes/options/train/train_IRN_x*.yml):

* `lambda_fit` (float or null): weight of the LR guidance $\|y - \mathrm{bicubic}(x)\|^2$;
  null means $s^2$ (4, 16, 64), the value of the original option files.
* `lambda_rec` (float, 1.0): weight of the HR reconstruction (Charbonnier) term.
* `lambda_ce` (float, 1.0): weight of the latent term $\sum z^2$.

`run` — where and how:

* `output` (path, "runs/irn"): run folder holding `checkpoint.pt`, `model.pt`, `config.yaml` and
  the CSV log.
* `checkpoint_every` (int, 5000): steps between checkpoints (one is always written at the end).
* `validate_every` (int, 5000): steps between validations; 0 disables them.
* `validation` (path or null): folder of HR images to validate on (e.g. Set5); null disables.
* `validation_draws` (int, 5): latent draws averaged for the sampled-z PSNR.
* `log_every` (int, 100): steps between CSV rows (validation steps always get one).
* `log_csv` (str, "log.csv"): CSV file name, relative to `output`.
* `device` ("cpu", "cuda" or "auto"; "auto"): "auto" picks CUDA when available.
* `bf16` (bool, false): run the dense-block sub-networks under bfloat16 autocast
  (`flowlearn.irn.fast.accelerate(model, bf16=True)`;
  the exponent, log-determinant and losses stay float32); validation and the returned model use
  float32. Fast on GPUs and on CPUs with bfloat16 units (AMX, AVX512-BF16), slow elsewhere.
* `shards` (int or null, null): on a CPU, cut each batch into this many parts that run forward
  and backward in parallel threads (`flowlearn.irn.irn_backward`; the same gradient up to float
  round-off); null means one per CPU thread, at most the batch size. Ignored on CUDA, and under
  `torchrun` with several processes, where the processes take the place of the shards (each
  runs its part of the batch in one piece; `DistributedDataParallel`'s gradient hooks need one
  backward pass per step).
* `memory_saving` (bool, false): recompute the activations by inversion in the backward pass
  instead of storing them (`IRN.memory_saving`, `flowlearn.core.memory`): a fraction of the
  memory for about 1.5× the time; the same gradients up to round-off. Works under `torchrun`.
* `channels_last` (bool, true): weights and activations in the channels-last memory layout
  (`flowlearn.irn.fast.accelerate(model, channels_last=True)`), faster with oneDNN on CPUs
  and with cuDNN for bfloat16 on GPUs.
* `compile` (bool, false): `torch.compile` the dense-block sub-networks
  (`flowlearn.irn.speed.compile_subnets`); the first steps take longer while it compiles.
* `cudnn_benchmark` (bool, true): on CUDA, let cuDNN time its convolution algorithms for the
  training shapes once and keep the fastest (`torch.backends.cudnn.benchmark`).
* `tensorboard` (bool, true): also log to TensorBoard, in `output/tensorboard/`
  (`flowlearn.irn.logging_tb`); needs the `tensorboard` package (`pip install
  "flowlearn[train]"`); without it the run logs to the CSV file only, with one warning.
* `world_size` (int or null, null): the number of training processes. null: as many as
  `torchrun` starts (1 without it). A number is checked against the launch. The run folder's
  `config.yaml`, checkpoint and `model.pt` record the number the run used.

Relative paths written in a YAML file are resolved against the folder of that file. Defaults
that the file does not set, the shipped configurations (`x2`, `x4`, `x8`, `tiny`, in
`flowlearn/irn/configs/`, also reachable by name: `flowlearn irn train --config x2`) and overrides
(`--set data.train=DIR`) are relative to the current directory.

The original IRN option files (`train_IRN_x4.yml`, recognised by their `network_G` or `datasets`
keys) are read too: the keys with a counterpart here are mapped and one warning lists the rest.

Examples:
    >>> cfg = load_config("x4")
    >>> cfg.model.scale, cfg.data.batch_size, cfg.optim.milestones[0]
    (4, 16, 100000)
    >>> cfg.lambda_fit
    16.0
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "shipped_configs",
]

DEVICES = ("cpu", "cuda", "auto")
SCALES = (2, 4, 8)


class ConfigError(ValueError):
    r"""A configuration file or value that cannot be used, with the key and what was expected."""


@dataclass
class ModelConfig:
    r"""The `model` section: architecture of the IRN (see the module docstring)."""

    scale: int = 2
    blocks: list[int] | None = None
    clamp: float = 1.0
    growth: int = 32
    init: Path | None = None


@dataclass
class DataConfig:
    r"""The `data` section: training images, patches and augmentation."""

    train: Path | None = None
    patch_size: int = 144
    batch_size: int = 16
    flips: bool = True
    rotations: bool = True
    workers: int = 0
    pin_memory: bool = True
    seed: int = 10


@dataclass
class OptimConfig:
    r"""The `optim` section: Adam, MultiStepLR, gradient clipping and the number of steps."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5
    milestones: list[int] = field(default_factory=lambda: [100_000, 200_000, 300_000, 400_000])
    gamma: float = 0.5
    grad_clip: float = 10.0
    steps: int = 500_000


@dataclass
class LossConfig:
    r"""The `loss` section: weights of the fit, reconstruction and latent terms."""

    lambda_fit: float | None = None
    lambda_rec: float = 1.0
    lambda_ce: float = 1.0


@dataclass
class RunConfig:
    r"""The `run` section: output folder, checkpoints, validation, logging and device."""

    output: Path = Path("runs/irn")
    checkpoint_every: int = 5000
    validate_every: int = 5000
    validation: Path | None = None
    validation_draws: int = 5
    log_every: int = 100
    log_csv: str = "log.csv"
    device: str = "auto"
    bf16: bool = False
    shards: int | None = None
    memory_saving: bool = False
    channels_last: bool = True
    compile: bool = False
    cudnn_benchmark: bool = True
    tensorboard: bool = True
    world_size: int | None = None


@dataclass
class Config:
    r"""A complete training configuration: `model`, `data`, `optim`, `loss` and `run`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def lambda_fit(self) -> float:
        r"""The LR-guidance weight in use: `loss.lambda_fit`, or $s^2$ when that is null."""
        if self.loss.lambda_fit is not None:
            return float(self.loss.lambda_fit)
        return float(self.model.scale**2)

    def to_dict(self) -> dict[str, Any]:
        r"""Plain YAML/JSON-ready dictionary (paths as strings), readable by `config_from_dict`."""
        out: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            values = dataclasses.asdict(getattr(self, section.name))
            out[section.name] = {k: _plain(v) for k, v in values.items()}
        return out


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "run": RunConfig,
}


def _plain(value: Any) -> Any:
    r"""Path → str and tuple → list, so the value serialises to YAML/JSON."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _path_keys() -> set[str]:
    r"""Dotted names of the fields that hold paths (resolved against a base folder)."""
    keys = set()
    for name, cls in SECTIONS.items():
        for key, tp in _field_types(cls).items():
            if tp is Path or Path in typing.get_args(tp):
                keys.add(f"{name}.{key}")
    return keys


def _coerce(value: Any, tp: Any, key: str) -> Any:
    r"""Convert a YAML value to the field type `tp`, or raise `ConfigError` naming `key`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if tp is int:
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)  # PyYAML reads "1e-5" as a string
        if tp is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if tp is Path:
            if not isinstance(value, str | os.PathLike):
                raise TypeError
            return Path(value).expanduser()
        if origin in (list, tuple):
            if not isinstance(value, list | tuple):
                raise TypeError
            if origin is tuple and len(value) != len(args):
                raise TypeError
            items = [
                _coerce(v, args[i if origin is tuple else 0], key) for i, v in enumerate(value)
            ]
            return tuple(items) if origin is tuple else items
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unsupported field type {tp} for {key}")
    raise ConfigError(f"{key} must be {_describe(tp)}, got {value!r}")


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, "a path")


def config_from_dict(
    data: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None, source: str = ""
) -> Config:
    r"""Build and validate a `Config` from a nested dictionary in this package's schema.

    Args:
        data: `{"model": {...}, "data": {...}, ...}`; missing keys take their defaults.
        base_dir: folder against which relative paths are resolved (None: leave them relative,
            i.e. relative to the current directory).
        source: name of the file, for error messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unknown section or key (naming the valid ones), a value of the wrong type,
            or an inconsistent value (e.g. a patch size that is not a multiple of the scale).
    """
    where = f" in {source}" if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a configuration must be a mapping of sections{where}")
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"unknown section {unknown[0]!r}{where}; valid sections: {', '.join(SECTIONS)}"
        )
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = data.get(name) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"section {name!r}{where} must be a mapping of keys to values")
        hints = _field_types(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"unknown key '{name}.{key}'{where}; valid keys in {name!r}: "
                    + ", ".join(hints)
                )
            kwargs[key] = _coerce(value, hints[key], f"{name}.{key}")
            if isinstance(kwargs[key], Path) and base_dir is not None:
                kwargs[key] = Path(base_dir, kwargs[key])
        sections[name] = cls(**kwargs)
    config = Config(**sections)
    _validate(config, where)
    return config


def _validate(cfg: Config, where: str) -> None:
    r"""Check values that a type alone does not constrain."""

    def fail(key: str, expected: str, value: Any) -> typing.NoReturn:
        raise ConfigError(f"{key}{where} must be {expected}, got {value!r}")

    m, d, o, r = cfg.model, cfg.data, cfg.optim, cfg.run
    if m.scale not in SCALES:
        fail("model.scale", "one of 2, 4, 8", m.scale)
    levels = int(math.log2(m.scale))
    if m.blocks is not None and (len(m.blocks) != levels or min(m.blocks) < 1):
        fail("model.blocks", f"{levels} positive block count(s) for scale {m.scale}", m.blocks)
    for key, value in [
        ("model.clamp", m.clamp),
        ("model.growth", m.growth),
        ("data.patch_size", d.patch_size),
        ("data.batch_size", d.batch_size),
        ("optim.lr", o.lr),
        ("optim.grad_clip", o.grad_clip),
        ("optim.steps", o.steps),
        ("run.checkpoint_every", r.checkpoint_every),
        ("run.validation_draws", r.validation_draws),
        ("run.log_every", r.log_every),
    ]:
        if not value > 0:
            fail(key, "positive", value)
    if d.patch_size % m.scale:
        fail("data.patch_size", f"a multiple of model.scale = {m.scale}", d.patch_size)
    if d.workers < 0:
        fail("data.workers", "0 or more", d.workers)
    if r.validate_every < 0:
        fail("run.validate_every", "0 (off) or more", r.validate_every)
    if list(o.milestones) != sorted(o.milestones):
        fail("optim.milestones", "increasing step numbers", o.milestones)
    if r.device not in DEVICES:
        fail("run.device", "one of " + ", ".join(DEVICES), r.device)
    if r.shards is not None and not 1 <= r.shards <= d.batch_size:
        fail(
            "run.shards",
            f"null (one per CPU thread) or 1 to data.batch_size = {d.batch_size}",
            r.shards,
        )
    if r.world_size is not None:
        if r.world_size < 1:
            fail("run.world_size", "null (as launched) or a positive number", r.world_size)
        if d.batch_size % r.world_size:
            fail(
                "data.batch_size",
                f"a multiple of run.world_size = {r.world_size} (the batch is global: "
                "each process trains on an equal part of it)",
                d.batch_size,
            )


def shipped_configs() -> dict[str, Path]:
    r"""The configurations shipped in `flowlearn/irn/configs/`, by short name (`x2`, …, `tiny`).

    Examples:
        >>> sorted(shipped_configs())
        ['tiny', 'x2', 'x4', 'x8']
    """
    folder = importlib.resources.files("flowlearn.irn") / "configs"
    found = {}
    for entry in folder.iterdir():
        if entry.name.startswith("irn_") and entry.name.endswith(".yaml"):
            found[entry.name[4:-5]] = Path(str(entry))
    return found


def load_config(
    path: str | os.PathLike[str], *, overrides: Iterable[str] | Mapping[str, Any] = ()
) -> Config:
    r"""Read a configuration from a YAML file, a shipped name, or an original IRN option file.

    Args:
        path: a YAML file, or the name of a shipped configuration (`x2`, `x4`, `x8`, `tiny`;
            `irn_x2` works too). An existing file of that name wins over a shipped one.
        overrides: `"section.key=value"` strings (value parsed as YAML) or a `{dotted: value}`
            mapping applied on top of the file; relative paths in them are resolved against the
            current directory.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, or bad value.
    """
    file = Path(path).expanduser()
    shipped = shipped_configs()
    name = str(path).removeprefix("irn_").removesuffix(".yaml")
    base_dir: Path | None = file.resolve().parent
    if not file.is_file():
        if name not in shipped:
            raise ConfigError(
                f"no configuration file {str(path)!r}; shipped configurations: "
                + ", ".join(sorted(shipped))
            )
        file, base_dir = shipped[name], None
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read configuration {file}: {err}".replace("\n", " ")) from err
    if isinstance(raw, Mapping) and ("network_G" in raw or "datasets" in raw):
        raw = _from_original(raw, str(file))
    if isinstance(raw, Mapping) and base_dir is not None:
        raw = _resolve_paths(raw, base_dir)
    raw = apply_overrides(raw, overrides)
    return config_from_dict(raw, source=str(file))


def _resolve_paths(raw: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    r"""Copy of `raw` with the relative path fields made relative to `base_dir`."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted in _path_keys():
        section, key = dotted.split(".")
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str):
            out[section][key] = str(base_dir / Path(value).expanduser())
    return out


def apply_overrides(
    raw: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any]
) -> dict[str, Any]:
    r"""Copy of the nested dictionary `raw` with dotted-key overrides applied.

    Args:
        raw: configuration dictionary in this package's schema.
        overrides: `"data.train=/photos"`-style strings (the value is parsed as YAML, so
            `optim.milestones=[10, 20]` works) or a `{"data.train": "/photos"}` mapping.

    Returns:
        A new dictionary; `raw` is not modified.

    Raises:
        ConfigError: an override that is not `section.key=value`.

    Examples:
        >>> apply_overrides({"data": {"seed": 1}}, ["data.seed=2", "run.bf16=true"])
        {'data': {'seed': 2}, 'run': {'bf16': True}}
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    items: Iterable[tuple[str, Any]]
    if isinstance(overrides, Mapping):
        items = overrides.items()
    else:
        pairs = []
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep:
                raise ConfigError(f"override {text!r} must look like section.key=value")
            pairs.append((key.strip(), yaml.safe_load(value)))
        items = pairs
    for key, value in items:
        section, dot, name = key.partition(".")
        if not dot or not name:
            raise ConfigError(f"override key {key!r} must look like section.key")
        if key in _path_keys() and isinstance(value, str):
            value = str(Path(value).expanduser().resolve())
        current = out.get(section)
        out[section] = {**(current if isinstance(current, dict) else {}), name: value}
    return out


# Original option file key → our dotted key (the original codes/options/train/train_IRN_x*.yml).
_ORIGINAL_KEYS = {
    "scale": "model.scale",
    "network_G.scale": "model.scale",
    "network_G.block_num": "model.blocks",
    "train.lr_G": "optim.lr",
    "train.lr_steps": "optim.milestones",
    "train.lr_gamma": "optim.gamma",
    "train.beta1": "optim.betas.0",
    "train.beta2": "optim.betas.1",
    "train.weight_decay_G": "optim.weight_decay",
    "train.gradient_clipping": "optim.grad_clip",
    "train.lambda_fit_forw": "loss.lambda_fit",
    "train.lambda_rec_back": "loss.lambda_rec",
    "train.lambda_ce_forw": "loss.lambda_ce",
    "train.niter": "optim.steps",
    "train.val_freq": "run.validate_every",
    "train.manual_seed": "data.seed",
    "manual_seed": "data.seed",
    "datasets.train.dataroot_GT": "data.train",
    "datasets.train.GT_size": "data.patch_size",
    "datasets.train.batch_size": "data.batch_size",
    "datasets.train.use_flip": "data.flips",
    "datasets.train.use_rot": "data.rotations",
    "datasets.train.n_workers": "data.workers",
    "datasets.val.dataroot_GT": "run.validation",
    "path.pretrain_model_G": "model.init",
    "logger.save_checkpoint_freq": "run.checkpoint_every",
    "use_tb_logger": "run.tensorboard",
}


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _from_original(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    r"""Translate an original IRN option file into our schema; warn once about ignored keys."""
    flat = _flatten(raw)
    out: dict[str, dict[str, Any]] = {}
    betas: list[Any] = list(OptimConfig().betas)
    ignored = []
    for key, value in flat.items():
        target = _ORIGINAL_KEYS.get(key)
        if target is None or value is None:
            if value is not None:
                ignored.append(key)
            continue
        if target.startswith("optim.betas."):
            betas[int(target[-1])] = value
            target = "optim.betas"
            value = betas
        section, name = target.split(".")
        out.setdefault(section, {})[name] = value
    if flat.get("name"):
        out.setdefault("run", {})["output"] = f"runs/{flat['name']}"
        ignored.remove("name")
    if ignored:
        warnings.warn(
            f"{source}: original IRN option keys without a counterpart here, ignored: "
            + ", ".join(sorted(ignored)),
            stacklevel=3,
        )
    return out
