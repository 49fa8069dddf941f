"""Shared test configuration and helpers: paths, reference data, tiny models, test images."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
import torch

if TYPE_CHECKING:
    from flowlearn.irn.model import IRN

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def benchmark_script(name: str) -> ModuleType:
    """The module `benchmarks/<name>.py`, loaded fresh (it is a script, not a package module)."""
    return _script(ROOT / "benchmarks" / f"{name}.py", name)


def figure_script(name: str) -> ModuleType:
    """The module `docs/figures/<name>.py`, loaded fresh (a script that draws a docs figure)."""
    return _script(ROOT / "docs" / "figures" / f"{name}.py", name)


def _script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # for dataclasses and pickling inside the script
    spec.loader.exec_module(module)
    return module


def shared_path(*parts: str) -> Path:
    """Path inside ../shared; skips the test when absent (never in CI, where it must exist)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(f"{path} is required in CI")
        pytest.skip(f"{path} not available")
    return path


@functools.cache
def _torch_file(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def irn_reference(scale: int) -> dict[str, Any]:
    """Inputs and outputs of the original IRN code for scale 2 or 4, with its `state_dict`.

    The files are in ../shared/fixtures/irn_reference (read once per session; do not modify
    what is returned). The x2 file lists its key names only: its weights are the first keys of
    the x4 weights, both networks having been built after the same seed.
    """
    folder = ("fixtures", "irn_reference")
    x4 = _torch_file(shared_path(*folder, "irn_x4_seed0.pt"))
    if scale == 4:
        return x4
    data = dict(_torch_file(shared_path(*folder, f"irn_x{scale}_seed0.pt")))
    data["state_dict"] = {k: x4["state_dict"][k] for k in data["state_dict_keys"]}
    return data


@pytest.fixture(scope="module", params=[2, 4], ids=["x2", "x4"])
def irn_ref(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`irn_reference` of each scale in turn."""
    return irn_reference(request.param)


def tiny_irn(
    scale: int = 2,
    *,
    blocks: Sequence[int] | None = None,
    seed: int = 0,
    jitter: float = 0.05,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> IRN:
    """A small IRN (growth 4, one coupling per level unless `blocks` says otherwise).

    Built after `torch.manual_seed(seed)`, its weights then jittered by `jitter` (seeded too):
    freshly built couplings are the identity, which tests little. `options` go to `IRN`.
    """
    from flowlearn.checks import jitter_parameters
    from flowlearn.irn.model import IRN

    levels = scale.bit_length() - 1
    torch.manual_seed(seed)
    net = IRN(scale, blocks=list(blocks or [1] * levels), growth=4, **options).to(dtype)
    return jitter_parameters(net, scale=jitter, seed=seed)


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A random but smooth RGB image `(3, H, W)` in [0, 1] (bicubic upsampling of noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 6 + 2, width // 6 + 2, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
    return x[0].clamp(0, 1)


def write_images(folder: Path, sizes: Sequence[tuple[int, int]], *, seed: int = 0) -> Path:
    """Write `smooth_image`s of the given `(height, width)` as `folder/<i>.png`; return `folder`."""
    from flowlearn.images.io import write_image

    for i, (height, width) in enumerate(sizes):
        write_image(folder / f"{i}.png", smooth_image(height, width, seed + i))
    return folder


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors run fastest on one thread; a second one only contends on a busy machine.

    Use it for a whole test module with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
