r"""Prove a bijector right: round trips, log-determinants against a brute-force Jacobian, and more.

For a layer $f$ and a batch $x$ of $B$ samples, `check_bijector` measures

* the round trips $\max|f^{-1}(f(x)) - x|$ and $\max|f(f^{-1}(y)) - y|$ with $y = f(x)$;
* the cancellation $\max_b |\ell_f(x_b) + \ell_{f^{-1}}(y_b)|$ of the two log-determinants;
* the log-determinant against the brute force: the full Jacobian $\partial f(x) / \partial x$ of
  the whole batch is computed with autograd in float64 (shapes are flattened, so layers that
  change the shape are fine), and for every sample

  $$
  \bigl|\ \ell_f(x_b) - \log\left|\det \tfrac{\partial f(x)_b}{\partial x_b}\right|\ \bigr| ,
  $$

  which catches wrong signs, missing terms and batch-averaged log-determinants;
* the blocks $\partial f(x)_b / \partial x_{b'}$ for $b \neq b'$, which must be zero (a layer must
  not mix samples);
* that neither direction writes into its input, that the log-determinant has shape `(B,)`, the
  input's dtype and device, and that its gradients are finite.

The Jacobian costs one backward pass per output element, vectorised with `torch.func`; keep
inputs small (a few thousand elements at most).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor, nn

from flowlearn.core import Bijector

ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = [
    "CheckReport",
    "assert_bijector",
    "brute_force_logdet",
    "check_bijector",
    "jitter_parameters",
]

# Default tolerances: (round trip, log-det) in float64 and float32. The float32 log-det is
# compared with the float64 brute force, so it carries float32 round-off (relative to its size).
_TOLERANCES = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4)}


@dataclass
class CheckReport:
    r"""What `check_bijector` measured, with one verdict per property.

    Errors are maxima of absolute differences; `None` means the property was not measured.
    `failures` lists each failed property with the measured value and the tolerance; `ok` is
    `True` when it is empty.
    """

    layer: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: str
    roundtrip_error: float = math.nan
    inverse_roundtrip_error: float = math.nan
    cancel_error: float = math.nan
    logdet_error: float | None = None
    cross_sample_error: float | None = None
    logdet: list[float] = field(default_factory=list)
    brute_force_logdet: list[float] = field(default_factory=list)
    input_modified: bool = False
    grads_finite: bool | None = None
    tol_roundtrip: float = 0.0
    tol_logdet: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """`True` when every measured property is within tolerance."""
        return not self.failures

    def __str__(self) -> str:
        def fmt(v: float | None) -> str:
            return "not measured" if v is None else f"{v:.2e}"

        verdict = "PASS" if self.ok else "FAIL"
        lines = [
            f"{self.layer}: {verdict}  input {self.input_shape} -> output {self.output_shape}, "
            f"{self.dtype}",
            f"  round trip x -> y -> x     {fmt(self.roundtrip_error)}"
            f"  (tol {self.tol_roundtrip:.0e})",
            f"  round trip y -> x -> y     {fmt(self.inverse_roundtrip_error)}",
            f"  logdet fwd + inv           {fmt(self.cancel_error)}",
            f"  logdet vs brute force      {fmt(self.logdet_error)}  (tol {self.tol_logdet:.0e})",
            f"  Jacobian between samples   {fmt(self.cross_sample_error)}",
            f"  input modified             {self.input_modified}",
            f"  log-det gradients finite   {self.grads_finite}",
        ]
        lines += [f"  failed: {f}" for f in self.failures]
        return "\n".join(lines)


def jitter_parameters(module: ModuleT, scale: float = 0.05, seed: int = 0) -> ModuleT:
    r"""Add seeded Gaussian noise $\mathcal{N}(0, \text{scale}^2)$ to every floating parameter.

    Freshly built couplings are the identity (their last layer is zero), so checking them proves
    little; jitter them first. Returns `module` (modified in place).

    Examples:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> torch.nn.init.zeros_(lin.weight)
        Parameter containing:
        tensor([[0., 0.],
                [0., 0.]], requires_grad=True)
        >>> bool(jitter_parameters(lin).weight.abs().sum() > 0)
        True
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                p.add_(scale * noise.to(dtype=p.dtype, device=p.device))
    return module


def _jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Full Jacobian of `fn` at `x`, shape `fn(x).shape + x.shape`."""
    try:
        return torch.func.jacrev(fn)(x)
    except (RuntimeError, NotImplementedError):
        # Layers that torch.func cannot trace (e.g. `.item()` inside) fall back to a loop.
        jac = torch.autograd.functional.jacobian(fn, x)
        assert isinstance(jac, Tensor)
        return jac


def brute_force_logdet(layer: Bijector, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-sample $\log|\det J|$ of `layer.forward` from its full autograd Jacobian in float64.

    Args:
        layer: the bijector (copied and cast to float64; the original is untouched).
        x: input batch `(B, ...)`.

    Returns:
        `(logdet, cross)`: `logdet` of shape `(B,)` from `slogdet` of each sample's diagonal
        block, and `cross`, the largest absolute entry of the blocks between different samples.

    Examples:
        >>> import torch
        >>> from flowlearn import Squeeze
        >>> ld, cross = brute_force_logdet(Squeeze(), torch.randn(2, 1, 2, 2))
        >>> ld.abs().max().item() < 1e-12, cross.item()
        (True, 0.0)
    """
    layer64 = copy.deepcopy(layer).to(torch.float64)
    x64 = x.detach().to(torch.float64, copy=True)
    batch = x64.shape[0]

    def flat_forward(inp: Tensor) -> Tensor:
        return layer64(inp.clone())[0].reshape(batch, -1)  # clone: never expose x64

    jac = _jacobian(flat_forward, x64).reshape(batch, -1, batch, x64[0].numel())
    d_out, d_in = jac.shape[1], jac.shape[3]
    if d_out != d_in:
        raise ValueError(
            f"{type(layer).__name__}: maps {d_in} to {d_out} values per sample; "
            "a bijector must preserve the number of elements"
        )
    idx = torch.arange(batch, device=jac.device)
    diag = jac[idx, :, idx, :]  # (B, D, D)
    mask = ~torch.eye(batch, dtype=torch.bool, device=jac.device)  # (B, B) off-diagonal
    off = jac.permute(0, 2, 1, 3)[mask]  # (B(B-1), D, D)
    cross = off.abs().max() if off.numel() else jac.new_zeros(())
    # One matrix at a time: a batched slogdet runs LAPACK inside torch's own parallel loop, and
    # that nested parallelism can stall on a busy machine.
    logabsdet = jac.new_empty(batch)
    for b in range(batch):
        sign, value = torch.linalg.slogdet(diag[b])
        logabsdet[b] = value if sign != 0 else -math.inf
    return logabsdet, cross


def _max_abs(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max())


def _check_logdet_tensor(report: CheckReport, name: str, logdet: Tensor, x: Tensor) -> None:
    batch = x.shape[0]
    if logdet.shape != (batch,):
        report.failures.append(
            f"{name} log-det has shape {tuple(logdet.shape)}, expected ({batch},): one value "
            "per sample"
        )
    if logdet.dtype != x.dtype or logdet.device != x.device:
        report.failures.append(
            f"{name} log-det is {logdet.dtype} on {logdet.device}, expected {x.dtype} on {x.device}"
        )


def _grads_finite(layer: Bijector, x: Tensor) -> bool | None:
    x_req = x.detach().clone().requires_grad_(True)
    _, logdet = layer(x_req.clone())  # a non-leaf copy, so in-place layers still run
    inputs = [x_req, *(p for p in layer.parameters() if p.requires_grad)]
    if not logdet.requires_grad:
        return None
    grads: Iterable[Tensor | None] = torch.autograd.grad(logdet.sum(), inputs, allow_unused=True)
    return all(g is None or bool(torch.isfinite(g).all()) for g in grads)


def check_bijector(
    layer: Bijector,
    x: Tensor,
    *,
    jacobian: bool = True,
    tol_roundtrip: float | None = None,
    tol_logdet: float | None = None,
) -> CheckReport:
    """Measure every property of the protocol on the batch `x`; never raises on a failure.

    Args:
        layer: the bijector under test.
        x: an input batch `(B, ...)`; use `B >= 2` so that coupling between samples and
            batch-averaged log-determinants can show.
        jacobian: compare the log-determinant with the brute-force float64 Jacobian (costs one
            backward pass per output element).
        tol_roundtrip: largest accepted round-trip error (default 1e-10 in float64, 1e-5 in
            float32, scaled by `max(1, max|x|)`).
        tol_logdet: largest accepted log-det error (default 1e-8 in float64, 1e-4 in float32,
            scaled by `max(1, max|logdet|)`).

    Returns:
        A `CheckReport`; `report.ok` tells whether everything passed.

    Examples:
        >>> import torch
        >>> from flowlearn import Squeeze
        >>> report = check_bijector(Squeeze(), torch.randn(2, 3, 4, 6, dtype=torch.float64))
        >>> report.ok
        True
    """
    _require_bijector(layer, x)
    default_rt, default_ld = _TOLERANCES.get(x.dtype, (1e-3, 1e-2))
    x_scale = max(1.0, float(x.detach().abs().max())) if x.numel() else 1.0
    report = CheckReport(
        layer=type(layer).__name__,
        input_shape=tuple(x.shape),
        output_shape=(),
        dtype=str(x.dtype).removeprefix("torch."),
        tol_roundtrip=tol_roundtrip if tol_roundtrip is not None else default_rt * x_scale,
    )

    x = x.detach()
    x_in = x.clone()  # the layer gets a copy, so a layer that mutates it cannot harm the caller
    with torch.no_grad():
        y, logdet = layer(x_in)
    report.output_shape = tuple(y.shape)
    if not torch.equal(x_in, x):
        report.input_modified = True
        report.failures.append("forward wrote into its input")
    _check_logdet_tensor(report, "forward", logdet, x)

    y_before = y.detach().clone()
    with torch.no_grad():
        x_rec, logdet_inv = layer.inverse(y)
    if not torch.equal(y, y_before):
        report.input_modified = True
        report.failures.append("inverse wrote into its input")
    _check_logdet_tensor(report, "inverse", logdet_inv, x)
    with torch.no_grad():
        y_again, _ = layer(x_rec.clone())

    report.roundtrip_error = _max_abs(x_rec, x)
    report.inverse_roundtrip_error = _max_abs(y_again, y)
    report.cancel_error = _max_abs(logdet + logdet_inv, torch.zeros_like(logdet))
    report.logdet = [float(v) for v in logdet.detach().reshape(-1)]
    ld_scale = max([1.0, *(abs(v) for v in report.logdet if math.isfinite(v))])
    report.tol_logdet = tol_logdet if tol_logdet is not None else default_ld * ld_scale

    for name, err in (
        ("round trip x -> y -> x", report.roundtrip_error),
        ("round trip y -> x -> y", report.inverse_roundtrip_error),
    ):
        if not err <= report.tol_roundtrip:
            report.failures.append(f"{name}: error {err:.3e} > tol {report.tol_roundtrip:.1e}")
    if not report.cancel_error <= report.tol_logdet:
        report.failures.append(
            f"forward and inverse log-dets do not cancel: {report.cancel_error:.3e} > tol "
            f"{report.tol_logdet:.1e}"
        )

    if jacobian:
        try:
            reference, cross = brute_force_logdet(layer, x)
        except ValueError as err:
            report.failures.append(str(err))
        else:
            report.brute_force_logdet = [float(v) for v in reference.detach()]
            report.logdet_error = _max_abs(logdet.reshape(-1), reference)
            report.cross_sample_error = float(cross.detach())
            if not report.logdet_error <= report.tol_logdet:
                report.failures.append(
                    f"log-det differs from the brute-force Jacobian: error "
                    f"{report.logdet_error:.3e} > tol {report.tol_logdet:.1e} "
                    f"(layer {report.logdet[:4]}, brute force {report.brute_force_logdet[:4]})"
                )
            if report.cross_sample_error > report.tol_roundtrip:
                report.failures.append(
                    f"outputs depend on other samples of the batch: Jacobian entry "
                    f"{report.cross_sample_error:.3e} between different samples"
                )

    report.grads_finite = _grads_finite(layer, x)
    if report.grads_finite is False:
        report.failures.append("gradients of the log-det are not finite")
    return report


def _require_bijector(layer: object, x: object) -> None:
    r"""Refuse, in one message, what cannot be checked: a non-bijector or a non-tensor input."""
    if not (callable(layer) and callable(getattr(layer, "inverse", None))):
        raise TypeError(
            f"expected a Bijector (a module with forward(x) -> (y, logdet) and "
            f"inverse(y) -> (x, logdet), such as a subclass of flowlearn.core.Bijector), got "
            f"{type(layer).__name__}; wrap a plain nn.Module in a coupling layer to check it"
        )
    if not isinstance(x, Tensor):
        raise TypeError(f"expected the input batch x as a torch.Tensor, got {type(x).__name__}")


def assert_bijector(
    layer: Bijector,
    x: Tensor,
    *,
    jacobian: bool = True,
    tol_roundtrip: float | None = None,
    tol_logdet: float | None = None,
) -> CheckReport:
    """Run `check_bijector` and raise `AssertionError` saying which property failed and by how much.

    Examples:
        >>> import torch
        >>> from flowlearn import Squeeze
        >>> _ = assert_bijector(Squeeze(), torch.randn(2, 1, 2, 2, dtype=torch.float64))
    """
    report = check_bijector(
        layer, x, jacobian=jacobian, tol_roundtrip=tol_roundtrip, tol_logdet=tol_logdet
    )
    if not report.ok:
        raise AssertionError(f"{report.layer} failed the bijector check:\n{report}")
    return report
