r"""Training configuration for the Invertible Rescaling Net: a typed schema read from YAML.

A configuration has six sections. Every field, its default and its meaning:

`model` — the network (`flowlearn.irn.IRN`):

* `scale` (int, 2): the rescaling factor $s$, one of 2, 4, 8.
* `blocks` (list of int or null): InvBlocks per Haar level, one entry per level
  ($\log_2 s$ levels); null means 8 per level as in the paper.
* `clamp` (float, 1.0): bound of the affine exponent in each InvBlock.
* `growth` (int, 32): channels added by each convolution of the dense-block subnets.
* `init` (path, shipped model name or null): weights to start from (a flowlearn checkpoint, an
  original `.pth`, or `x2`/`x4` for a model shipped with flowlearn), loaded before training.

`data` — the training set (`flowlearn.irn.data.IRNTrainSet`):

* `train` (path or null): folder of HR training images. Must be set before training.
* `patch_size` (int, 144): side of the square HR patch; a multiple of `scale`.
* `batch_size` (int, 16): patches per step: the **global** batch, over all processes when the
  run is launched with `torchrun` (each of $W$ processes trains on `batch_size / W` of them;
  $W$ must divide it). The patches and latents a sample gets do not depend on $W$.
* `flips` (bool, true): random horizontal flip.
* `rotations` (bool, true): random vertical flip and transpose (together with `flips`, the
  eight symmetries of the square).
* `prescale` (float, 1.0): resize every training image by this factor in (0, 1] (bicubic
  `imresize`) before cropping patches; 1 keeps them as they are (the paper's DIV2K PNGs).
  Use 0.5 for JPEG photos such as BSDS500: JPEG usually stores colour at half resolution
  (4:2:0), and a model trained on full-size JPEGs drifts in colour on images with fine colour
  detail (`flowlearn.irn.data.IRNTrainSet`, the model card).
* `recolour` (float, 0.0): probability in [0, 1] that a training patch is recoloured (each
  channel inverted with probability 1/2 and scaled by a random gain in [1/2, 1]), which turns
  the grey fine detail of JPEG photos into colour detail; the LR reference is recoloured alike.
* `noise` (float, 0.0): probability in [0, 1] that Gaussian noise, independent in every pixel
  and channel, is added to a training patch, and its bicubic LR to the LR reference; its
  standard deviation is drawn uniformly from [0, `noise_level`] per patch. Fine colour detail
  that JPEG photos lack; without it the LR's colour shifts in spots on noisy images.
* `noise_level` (float, 10.0): the largest standard deviation of that noise, in 8-bit levels.
* `workers` (int, 0): `DataLoader` worker processes (0 loads in the training process), per
  training process; lowered, with a warning, to the CPUs the process may run on.
* `pin_memory` (bool, true): on CUDA, load batches into pinned (page-locked) memory and copy
  them to the GPU without blocking (`non_blocking=True`); ignored on a CPU.
* `seed` (int, 10): seed of the patch sampler, the latent draws and the weight initialisation.

`optim` — Adam with a step learning-rate schedule:

* `lr` (float, 2e-4), `betas` (two floats, [0.9, 0.999]), `weight_decay` (float, 1e-5, coupled
  L2 as in `torch.optim.Adam`).
* `milestones` (list of int, [100000, 200000, 300000, 400000]) and `gamma` (float, 0.5):
  `MultiStepLR`, the rate is multiplied by `gamma` at each milestone step.
* `warmup` (int, 0): the first `warmup` steps rise linearly to `lr` (step $t$ at
  `lr`·$t$/`warmup`; `flowlearn.irn.schedule.irn_scheduler`); 0 starts at `lr`, as the recipe does.
  For fine-tunes from a trained model (`model.init`), whose fresh Adam otherwise takes full-size
  steps at once.
* `grad_clip` (float, 10.0): global L2 norm of the gradients is clipped to this.
* `steps` (int, 500000): optimisation steps in total.

`loss` — weights of the three terms (Xiao et al. 2020, arXiv:2005.05650, §3.3; `lambda_fit_forw`,
`lambda_rec_back`, `lambda_ce_forw` in the original codes/options/train/train_IRN_x*.yml):

* `lambda_fit` (float or null): weight of the LR guidance $\|y - \mathrm{bicubic}(x)\|^2$;
  null means $s^2$ (4, 16, 64), the value of the original option files.
* `lambda_rec` (float, 1.0): weight of the HR reconstruction (Charbonnier) term.
* `lambda_ce` (float, 1.0): weight of the latent term $\sum z^2$.

`gan` — the IRN+ stage (Xiao et al. 2020, §4; `flowlearn.irn.gan`): fine-tune a trained IRN
(`model.init`) against a discriminator, optionally with a VGG19 perceptual loss. Off while
`discriminator` is null:

* `discriminator` (null, "vgg128" or "patch"; null): null trains plain IRN. "vgg128" is the
  original's VGG-style discriminator (`VGGDiscriminator`; `data.patch_size` 128 to 159),
  "patch" a PatchGAN (`PatchDiscriminator`) that takes any patch of at least
  $3\cdot 2^\text{patch\_layers}$ pixels.
* `channels` (int, 64): width of the discriminator's first convolution.
* `patch_layers` (int, 3): stride-2 convolutions of the patch discriminator (3: 70×70 windows).
* `loss` ("gan" or "ragan"; "gan"): vanilla or relativistic-average GAN loss.
* `weight` (float, 1.0): weight of the adversarial term in the IRN's objective (a plain mean).
* `perceptual_weight` (float, 0.0): weight of the VGG19 conv5_4 feature loss (summed over
  features, averaged over the batch; 0.01 in the original). Positive values need the ImageNet
  VGG19 weights on this machine; the run stops at once, with how to get them, when they are not.
* `vgg_weights` (path or null): torchvision's `vgg19-dcbb9e9d.pth`; null looks in torchvision's
  cache (`torch.hub.get_dir()/checkpoints`).
* `lr` (float, 1e-4), `betas` (two floats, [0.9, 0.99]), `weight_decay` (float, 0.0): the
  discriminator's Adam; it follows the same `optim.milestones` and `optim.gamma` schedule.
* `d_init_steps` (int, 0): the first steps train the discriminator only.
* `d_update_ratio` (int, 1): after that, the IRN is updated every this many steps.

In the IRN+ recipe `loss.lambda_ce` is 0 (the adversarial loss replaces the latent term) and
`loss.lambda_rec` is 0.01.

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
import re
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
    "GanConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "OriginalTestOptions",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_test_options",
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
    prescale: float = 1.0
    recolour: float = 0.0
    noise: float = 0.0
    noise_level: float = 10.0
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
    warmup: int = 0
    grad_clip: float = 10.0
    steps: int = 500_000


@dataclass
class LossConfig:
    r"""The `loss` section: weights of the fit, reconstruction and latent terms."""

    lambda_fit: float | None = None
    lambda_rec: float = 1.0
    lambda_ce: float = 1.0


@dataclass
class GanConfig:
    r"""The `gan` section: the IRN+ stage, off while `discriminator` is null."""

    discriminator: str | None = None
    channels: int = 64
    patch_layers: int = 3
    loss: str = "gan"
    weight: float = 1.0
    perceptual_weight: float = 0.0
    vgg_weights: Path | None = None
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    d_init_steps: int = 0
    d_update_ratio: int = 1


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
    r"""A complete training configuration: `model`, `data`, `optim`, `loss`, `gan` and `run`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GanConfig = field(default_factory=GanConfig)
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
    "gan": GanConfig,
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
    if not 0 < d.prescale <= 1:
        fail("data.prescale", "a factor in (0, 1] (1 keeps the images as they are)", d.prescale)
    if not 0 <= d.recolour <= 1:
        fail("data.recolour", "a probability in [0, 1]", d.recolour)
    if not 0 <= d.noise <= 1:
        fail("data.noise", "a probability in [0, 1]", d.noise)
    if not 0 < d.noise_level <= 255:
        fail("data.noise_level", "a standard deviation in (0, 255] 8-bit levels", d.noise_level)
    if d.patch_size % m.scale:
        fail("data.patch_size", f"a multiple of model.scale = {m.scale}", d.patch_size)
    if d.workers < 0:
        fail("data.workers", "0 or more", d.workers)
    if r.validate_every < 0:
        fail("run.validate_every", "0 (off) or more", r.validate_every)
    _validate_gan(cfg, fail)
    if o.warmup < 0:
        fail("optim.warmup", "0 (no warm-up) or a number of steps", o.warmup)
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


GAN_DISCRIMINATORS = ("vgg128", "patch")


def _validate_gan(cfg: Config, fail: typing.Callable[[str, str, Any], typing.NoReturn]) -> None:
    r"""Check the `gan` section against itself and the patch size."""
    g, patch = cfg.gan, cfg.data.patch_size
    if g.discriminator is None:
        if g.perceptual_weight > 0:
            fail("gan.perceptual_weight", "0 while gan.discriminator is null", g.perceptual_weight)
        return
    if g.discriminator not in GAN_DISCRIMINATORS:
        fail("gan.discriminator", "null, vgg128 or patch", g.discriminator)
    if g.loss not in ("gan", "ragan"):
        fail("gan.loss", "gan or ragan", g.loss)
    for key, value in [
        ("gan.channels", g.channels),
        ("gan.patch_layers", g.patch_layers),
        ("gan.lr", g.lr),
        ("gan.d_update_ratio", g.d_update_ratio),
    ]:
        if not value > 0:
            fail(key, "positive", value)
    for key, value in [
        ("gan.weight", g.weight),
        ("gan.perceptual_weight", g.perceptual_weight),
        ("gan.weight_decay", g.weight_decay),
        ("gan.d_init_steps", g.d_init_steps),
    ]:
        if value < 0:
            fail(key, "0 or more", value)
    if g.discriminator == "vgg128" and not 128 <= patch < 160:
        fail("data.patch_size", "128 to 159 for gan.discriminator vgg128 (or use patch)", patch)
    if g.discriminator == "patch" and patch < 3 * 2**g.patch_layers:
        fail(
            "data.patch_size",
            f"at least {3 * 2**g.patch_layers} for a patch discriminator with "
            f"gan.patch_layers = {g.patch_layers}",
            patch,
        )


def shipped_configs() -> dict[str, Path]:
    r"""The configurations shipped in `flowlearn/irn/configs/`, by short name (`x2`, …, `tiny`).

    Examples:
        >>> sorted(shipped_configs())
        ['tiny', 'x2', 'x4', 'x4_plus_gan', 'x8']
    """
    folder = importlib.resources.files("flowlearn.irn") / "configs"
    found = {}
    for entry in folder.iterdir():
        if entry.name.startswith("irn_") and entry.name.endswith(".yaml"):
            found[entry.name[4:-5]] = Path(str(entry))
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    r"""`yaml.SafeLoader` that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; give each key once", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(file: Path, what: str) -> Any:
    r"""The YAML document in `file` (None when empty), with duplicate keys refused."""
    try:
        return yaml.load(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {what} {file}: {_yaml_problem(err)}") from None


def _yaml_problem(err: Exception) -> str:
    r"""One line for a YAML error: the problem and its line, without the quoted source."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem and err.problem_mark is not None:
        return f"{err.problem} (line {err.problem_mark.line + 1})"
    return " ".join(str(err).split())


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
    raw = _read_yaml(file, "configuration")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{file} is not a configuration: its top level is a {type(raw).__name__}, not a "
            "mapping of sections (model:, data:, optim:, loss:, gan:, run:)"
        )
    if "network_G" in raw or "datasets" in raw:
        raw = _from_original(raw, str(file))
    if base_dir is not None:
        raw = _resolve_paths(raw, base_dir)
    merged = apply_overrides(raw, overrides)
    try:
        return config_from_dict(merged, source=str(file))
    except ConfigError:
        if not overrides or not _is_valid(raw):
            raise
    # the file alone is valid: an override is to blame, and the message says so
    where = "the overrides" if isinstance(overrides, Mapping) else "--set"
    try:
        return config_from_dict(merged, source=where)
    except ConfigError as err:
        if where in str(err):
            raise
        raise ConfigError(f"{err} (a value given with {where})") from None


def _is_valid(raw: Mapping[str, Any]) -> bool:
    try:
        config_from_dict(raw)
    except ConfigError:
        return False
    return True


def _resolve_paths(raw: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    r"""Copy of `raw` with the relative path fields made relative to `base_dir`."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted in _path_keys():
        section, key = dotted.split(".")
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and not _names_a_model(dotted, value):
            out[section][key] = str(base_dir / Path(value).expanduser())
    return out


def _names_a_model(key: str, value: str) -> bool:
    r"""Whether `value` of `model.init` names a shipped model (`x4`) rather than a file."""
    return key == "model.init" and re.fullmatch(r"[xX][0-9]+(_plus)?", value.strip()) is not None


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
            try:
                parsed = yaml.load(value, Loader=_UniqueKeyLoader)
            except yaml.YAMLError as err:
                problem = _yaml_problem(err)
                raise ConfigError(
                    f"--set {text!r}: the value is not valid YAML ({problem}); quote it, "
                    "e.g. --set 'data.train=\"my folder\"'"
                ) from None
            pairs.append((key.strip(), parsed))
        items = pairs
    for key, value in items:
        section, dot, name = key.partition(".")
        if not dot or not name:
            raise ConfigError(f"override key {key!r} must look like section.key")
        if key in _path_keys() and isinstance(value, str) and not _names_a_model(key, value):
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

# IRN+ (`model: IRN+`, options/train/train_IRN+_x4.yml; models/IRNp_model.py) → the `gan` section.
_ORIGINAL_GAN_KEYS = {
    "network_D.which_model_D": "gan.discriminator",
    "network_D.nf": "gan.channels",
    "train.lr_D": "gan.lr",
    "train.beta1_D": "gan.betas.0",
    "train.beta2_D": "gan.betas.1",
    "train.weight_decay_D": "gan.weight_decay",
    "train.gan_type": "gan.loss",
    "train.gan_weight": "gan.weight",
    "train.feature_weight": "gan.perceptual_weight",
    "train.D_update_ratio": "gan.d_update_ratio",
    "train.D_init_iters": "gan.d_init_steps",
}
_ORIGINAL_DISCRIMINATORS = {"discriminator_vgg_128": "vgg128"}

# Keys whose value must be what flowlearn implements (null is always accepted); any other value
# is refused rather than silently trained differently. An empty tuple: only null is accepted.
_ORIGINAL_ACCEPTED: dict[str, tuple[Any, ...]] = {
    "model": ("IRN", "IRN+"),
    "network_G.which_model_G.subnet_type": ("DBNet",),
    "network_G.which_model_G.use_ConvDownsampling": (False,),
    "network_G.which_model_G.down_first": (False,),
    "network_G.in_nc": (3,),
    "network_G.out_nc": (3,),
    "network_D.which_model_D": tuple(_ORIGINAL_DISCRIMINATORS),
    "network_D.in_nc": (3,),
    "train.lr_scheme": ("MultiStepLR",),
    "train.warmup_iter": (-1, 0),
    "train.restarts": (),
    "train.restart_weights": (),
    "train.pixel_criterion_forw": ("l2",),
    "train.pixel_criterion_back": ("l1",),
    "train.feature_criterion": ("l1",),
    "train.gan_type": ("gan", "ragan"),
    "train.gaussian_scale": (1,),
    "test.gaussian_scale": (),  # read by load_test_options, not by training
    "path.resume_state": (),  # flowlearn resumes from run.output with --resume
    "path.pretrain_model_D": (),
}


def _refused(flat: Mapping[str, Any], source: str) -> None:
    r"""Raise one `ConfigError` listing every value of `_ORIGINAL_ACCEPTED` keys not accepted."""
    problems = []
    for key, accepted in _ORIGINAL_ACCEPTED.items():
        value = flat.get(key)
        if value is None or any(
            value == a and isinstance(value, bool) == isinstance(a, bool) for a in accepted
        ):
            continue
        supported = ", ".join(map(repr, accepted)) if accepted else "null only"
        problems.append(f"{key} = {value!r} (flowlearn implements {supported})")
    if problems:
        raise ConfigError(
            f"{source}: original IRN option values that flowlearn does not implement: "
            + "; ".join(problems)
        )


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
    _refused(flat, source)
    plus = flat.get("model") == "IRN+"
    keys = {**_ORIGINAL_KEYS, **(_ORIGINAL_GAN_KEYS if plus else {})}
    if plus:  # IRNp_model.py has no latent term: the adversarial loss plays its role
        del keys["train.lambda_ce_forw"]
    out: dict[str, dict[str, Any]] = {"loss": {"lambda_ce": 0.0}} if plus else {}
    betas = {"optim": list(OptimConfig().betas), "gan": list(GanConfig().betas)}
    ignored = []
    for key, value in flat.items():
        target = keys.get(key)
        if target is None or value is None:
            if value is not None:
                ignored.append(key)
            continue
        if target == "gan.discriminator":
            value = _ORIGINAL_DISCRIMINATORS[value]
        if ".betas." in target:
            section = target.split(".")[0]
            betas[section][int(target[-1])] = value
            target, value = f"{section}.betas", betas[section]
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


@dataclass
class OriginalTestOptions:
    r"""What an original IRN *test* option file (`test_IRN_x4.yml`, `test_IRN+_x4.yml`) asks for.

    Attributes:
        scale: the rescaling factor.
        model: `path.pretrain_model_G`, the weights to test (resolved against the file's
            folder), or None.
        datasets: test set name → folder of HR images (`dataroot_GT`, resolved against the
            file's folder), or None where the file leaves it to the user (`~`).
        blocks: `network_G.block_num`, checked against the model when given.
        temperature: `test.gaussian_scale`, the standard deviation of the sampled latent.
    """

    scale: int
    model: Path | None = None
    datasets: dict[str, Path | None] = field(default_factory=dict)
    blocks: list[int] | None = None
    temperature: float = 1.0


_TEST_IGNORED = ("name", "suffix", "distortion", "gpu_ids", "use_tb_logger", "network_G.init")


def load_test_options(path: str | os.PathLike[str]) -> OriginalTestOptions:
    r"""Read an original IRN test option file (what `flowlearn irn test --config` takes).

    Mapped: `scale` (and `network_G.scale`), `network_G.block_num`, `path.pretrain_model_G`
    (the model), `datasets.<key>.name` / `dataroot_GT` (the test sets), `test.gaussian_scale`
    (the temperature). Refused with a `ConfigError`: a `model` other than IRN / IRN+, a
    `crop_border` other than null or the scale (the protocol shaves `scale` pixels), other
    generator architectures. Other keys are listed in one warning and ignored:
    `dataroot_LQ` among them, since the LR image is always computed from the HR one.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "t.yml").write_text(
        ...     "model: IRN+\nscale: 4\ndatasets: {test_1: {name: set5, dataroot_GT: Set5}}\n")
        >>> opts = load_test_options(folder / "t.yml")
        >>> opts.scale, opts.datasets == {"set5": folder / "Set5"}
        (4, True)
    """
    file = Path(path).expanduser()
    raw = _read_yaml(file, "option file") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file} is not an option file (a mapping of keys)")
    flat = _flatten(raw)
    _refused({k: v for k, v in flat.items() if k != "test.gaussian_scale"}, str(file))
    base = file.resolve().parent
    scale = flat.get("scale", flat.get("network_G.scale"))
    if scale not in SCALES:
        raise ConfigError(f"{file}: scale must be one of 2, 4, 8, got {scale!r}")
    border = flat.get("crop_border")
    if border is not None and border != scale:
        raise ConfigError(
            f"{file}: crop_border = {border!r} is refused: flowlearn's protocol shaves the "
            f"scale ({scale} pixels) off each side, as crop_border: ~ does"
        )
    options = OriginalTestOptions(scale=int(scale))
    used = {"scale", "network_G.scale", "crop_border", "model"}
    if flat.get("network_G.block_num") is not None:
        options.blocks = [int(n) for n in flat["network_G.block_num"]]
    used.add("network_G.block_num")
    if flat.get("path.pretrain_model_G") is not None:
        options.model = base / Path(flat["path.pretrain_model_G"]).expanduser()
    used.add("path.pretrain_model_G")
    if flat.get("test.gaussian_scale") is not None:
        options.temperature = float(flat["test.gaussian_scale"])
    used.add("test.gaussian_scale")
    sets = raw.get("datasets") or {}
    for key, entry in sets.items() if isinstance(sets, Mapping) else ():
        if key == "train" or not isinstance(entry, Mapping):
            continue
        name = str(entry.get("name") or key)
        root = entry.get("dataroot_GT")
        options.datasets[name] = None if root is None else base / Path(root).expanduser()
        used.update(f"datasets.{key}.{k}" for k in ("name", "mode", "dataroot_GT"))
    ignored = sorted(
        k
        for k, v in flat.items()
        if v is not None
        and k not in used
        and k not in _ORIGINAL_ACCEPTED
        and k not in _TEST_IGNORED
        and not k.startswith("network_G.which_model_G")
    )
    if ignored:
        warnings.warn(
            f"{file}: original IRN option keys without a counterpart in testing, ignored: "
            + ", ".join(ignored),
            stacklevel=2,
        )
    return options
