r"""The learning-rate schedule of IRN training: the recipe's step decay, after an optional warm-up.

`irn_scheduler` builds it for the IRN's Adam (`flowlearn.irn.train`) and the IRN+
discriminator's (`flowlearn.irn.gan`); `scheduler_state` and `load_scheduler_state` put its
state into a training checkpoint and back in types that `torch.load(weights_only=True)` reads.

References:
    M. Xiao et al., 2020, "Invertible Image Rescaling", ECCV 2020, arXiv:2005.05650, §4.1 (the
    learning rate halved at fixed steps). The original code,
    github.com/pkuxmq/Invertible-Image-Rescaling: codes/models/lr_scheduler.py
    (`MultiStepLR_Restart`) and codes/models/base_model.py (`update_learning_rate`, the
    warm-up).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["WarmupMultiStep", "irn_scheduler", "load_scheduler_state", "scheduler_state"]


class WarmupMultiStep:
    r"""The rate factor of `irn_scheduler` with a warm-up, at scheduler step $k$ (0-based):

    $$f(k) = \min\left(1, \frac{k + 1}{w}\right)\,\gamma^{\,|\{m \in M : m \le k\}|},$$

    so the $t$-th optimiser step ($t = k + 1$) runs at `lr`·$t/w$ for $t \le w$, and every
    milestone $m \in M$ multiplies the rate by $\gamma$ from step $m + 1$ on, as `MultiStepLR`
    does. A class, not a closure, so that its settings go into the scheduler's state dict.

    Examples:
        >>> f = WarmupMultiStep(milestones=[4], gamma=0.5, warmup=2)
        >>> [f(k) for k in range(6)]
        [0.5, 1.0, 1.0, 1.0, 0.5, 0.5]
    """

    def __init__(self, milestones: Sequence[int], gamma: float, warmup: int) -> None:
        self.milestones, self.gamma, self.warmup = list(milestones), gamma, warmup

    def __call__(self, k: int) -> float:
        warm = min(1.0, (k + 1) / self.warmup)
        return warm * self.gamma ** bisect.bisect_right(self.milestones, k)


def irn_scheduler(
    optimizer: torch.optim.Optimizer,
    milestones: Sequence[int],
    *,
    gamma: float = 0.5,
    warmup: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    r"""The IRN recipe's learning-rate schedule, stepped once per optimiser step.

    `MultiStepLR` (the original code's `MultiStepLR_Restart` without restarts): the rate is
    multiplied by `gamma` at each milestone. With `warmup` $w > 0$ the first $w$ steps rise
    linearly to the rate, step $t$ at `lr`·$t/w$ (`WarmupMultiStep`), which keeps a fresh Adam
    from taking full-size steps while its moment estimates are still young, as when a fine-tune
    starts from a trained model. (The original code's `warmup_iter` $w$ runs step 1 at the full
    rate and step $t = 2, \dots, w$ at `lr`·$(t - 1)/w$.) `warmup=0` returns the plain
    `MultiStepLR`, whose state dict is what checkpoints held before the warm-up existed.

    Examples:
        >>> from flowlearn import IRN
        >>> opt = torch.optim.Adam(IRN(2, blocks=[1], growth=4).parameters(), lr=1e-4)
        >>> sched = irn_scheduler(opt, [3], warmup=2)
        >>> rates = []
        >>> for _ in range(4):
        ...     rates.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     sched.step()
        >>> rates
        [5e-05, 0.0001, 0.0001, 5e-05]
    """
    if warmup == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=gamma)
    factor = WarmupMultiStep(milestones, gamma, warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    r"""The scheduler's state dict in types `torch.load(weights_only=True)` reads back."""
    state = scheduler.state_dict()
    if "milestones" in state:  # MultiStepLR keeps a Counter
        state["milestones"] = dict(state["milestones"])
    return state


def load_scheduler_state(
    scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]
) -> None:
    r"""Restore a state that `scheduler_state` returned."""
    if "milestones" in state:
        state = dict(state, milestones=Counter(state["milestones"]))
    scheduler.load_state_dict(state)
