r"""Maximum-likelihood training and evaluation of a `Flow`.

Training minimises the mean negative log-likelihood over minibatches,

$$
\mathcal L(\theta) = -\frac{1}{B}\sum_{b=1}^{B} \log p_\theta(x_b), \qquad
\text{bits/dim} = \frac{\mathcal L}{D \log 2},
$$

with the log-likelihood given exactly by the change of variables (NICE, arXiv:1410.8516, §2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from flowlearn.density.distributions import Flow, nats_to_bits_per_dim

__all__ = ["History", "evaluate_bits_per_dim", "evaluate_nll", "fit"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
LrSchedule = Callable[[int], float]


@dataclass
class History:
    """What `fit` records: the training loss (NLL in nats) and learning rate at every step.

    Attributes:
        loss: mean NLL of each minibatch, in nats per sample.
        lr: learning rate used at each step.
        seconds: wall-clock time of the whole run.
        cpu_seconds: CPU time of the process during the run (all threads); unlike `seconds`
            it hardly changes when other programs load the machine.
    """

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def smoothed(self, window: int = 100) -> list[float]:
        """Running mean of `loss` over the last `window` steps (for plots)."""
        out, total = [], 0.0
        for i, value in enumerate(self.loss):
            total += value
            if i >= window:
                total -= self.loss[i - window]
            out.append(total / min(i + 1, window))
        return out


def _optimizer(
    name: str | OptimizerFactory, params: list[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if callable(name):
        return name(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(
        f"fit: optimizer must be 'adam', 'adamw', 'sgd' or a callable params -> Optimizer, "
        f"received {name!r}"
    )


def _schedule(schedule: str | LrSchedule | None, steps: int) -> LrSchedule:
    if schedule is None:
        return lambda step: 1.0
    if callable(schedule):
        return schedule
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * step / steps))
    raise ValueError(
        f"fit: lr_schedule must be None, 'cosine' or a callable step -> factor, received "
        f"{schedule!r}"
    )


def fit(
    flow: Flow,
    data: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    optimizer: str | OptimizerFactory = "adam",
    grad_clip: float | None = None,
    lr_schedule: str | LrSchedule | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> History:
    r"""Train `flow` by maximum likelihood on `data` with minibatch gradient descent.

    Minibatches are drawn without replacement in a new random order every epoch. The run is
    reproducible: every random draw (batch order, dequantisation noise) comes from generators
    seeded by `seed`, and torch's global random state is restored afterwards.

    Args:
        flow: the model; it is moved to `device`, and its train/eval mode is restored at the end.
        data: training set `(N, ...)`, e.g. `(N, 2)` points or `(N, 1, 8, 8)` grey levels.
        steps: number of optimisation steps.
        batch_size: samples per step (at most `N`).
        lr: learning rate.
        optimizer: `"adam"`, `"adamw"`, `"sgd"` (momentum 0.9), or a factory
            `params -> torch.optim.Optimizer` (then `lr` and `weight_decay` are not used).
        grad_clip: clip the global gradient norm to this value; `None` does not clip.
        lr_schedule: `None` (constant), `"cosine"` (cosine decay to 0 over `steps`) or a
            function `step -> factor` multiplying `lr`.
        weight_decay: L2 penalty passed to the optimizer.
        seed: seed of the batch order and of every random draw inside the model.
        device: where to train.
        progress: show a tqdm bar with the running NLL.

    Returns:
        The `History` of losses (nats per sample) and learning rates.

    Raises:
        FloatingPointError: the loss or the gradient norm became NaN or infinite; the message
            names the step.

    Examples:
        >>> import torch
        >>> from flowlearn import Flow, FlowSequential, DiagonalScaling, StandardNormal
        >>> flow = Flow(FlowSequential(DiagonalScaling(2)), StandardNormal(2))
        >>> data = 3 * torch.randn(512, 2)
        >>> history = fit(flow, data, steps=200, batch_size=128, lr=0.05, progress=False)
        >>> history.loss[-1] < history.loss[0]
        True
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"fit: steps and batch_size must be positive, got {steps}, {batch_size}")
    n = data.shape[0]
    if batch_size > n:
        raise ValueError(f"fit: batch_size={batch_size} is larger than the data set ({n} samples)")
    device = torch.device(device)
    flow.to(device)
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the flow has no trainable parameters")
    opt = _optimizer(optimizer, params, lr, weight_decay)
    factor = _schedule(lr_schedule, steps)
    base_lrs = [group["lr"] for group in opt.param_groups]
    history = History()
    was_training = flow.training
    flow.train()
    batches = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=batches)
    cursor = 0
    running = math.nan
    start, cpu_start = time.perf_counter(), time.process_time()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # the model's own noise, e.g. dequantisation
        bar = tqdm(range(steps), disable=not progress, desc="fit", dynamic_ncols=True)
        for step in bar:
            if cursor + batch_size > n:
                order, cursor = torch.randperm(n, generator=batches), 0
            x = data[order[cursor : cursor + batch_size]].to(device)
            cursor += batch_size
            scale = factor(step)
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * scale
            loss = flow.nll(x)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"fit: the loss became {loss.item()} at step {step} (of {steps}); try a "
                    "lower lr, grad_clip, or check the data for NaN/inf and the preprocessing"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                norm = nn.utils.clip_grad_norm_(params, grad_clip)
                if not torch.isfinite(norm):
                    raise FloatingPointError(
                        f"fit: the gradient norm became {norm.item()} at step {step} (of {steps})"
                    )
            opt.step()
            value = loss.item()
            history.loss.append(value)
            history.lr.append(opt.param_groups[0]["lr"])
            running = value if math.isnan(running) else 0.98 * running + 0.02 * value
            if progress:
                bar.set_postfix(nll=f"{running:.4f}")
    history.seconds = time.perf_counter() - start
    history.cpu_seconds = time.process_time() - cpu_start
    flow.train(was_training)
    return history


@torch.no_grad()
def evaluate_nll(
    flow: Flow,
    data: Tensor,
    *,
    batch_size: int = 1024,
    seed: int | None = 0,
    device: str | torch.device | None = None,
) -> float:
    r"""Mean negative log-likelihood of `data` under `flow`, in nats per sample.

    Runs in evaluation mode without gradients, in batches. Random draws inside the model (the
    dequantisation noise) come from `seed`, so the number is reproducible; torch's global random
    state is restored afterwards. `seed=None` uses the global state as it is.

    Args:
        flow: the model.
        data: `(N, ...)` samples.
        batch_size: samples per forward pass.
        seed: seed of the model's random draws, or `None`.
        device: where to evaluate; by default the device of the flow's parameters.

    Returns:
        $-\frac1N \sum_n \log p(x_n)$ in nats.

    Examples:
        >>> import torch
        >>> from flowlearn import Flow, FlowSequential, StandardNormal
        >>> flow = Flow(FlowSequential(), StandardNormal(1))
        >>> round(evaluate_nll(flow, torch.zeros(10, 1)), 4)  # 0.5 log(2 pi)
        0.9189
    """
    if device is None:
        first = next(iter(flow.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = flow.training
    flow.eval()
    total = 0.0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for chunk in data.split(batch_size):
            total += -flow.log_prob(chunk.to(device)).double().sum().item()
    flow.train(was_training)
    return total / data.shape[0]


def evaluate_bits_per_dim(
    flow: Flow,
    data: Tensor,
    *,
    batch_size: int = 1024,
    seed: int | None = 0,
    device: str | torch.device | None = None,
) -> float:
    r"""`evaluate_nll` in bits per dimension: $\mathrm{NLL} / (D \log 2)$, $D$ = size of a sample.

    For discrete images, put `UniformDequantization(n_bins)` first in the flow's transform so the
    $-D \log K$ of the scaling to $[0, 1)$ is counted (see `flowlearn.density.preprocessing`).

    Examples:
        >>> import torch
        >>> from flowlearn import Flow, FlowSequential, StandardNormal
        >>> flow = Flow(FlowSequential(), StandardNormal(1))
        >>> round(evaluate_bits_per_dim(flow, torch.zeros(10, 1)), 4)  # 0.5 log2(2 pi)
        1.3257
    """
    nll = evaluate_nll(flow, data, batch_size=batch_size, seed=seed, device=device)
    return nats_to_bits_per_dim(nll, data[0].numel())
