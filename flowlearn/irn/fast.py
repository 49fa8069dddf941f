r"""The Invertible Rescaling Net arranged for speed: the paper's arithmetic in fewer, faster calls.

The layers of `flowlearn.layers` and `flowlearn.irn` are written as the paper writes them. This
module holds faster arrangements of the same arithmetic, each a subclass of the layer it speeds
up that changes how `forward` and `inverse` compute, never what:

* `FastDenseBlock`: the five convolutions of `DenseBlock` in fewer calls, and several blocks
  that read one input (a coupling's $\rho$ and $\eta$) together (`dense_blocks_on_one_input`);
* `FastHaarDownsampling`: the Haar sums on the channels-last memory order, without a layout copy;
* `FastIRNCoupling`: $\rho$ and $\eta$ run together, optionally the sub-networks under bfloat16
  autocast (the coupling's own arithmetic stays in the input's dtype);
* `FastIRN`: activations and weights in the channels-last layout (`torch.channels_last`),
  in which oneDNN on CPU (and cuDNN for bfloat16 / TF32) run these convolutions faster.

`accelerate(model)` switches every such layer of a model in place (its class is swapped for
the fast one; its parameters stay the same objects, under the same names and state-dict keys),
and `paper_form(model)` switches back. `irn_backward` computes the training objective's gradients
with the batch cut into shards that run in parallel threads on a CPU. Every arrangement is
tested equal to the paper form up to float round-off (bfloat16: within its precision); what
each one gains is measured on the performance page of the documentation.

Examples:
    >>> import torch
    >>> from flowlearn import IRN
    >>> _ = torch.manual_seed(0)
    >>> net = IRN(2, blocks=[1], growth=4)
    >>> hr = torch.rand(1, 3, 8, 8)
    >>> y_paper, _ = net(hr)
    >>> accelerate(net) is net, is_accelerated(net), type(net).__name__
    (True, True, 'FastIRN')
    >>> torch.allclose(net(hr)[0], y_paper, atol=1e-6)
    True
    >>> _ = paper_form(net)
    >>> is_accelerated(net), type(net).__name__
    (False, 'IRN')
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from functools import partial
from typing import Any, TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlearn.core import check_channels, check_even_spatial, check_rank
from flowlearn.irn.block import IRNCoupling
from flowlearn.irn.losses import IRNLosses, irn_losses
from flowlearn.irn.model import IRN
from flowlearn.layers.haar import HaarDownsampling, _analysis, _synthesis
from flowlearn.layers.nets import DenseBlock

__all__ = [
    "GROUPED_PIXELS",
    "FastDenseBlock",
    "FastHaarDownsampling",
    "FastIRN",
    "FastIRNCoupling",
    "accelerate",
    "dense_blocks_on_one_input",
    "irn_backward",
    "is_accelerated",
    "paper_form",
]

CL = torch.channels_last
ModuleT = TypeVar("ModuleT", bound=nn.Module)


# ------------------------------------------------------------------------------- dense blocks


def dense_blocks_on_one_input(blocks: Sequence[DenseBlock], x: Tensor) -> list[Tensor]:
    r"""Apply several `DenseBlock`s to the same input `x`: `[block(x) for block in blocks]`.

    The result equals the formula of `DenseBlock` up to float round-off (the order of sums):

    * conv5 is split by its input channels, $\mathrm{conv}_5([x, x_1, \dots, x_4]) =
      \mathrm{conv}_5|_{x..x_3}([x, x_1, x_2, x_3]) + \mathrm{conv}_5|_{x_4}(x_4)$, and its
      first part runs in the same convolution as conv4, which reads the same input (weights
      stacked along the output channels). The widest concatenation, $[x, x_1, \dots, x_4]$,
      is never built or kept for the backward pass.
    * The first convolutions of all blocks read the same $x$ and run as one convolution,
      their weights stacked along the output channels.
    * Blocks of one shape (IRN's $\rho$ and $\eta$, which both read $y_1$) run each later
      convolution together as a grouped convolution, group $i$ being block $i$, when the maps
      are small (batch × height × width up to `GROUPED_PIXELS`).

    On CPU each convolution call and its backward pass has a fixed cost (oneDNN primitive
    set-up) that matters at IRN's sizes, so fewer, larger calls pay: grouped, two blocks make
    five calls instead of ten. A channel slice of a channels-last input (a coupling's $x_2$) is
    copied once to a dense tensor first, so that the concatenations read it contiguously.

    Args:
        blocks: dense blocks with the same `c_in` (any `c_out` and `growth`).
        x: their common input `(B, c_in, H, W)`.

    Returns:
        The output of each block, in order.

    Examples:
        >>> import torch
        >>> from flowlearn.layers.nets import DenseBlock
        >>> _ = torch.manual_seed(0)
        >>> a, b, c = DenseBlock(3, 9), DenseBlock(3, 9), DenseBlock(3, 5)
        >>> for block in (a, b, c):  # conv5 starts at zero: give it some weights
        ...     _ = torch.nn.init.normal_(block.conv5.weight, std=0.01)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> ya, yb, yc = dense_blocks_on_one_input([a, b, c], x)
        >>> [torch.allclose(y, block(x), atol=1e-6) for y, block in zip((ya, yb, yc), (a, b, c))]
        [True, True, True]
    """
    if not blocks:
        raise ValueError("dense_blocks_on_one_input: expected at least one DenseBlock")
    first = blocks[0]
    for block in blocks:
        check_rank(block, x, (4,))
        check_channels(block, x, block.c_in)
    if x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    if len(blocks) == 1:
        return _after_conv1(blocks, x, [first.lrelu(first.conv1(x))])
    if len({block.lrelu.negative_slope for block in blocks}) > 1:  # conv1 + lrelu differ
        return [dense_blocks_on_one_input([block], x)[0] for block in blocks]
    weight = torch.cat([block.conv1.weight for block in blocks])
    bias = torch.cat([block.conv1.bias for block in blocks])  # type: ignore[misc]
    stacked = first.lrelu(F.conv2d(x, weight, bias, padding=1))  # fresh: in place is safe
    x1s = stacked.split([block.growth for block in blocks], 1)
    batch, _, height, width = x.shape
    if len({_shape(block) for block in blocks}) == 1 and batch * height * width <= GROUPED_PIXELS:
        return _after_conv1(blocks, x, x1s)
    return [_after_conv1([block], x, [x1])[0] for block, x1 in zip(blocks, x1s)]


GROUPED_PIXELS = 2048
"""Largest batch × height × width at which `dense_blocks_on_one_input` groups convolutions.

Grouping saves the fixed cost of a convolution call, which dominates on small maps (IRN's
training patches); on large maps (inference on whole images) separate calls are faster. The
threshold was measured with oneDNN on a 2-core x86-64 CPU (see the performance page).
"""


def _shape(block: DenseBlock) -> tuple[int, int, int, float]:
    return block.c_in, block.c_out, block.growth, block.lrelu.negative_slope


def _after_conv1(blocks: Sequence[DenseBlock], x: Tensor, x1s: Sequence[Tensor]) -> list[Tensor]:
    """Blocks of one shape from conv2 on, given their input `x` and `x1 = lrelu(conv1(x))` each.

    Each convolution runs once for all blocks, as a grouped convolution whose group i is block
    i (its input features, weights and outputs); a single block is a group of one.
    """
    n, first = len(blocks), blocks[0]
    g, c_out, slope = first.growth, first.c_out, first.lrelu.negative_slope
    feats = [[x, x1] for x1 in x1s]  # the features each block has so far

    def cat(tensors: list[Tensor]) -> Tensor:
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors)

    def conv(inputs: int, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
        stacked = torch.cat([t for f in feats for t in f[:inputs]], 1)  # group i: block i's
        return F.conv2d(stacked, cat(weights), cat(biases), padding=1, groups=n)

    # the in-place LeakyReLU acts on fresh convolution outputs only, never on x
    for k in (2, 3):  # x2 = lrelu(conv2([x, x1])), x3 = lrelu(conv3([x, x1, x2]))
        convs = [getattr(block, f"conv{k}") for block in blocks]
        out = F.leaky_relu_(conv(k, [c.weight for c in convs], [c.bias for c in convs]), slope)
        for f, xk in zip(feats, out.split(g, 1)):
            f.append(xk)
    # conv4 and the [x, x1, x2, x3] part of conv5 in one convolution of the same input
    # (one split, not two slices: its backward is one concatenation of the two gradients)
    w5 = [b.conv5.weight.split((first.c_in + 3 * g, g), 1) for b in blocks]
    both = conv(
        4,
        [w for b, (w5_x, _) in zip(blocks, w5) for w in (b.conv4.weight, w5_x)],
        [v for b in blocks for v in (b.conv4.bias, b.conv5.bias)],  # type: ignore[misc]
    ).split((g, c_out) * n, 1)  # (B, g, H, W), (B, c_out, H, W) for each block
    pre4 = list(both[0::2])
    if n == 1:  # not in place: a view of the convolution's output
        x4 = F.leaky_relu(pre4[0], slope)
    else:
        x4 = F.leaky_relu_(torch.cat(pre4, 1), slope)  # (B, n g, H, W), a fresh tensor
    last = F.conv2d(x4, cat([w5_x4 for _, w5_x4 in w5]), padding=1, groups=n)  # x4 part of conv5
    return [out + rest for out, rest in zip(both[1::2], last.split(c_out, 1))]


class FastDenseBlock(DenseBlock):
    """`DenseBlock` computed by `dense_blocks_on_one_input` (the same map, in fewer calls)."""

    def forward(self, x: Tensor) -> Tensor:
        """Map `(B, c_in, H, W)` to `(B, c_out, H, W)`; `x` itself is never modified."""
        return dense_blocks_on_one_input([self], x)[0]


# ------------------------------------------------------------------------------- Haar


def _channels_last(x: Tensor) -> bool:
    """Whether `x` is stored channels-last `(B, H, W, C)` (and not also plainly contiguous)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=CL)


class FastHaarDownsampling(HaarDownsampling):
    """`HaarDownsampling` that keeps a channels-last input channels-last, without a layout copy.

    The same sums in the same order as the paper form (bit-identical results), read from the
    `(B, H, W, C)` memory order; any other input takes the paper form's path.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform `(B, C, H, W)` to the four bands `(B, 4C, H/2, W/2)`, band-major."""
        if not _channels_last(x):
            return super().forward(x)
        check_even_spatial(self, x)
        check_channels(self, x, self.channels)
        b, c, h, w = x.shape
        blocks = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c)  # rows, cols
        a, bb = blocks[:, :, 0, :, 0], blocks[:, :, 0, :, 1]  # (B, H/2, W/2, C)
        cc, d = blocks[:, :, 1, :, 0], blocks[:, :, 1, :, 1]
        bands = torch.stack(_analysis(a, bb, cc, d), dim=3)  # (B, H/2, W/2, 4, C)
        y = bands.reshape(b, h // 2, w // 2, 4 * c).permute(0, 3, 1, 2)  # (B, 4C, H/2, W/2)
        logdet = x.new_full((b,), c * h * w * self._logdet_per_element)
        return y * self.k, logdet  # channels-last, band-major

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Rebuild `(B, C, H, W)` from the bands `(B, 4C, H/2, W/2)`."""
        if not _channels_last(y):
            return super().inverse(y)
        check_rank(self, y, (4,))
        check_channels(self, y, 4 * self.channels)
        b, c4, h, w = y.shape
        c = c4 // 4
        parts = y.permute(0, 2, 3, 1).reshape(b, h, w, 4, c).unbind(3)  # (B, h, w, C) each
        a, bb, cc, d = _synthesis(*parts)
        top = torch.stack((a, bb), dim=3)  # (B, h, w, 2, C): columns
        bottom = torch.stack((cc, d), dim=3)
        blocks = torch.stack((top, bottom), dim=2)  # (B, h, 2, w, 2, C): rows, columns
        x = blocks.reshape(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2) / (4 * self.k)  # (B, C, H, W)
        logdet = y.new_full((b,), -c * 4 * h * w * self._logdet_per_element)
        return x, logdet


# ------------------------------------------------------------------------------- coupling


class FastIRNCoupling(IRNCoupling):
    r"""`IRNCoupling` with $\rho$ and $\eta$ run together, optionally in bfloat16.

    $\rho$ and $\eta$ read the same $y_1$: dense-block sub-networks then run as one computation
    (`dense_blocks_on_one_input`), unless a hook or `torch.compile` needs their own calls.

    With `bf16` set (by `accelerate(..., bf16=True)`) only the sub-networks run under
    `torch.autocast` in bfloat16. Everything after them stays in the dtype of the input:
    $\rho$'s output is cast back before the bound, so $s$, $\exp(s)$, the updates of
    $x_1, x_2$ and the log-determinant are float32. The exponent matters most: an error
    $\delta$ in $s$ is a relative error $\delta$ of $x_2$ in every block, and bfloat16 keeps
    about 3 significant digits; the log-determinant sums $\sim 10^5$ terms per sample, far
    beyond bfloat16's precision. The additive branches keep the main stream in float32, so the
    inverse stays exact up to float32 round-off of the stream given the same sub-network
    outputs.
    """

    bf16: bool = False

    def extra_repr(self) -> str:
        return super().extra_repr() + (", bf16=True" if self.bf16 else "")

    def _autocast(self, v: Tensor) -> AbstractContextManager[Any]:
        """bfloat16 autocast on `v`'s device when `bf16` is set; else an outer one stays."""
        if not self.bf16:
            return nullcontext()
        return torch.autocast(v.device.type, dtype=torch.bfloat16)

    def _phi(self, x2: Tensor) -> Tensor:
        with self._autocast(x2):
            return self.F(x2)

    def _shift_and_log_scale(self, y1: Tensor) -> tuple[Tensor, Tensor]:
        r"""$\eta(y_1)$ and the bounded exponent $s$, in `y1`'s dtype (cast back from bf16)."""
        G, H = self.G, self.H
        with self._autocast(y1):
            if _fusable(G) and _fusable(H):
                shift, h = dense_blocks_on_one_input([G, H], y1)
            else:
                shift, h = G(y1), H(y1)
        return shift, self.clamp * (torch.sigmoid(h.to(y1.dtype)) * 2 - 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Couple `(B, C, H, W) -> (B, C, H, W)`; log-det $\sum s$ per sample."""
        check_rank(self, x, (2, 4))
        check_channels(self, x, self.channels)
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self._phi(x2)  # Eq. 1
        shift, s = self._shift_and_log_scale(y1)
        y2 = x2 * torch.exp(s) + shift  # Eq. 2
        return torch.cat((y1, y2), dim=1), _sum_per_sample(s)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Undo the coupling, `(B, C, H, W) -> (B, C, H, W)`; log-det $-\sum s$ per sample."""
        check_rank(self, y, (2, 4))
        check_channels(self, y, self.channels)
        y1, y2 = y[:, : self.split], y[:, self.split :]
        shift, s = self._shift_and_log_scale(y1)
        x2 = (y2 - shift) / torch.exp(s)  # inverse of Eq. 2
        x1 = y1 - self._phi(x2)  # inverse of Eq. 1
        return torch.cat((x1, x2), dim=1), -_sum_per_sample(s)


def _fusable(net: nn.Module) -> TypeGuard[DenseBlock]:
    """Whether `net` is a `DenseBlock` whose call does nothing beyond its `forward`.

    Forward hooks (its own or global ones) and `torch.compile` act only on calls of the module
    itself, so such a block is called on its own.
    """
    global_hooks = getattr(nn.modules.module, "_global_forward_hooks", None) or getattr(
        nn.modules.module, "_global_forward_pre_hooks", None
    )
    return (
        isinstance(net, DenseBlock)
        and not (net._forward_hooks or net._forward_pre_hooks or global_hooks)
        and getattr(net, "_compiled_call_impl", None) is None
    )


def _sum_per_sample(s: Tensor) -> Tensor:
    """Sum over all but the batch dimension (no copy for channels-last `s`, unlike flatten)."""
    return s.sum(dim=tuple(range(1, s.dim())))


# ------------------------------------------------------------------------------- IRN


class FastIRN(IRN):
    """`IRN` that runs its operations on channels-last activations when `channels_last` is set.

    The input is copied to the channels-last layout once (if it is not already), and `forward`,
    `inverse` and their `..._with_intermediates` return ordinary contiguous tensors, as the paper
    form does.
    """

    channels_last: bool = False
    bf16: bool = False

    def _layout(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=CL)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """HR `(B, 3, H, W)` → `[LR, z]` `(B, 3s², H/s, W/s)`; log-det `(B,)`."""
        y, logdet = super().forward(self._layout(x))
        return y.contiguous(), logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """`[LR, z]` `(B, 3s², h, w)` → HR `(B, 3, sh, sw)`; log-det of the inverse `(B,)`."""
        x, logdet = super().inverse(self._layout(y))
        return x.contiguous(), logdet

    def forward_with_intermediates(
        self, x: Tensor, *, keep: bool = True
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """`IRN.forward_with_intermediates` on the fast layout; every output contiguous."""
        y, logdet, outputs = super().forward_with_intermediates(self._layout(x), keep=keep)
        return y.contiguous(), logdet, [out.contiguous() for out in outputs]

    def inverse_with_intermediates(
        self, y: Tensor, *, keep: bool = True
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """`IRN.inverse_with_intermediates` on the fast layout; every output contiguous."""
        x, logdet, outputs = super().inverse_with_intermediates(self._layout(y), keep=keep)
        return x.contiguous(), logdet, [out.contiguous() for out in outputs]


# ------------------------------------------------------------------------------- the switch

_FAST: dict[type[nn.Module], type[nn.Module]] = {
    DenseBlock: FastDenseBlock,
    HaarDownsampling: FastHaarDownsampling,
    IRNCoupling: FastIRNCoupling,
    IRN: FastIRN,
}
_PAPER = {fast: paper for paper, fast in _FAST.items()}


def accelerate(
    model: ModuleT, *, channels_last: bool = True, bf16: bool = False, enabled: bool = True
) -> ModuleT:
    r"""Switch `model`'s IRN layers to their fast arrangements, in place; returns `model`.

    Every submodule (the model included) whose class is exactly `DenseBlock`,
    `HaarDownsampling`, `IRNCoupling` or `IRN` becomes an instance of its fast subclass: the
    same object, parameters and state-dict keys, another `forward`/`inverse`. Calling it again
    changes the settings; `enabled=False` is `paper_form(model)`.

    Args:
        model: any module, usually an `IRN`.
        channels_last: store the 4-D weights in the channels-last layout and run an `IRN`'s
            activations in it (same values up to float round-off); `False` keeps the ordinary
            layout.
        bf16: run the couplings' sub-networks under bfloat16 autocast (faster on GPUs and on
            CPUs with bfloat16 units; results change beyond float32 round-off).
        enabled: `False` switches back to the paper form instead.

    Returns:
        `model` itself.
    """
    if not enabled:
        return paper_form(model)
    for module in model.modules():
        fast = _FAST.get(type(module))
        if fast is not None:
            module.__class__ = fast
        if isinstance(module, (FastIRNCoupling, FastIRN)):
            module.bf16 = bf16
        if isinstance(module, FastIRN):
            module.channels_last = channels_last
    # strides only: values (and so a seeded initialisation) are unchanged
    layout = CL if channels_last else torch.contiguous_format
    return model.to(memory_format=layout)  # type: ignore[call-overload]


def paper_form(model: ModuleT) -> ModuleT:
    """Switch every fast layer of `model` back to the paper form, in place; returns `model`.

    The weights return to the ordinary contiguous layout.
    """
    for module in model.modules():
        paper = _PAPER.get(type(module))
        if paper is not None:
            module.__class__ = paper
            for name in ("bf16", "channels_last"):
                vars(module).pop(name, None)
    return model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def is_accelerated(model: nn.Module) -> bool:
    """Whether any layer of `model` (or `model` itself) runs a fast arrangement."""
    return any(type(module) in _PAPER for module in model.modules())


# ------------------------------------------------------------------------------- training


def irn_backward(
    model: IRN,
    hr: Tensor,
    lr_ref: Tensor,
    *,
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
    lambda_fit: float | None = None,
    lambda_rec: float = 1.0,
    lambda_ce: float = 1.0,
    shards: int | None = None,
) -> IRNLosses:
    r"""`irn_losses` and its gradients, added to `.grad` as `irn_losses(...).total.backward()` does.

    On a CPU the batch is cut into `shards` parts that run forward and backward at the same
    time, one per thread, each with `torch.get_num_threads() // shards` threads of its own.
    The objective averages over the batch, so with shard $i$ holding $B_i$ of the $B$ samples
    and $L_i$ its `irn_losses`,

    $$
    L = \sum_i \tfrac{B_i}{B} L_i, \qquad \nabla L = \sum_i \tfrac{B_i}{B} \nabla L_i ,
    $$

    which is the gradient of the whole batch up to float round-off (the order of the sums). The
    latent of the reconstruction is drawn once for the whole batch, as `irn_losses` draws it,
    and the gradients are added in shard order, so a run is reproducible. It pays where one
    sample's convolutions are too small to keep several threads busy (IRN's 64² training
    patches on a few cores); on CUDA there is one shard.

    Args:
        model: the `IRN`.
        hr: HR batch `(B, 3, H, W)`, as in `irn_losses`.
        lr_ref: reference LR `(B, 3, H/s, W/s)`.
        z: latent for the reconstruction, drawn with `generator` when `None`.
        generator: random generator for z.
        lambda_fit: weight of $L_\text{fit}$; `None` means $s^2$.
        lambda_rec: weight of $L_\text{rec}$.
        lambda_ce: weight of $L_\text{distr}$.
        shards: how many parts to cut the batch into; `None` means one per CPU thread
            (`torch.get_num_threads()`, at most the batch size) on a CPU and 1 on other devices.

    Returns:
        The losses of the whole batch (`IRNLosses`, detached when `shards > 1`).

    Examples:
        >>> import torch
        >>> from flowlearn import IRN
        >>> net = accelerate(IRN(2, blocks=[1], growth=4))
        >>> hr = torch.rand(4, 3, 8, 8)
        >>> lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
        >>> z = torch.randn(4, 9, 4, 4)
        >>> whole = irn_backward(net, hr, lr_ref, z=z, shards=1)
        >>> grads = [p.grad.clone() for p in net.parameters()]
        >>> net.zero_grad()
        >>> halves = irn_backward(net, hr, lr_ref, z=z, shards=2)
        >>> all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(net.parameters(), grads))
        True
        >>> abs(float(halves.total - whole.total.detach())) < 1e-4
        True
    """
    batch = hr.shape[0] if hr.dim() > 0 else 0
    if shards is None:
        shards = torch.get_num_threads() if hr.device.type == "cpu" else 1
        shards = max(1, min(shards, batch))
    if shards < 1:
        raise ValueError(f"irn_backward: shards must be a positive integer, got {shards}")
    objective = partial(
        irn_losses, model, lambda_fit=lambda_fit, lambda_rec=lambda_rec, lambda_ce=lambda_ce
    )
    if shards == 1:
        losses = objective(hr, lr_ref, z=z, generator=generator)
        losses.total.backward()
        return losses
    if hr.dim() != 4 or lr_ref.dim() != 4 or lr_ref.shape[0] != batch or batch < shards:
        raise ValueError(
            f"irn_backward: expected an HR batch (B, 3, H, W) and its LR reference "
            f"(B, 3, H/s, W/s) with B >= shards = {shards}, received HR of shape "
            f"{tuple(hr.shape)} and LR of shape {tuple(lr_ref.shape)}"
        )
    if z is None:  # the draws irn_losses would make for the whole batch
        height, width = hr.shape[2] // model.scale, hr.shape[3] // model.scale
        shape = (batch, model.latent_channels, height, width)
        z = torch.randn(shape, generator=generator, device=hr.device, dtype=hr.dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    inputs = [t for t in (hr, z) if t.requires_grad]  # their gradients go on as backward's do
    parts = list(zip(hr.tensor_split(shards), lr_ref.tensor_split(shards), z.tensor_split(shards)))

    def run(part: tuple[Tensor, Tensor, Tensor]) -> tuple[IRNLosses, tuple[Tensor | None, ...]]:
        hr_i, lr_i, z_i = part
        losses = objective(hr_i, lr_i, z=z_i)
        share = hr_i.shape[0] / batch
        wrt = params + [t for t in (hr_i, z_i) if t.requires_grad]
        grads = torch.autograd.grad(share * losses.total, wrt, allow_unused=True)
        return losses, grads

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // shards))
    try:
        # Threads of this call only: a thread that outlives the call keeps the OpenMP team it
        # made, and while two teams exist every later parallel region of the main thread
        # (clipping, Adam) starts more slowly (measured: the fused Adam of an x4 in 28 ms
        # instead of 8 ms on two cores). Leaving the `with` joins them.
        with ThreadPoolExecutor(shards - 1, thread_name_prefix="irn-shard") as pool:
            futures = [pool.submit(run, part) for part in parts[1:]]
            try:
                first = run(parts[0])
            finally:  # every shard has finished before anything is raised or returned
                wait(futures)
        results = [first] + [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        for k, p in enumerate(params):
            total = None
            for _, grads in results:  # in shard order: reproducible
                g = grads[k]
                if g is not None:
                    total = g if total is None else total.add_(g)
            if total is not None:
                p.grad = total if p.grad is None else p.grad.add_(total)
        sums = {
            name: sum(
                part[0].shape[0] / batch * getattr(losses, name).detach()
                for part, (losses, _) in zip(parts, results)
            )
            for name in (f.name for f in fields(IRNLosses))
        }
    onward: list[tuple[Tensor, Tensor]] = []
    for j, t in enumerate(inputs):  # the shards' input gradients, joined along the batch
        pieces = [grads[len(params) + j] for _, grads in results]
        shapes = t.tensor_split(shards)
        grad = torch.cat([torch.zeros_like(x) if g is None else g for g, x in zip(pieces, shapes)])
        if t.is_leaf:
            t.grad = grad if t.grad is None else t.grad + grad
        else:
            onward.append((t, grad))
    if onward:  # on into the graph that made them, as backward would go
        torch.autograd.backward([t for t, _ in onward], [g for _, g in onward])
    return IRNLosses(**sums)
