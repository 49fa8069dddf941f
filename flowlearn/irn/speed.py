r"""Speed settings shared by training and benchmarks: backends, `torch.compile`, inversion drift.

* `configure_backends(...)`: the `torch.backends` switches that matter for IRN-sized
  convolutions (threads, cuDNN autotuning, TF32, denormals), returning the previous values so
  they can be restored.
* `compile_available(device)` / `maybe_compile(module)` / `compile_subnets(model)`:
  `torch.compile` when it can work here (a C++ compiler for CPU, Triton for CUDA), with a
  warning and plain eager execution otherwise.
* `cpu_has_bf16()`: whether this CPU has bfloat16 instructions, without which bfloat16
  sub-networks (`flowlearn.irn.fast.accelerate(model, bf16=True)`) are slower than float32 on
  CPU.

The faster arrangements of the IRN layers themselves are in `flowlearn.irn.fast`; the measured
effect of every option is on the performance page of the documentation.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from typing import Any

import torch
from torch import nn

__all__ = [
    "compile_available",
    "compile_subnets",
    "configure_backends",
    "cpu_has_bf16",
    "maybe_compile",
]

_STATE = {"flush_denormal": False}  # off in a fresh process


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX tiles); `None` if unknown.

    With it, oneDNN runs bfloat16 convolutions natively and bfloat16 sub-networks speed an IRN
    up on the CPU (see the performance page); without it, bfloat16 is converted back and
    forth around float32 arithmetic and is slower than plain float32. PyTorch answers this
    only through private functions (`torch.cpu._is_avx512_bf16_supported`,
    `torch.cpu._is_amx_tile_supported`); where they are missing, the answer is `None`.

    Examples:
        >>> cpu_has_bf16() in (True, False, None)
        True
    """
    probes = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if any(probe is None for probe in probes):
        return None
    return any(bool(probe()) for probe in probes)  # type: ignore[misc]


def configure_backends(
    *,
    threads: int | None = None,
    cudnn_benchmark: bool | None = None,
    tf32_conv: bool | None = None,
    tf32_matmul: bool | None = None,
    flush_denormal: bool | None = None,
) -> dict[str, Any]:
    r"""Set the `torch.backends` switches that matter for IRN; `None` leaves one unchanged.

    * `threads`: intra-op CPU threads (`torch.set_num_threads`). On a machine shared with other
      jobs, fewer threads than cores avoids OpenMP threads spinning while descheduled.
    * `cudnn_benchmark`: let cuDNN time its convolution algorithms once per input shape and
      keep the fastest (`torch.backends.cudnn.benchmark`); pays off for fixed patch sizes.
    * `tf32_conv`, `tf32_matmul`: TensorFloat-32 (10-bit mantissa) for float32 convolutions /
      matrix products on Ampere or newer GPUs: faster, but results change beyond float32
      round-off. PyTorch's defaults are on for convolutions
      (`torch.backends.cudnn.allow_tf32`) and off for matrix products.
    * `flush_denormal`: treat subnormal floats as zero on CPU (`torch.set_flush_denormal`);
      they can slow CPU arithmetic by orders of magnitude, and only values below
      $1.2 \cdot 10^{-38}$ change.

    Returns:
        The previous values of the settings that were given, so that
        `configure_backends(**previous)` restores them.

    Examples:
        >>> previous = configure_backends(cudnn_benchmark=True)
        >>> torch.backends.cudnn.benchmark
        True
        >>> _ = configure_backends(**previous)
        >>> torch.backends.cudnn.benchmark == previous["cudnn_benchmark"]
        True
    """
    previous: dict[str, Any] = {}
    if threads is not None:
        if threads < 1:
            raise ValueError(f"configure_backends: threads must be positive, got {threads}")
        previous["threads"] = torch.get_num_threads()
        torch.set_num_threads(threads)
    if cudnn_benchmark is not None:
        previous["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cudnn_benchmark
    if tf32_conv is not None:
        previous["tf32_conv"] = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32_conv
    if tf32_matmul is not None:
        previous["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32_matmul
    if flush_denormal is not None:
        previous["flush_denormal"] = _STATE["flush_denormal"]  # torch has no getter
        if not torch.set_flush_denormal(flush_denormal) and flush_denormal:
            warnings.warn(
                "configure_backends: this CPU cannot flush denormals (needs SSE3)",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            _STATE["flush_denormal"] = flush_denormal
    return previous


def compile_available(device: str | torch.device = "cpu", backend: str = "inductor") -> str | None:
    """Why `torch.compile` cannot run here, or `None` when it can.

    Checks that TorchDynamo supports this Python, and for the default `"inductor"` backend that
    a C++ compiler is on the `PATH` (CPU code generation) or that Triton is installed (CUDA).

    Args:
        device: the device the compiled module will run on.
        backend: the `torch.compile` backend (`"eager"` and `"aot_eager"` need no compiler).

    Examples:
        >>> compile_available("cpu", backend="eager") is None
        True
    """
    from torch import _dynamo

    if not _dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if backend != "inductor":
        return None
    device_type = torch.device(device).type
    if device_type == "cpu":
        compilers = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            return "no C++ compiler (c++, g++ or clang++) on the PATH for CPU code generation"
    elif device_type == "cuda" and importlib.util.find_spec("triton") is None:
        return "Triton is not installed (needed for CUDA code generation)"
    return None


def maybe_compile(
    module: nn.Module,
    *,
    device: str | torch.device = "cpu",
    backend: str = "inductor",
    mode: str | None = None,
) -> bool:
    """Compile `module` in place with `torch.compile`, or warn and leave it eager.

    In place (`nn.Module.compile`): parameter names, `state_dict` and hooks are unchanged. The
    compilation itself happens at the first call, for every new input shape.

    Args:
        module: the module whose `forward` is compiled.
        device: the device it will run on (decides what the backend needs).
        backend: `torch.compile` backend.
        mode: `torch.compile` mode (`None`, `"reduce-overhead"`, `"max-autotune"`).

    Returns:
        `True` when compiled, `False` when `torch.compile` is unavailable (a `RuntimeWarning`
        says why).

    Examples:
        >>> net = nn.Linear(3, 2)
        >>> maybe_compile(net, backend="eager")
        True
    """
    reason = compile_available(device, backend)
    if reason is not None:
        warnings.warn(
            f"maybe_compile: {reason}; running {type(module).__name__} without torch.compile",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    module.compile(backend=backend, mode=mode)
    return True


def compile_subnets(
    model: nn.Module,
    *,
    device: str | torch.device = "cpu",
    backend: str = "inductor",
    mode: str | None = None,
) -> int:
    r"""Compile the sub-networks $\phi, \eta, \rho$ (`F`, `G`, `H`) of every coupling in place.

    The couplings call their sub-networks in both directions and during the recomputation of
    memory-saving backpropagation, so compiling them (rather than `model.forward`) speeds up
    `forward`, `inverse` and training alike; the couplings' own arithmetic stays eager.

    Args:
        model: a model whose couplings have `F`, `G`, `H` sub-modules (`IRN`, `IRNCoupling`).
        device: the device it will run on.
        backend: `torch.compile` backend.
        mode: `torch.compile` mode.

    Returns:
        How many sub-networks were compiled (0, with one warning, when `torch.compile` is
        unavailable).

    Examples:
        >>> from flowlearn import IRN
        >>> compile_subnets(IRN(2, blocks=[2], growth=4), backend="eager")
        6
    """
    subnets = [
        getattr(m, name)
        for m in model.modules()
        if all(isinstance(getattr(m, n, None), nn.Module) for n in "FGH")
        for name in "FGH"
    ]
    if not subnets:
        return 0
    reason = compile_available(device, backend)
    if reason is not None:
        warnings.warn(
            f"compile_subnets: {reason}; running without torch.compile",
            RuntimeWarning,
            stacklevel=2,
        )
        return 0
    for net in subnets:
        net.compile(backend=backend, mode=mode)
    return len(subnets)
