r"""Training one IRN on several processes: torchrun's environment and DistributedDataParallel.

`torchrun --nproc_per_node=W -m flowlearn irn train …` starts $W$ copies of the training
command, one per GPU (or per group of CPU cores), possibly on several machines. `start` reads
torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), joins
the process group (NCCL between GPUs, gloo between CPUs) and picks the device (`cuda:LOCAL_RANK`);
`DistributedObjective` is the IRN objective as a module for PyTorch's
`DistributedDataParallel`, which averages the gradients of the processes during the backward
pass. A run on $W$ processes trains the same model as a one-process run with the same
configuration, up to float round-off, because of five rules:

1. **The batch is global.** `data.batch_size` $= B$ is the batch of one optimisation step over
   all processes; rank $r$ trains on samples $[rb, (r + 1)b)$ of it, $b = B / W$ (`local_part`;
   $W$ must divide $B$).
2. **The same patches.** Batch $k$ of `flowlearn.irn.data.PatchSampler` is a function of
   `(seed, k)` alone; every rank computes it and keeps its slice.
3. **The same latents.** The latent $\tilde z$ of the reconstruction term is drawn for the whole
   global batch from the one seeded generator, on every rank, and each rank keeps its slice
   (`draw_latent`): sample $i$ gets the $\tilde z_i$ a one-process run would give it.
4. **The same gradient.** The objective is a mean over the batch and every rank holds $b$
   samples, so the mean of the ranks' gradients, which `DistributedDataParallel` computes, is
   the gradient of the global batch:

   $$
   \nabla L = \frac1B \sum_{i=1}^{B} \nabla \ell_i
   = \frac1W \sum_{r=0}^{W-1} \Bigl(\frac1b \sum_{i \in \text{rank } r} \nabla \ell_i\Bigr).
   $$

5. **The same update.** The averaged gradients are identical on every rank, so the clipping,
   the Adam step and the schedule are too; the weights never diverge.

Each process runs its part of the batch in one piece: the CPU sharding of
`flowlearn.irn.fast.irn_backward` computes gradients with `torch.autograd.grad` in threads,
which `DistributedDataParallel`'s gradient hooks do not see, so `run.shards` is not used here;
the processes take the place of the shards. Memory-saving backpropagation (`run.memory_saving`)
works unchanged: its recomputed gradients reach the parameters through autograd.

Only rank 0 writes (log, TensorBoard events, checkpoints) and validates; the others wait in
`Processes.barrier`, on a CPU (gloo) group with a long timeout, so a validation longer than the
collective timeout of NCCL does not end the run.

References:
    S. Li et al., 2020. "PyTorch Distributed: Experiences on Accelerating Data Parallel
    Training." VLDB 13(12), arXiv:2006.15704, §3 (DistributedDataParallel: gradient averaging
    by all-reduce during the backward pass).

Examples:
    Without torchrun there is one process, and nothing is set up:

    >>> import torch
    >>> processes = start(torch.device("cpu"))
    >>> processes.world_size, processes.rank, processes.main
    (1, 0, True)
    >>> processes.local_part(16)
    slice(0, 16, None)
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flowlearn.irn.losses import IRNLosses, irn_losses
from flowlearn.irn.model import IRN

__all__ = [
    "WAIT_TIMEOUT",
    "DistributedObjective",
    "Processes",
    "distributed_backward",
    "draw_latent",
    "launched",
    "local_part",
    "start",
]

WAIT_TIMEOUT = timedelta(hours=24)
r"""How long the other ranks wait for rank 0 to validate or write a checkpoint."""

_TORCHRUN = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    r"""Whether this process is one of several: a process group exists or torchrun started us.

    Examples:
        >>> launched()  # a plain python process
        False
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return all(k in os.environ for k in _TORCHRUN) and int(os.environ["WORLD_SIZE"]) > 1


def local_part(batch_size: int, rank: int, world_size: int) -> slice:
    r"""The samples of the global batch that rank `rank` of `world_size` trains on.

    Args:
        batch_size: the global batch $B$ (`data.batch_size`).
        rank: this process's rank $r$.
        world_size: number of processes $W$.

    Returns:
        `slice(r b, (r + 1) b)` with $b = B / W$.

    Raises:
        ValueError: $W$ does not divide $B$.

    Examples:
        >>> local_part(16, 1, 4)
        slice(4, 8, None)
        >>> local_part(6, 0, 4)
        Traceback (most recent call last):
        ...
        ValueError: data.batch_size = 6 is the global batch of the 4 processes ... (e.g. 8 or 4)
    """
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        hint = f"{lower + world_size} or {lower}" if lower else f"{world_size}"
        raise ValueError(
            f"data.batch_size = {batch_size} is the global batch of the {world_size} processes "
            f"and must be a multiple of {world_size} (e.g. {hint})"
        )
    b = batch_size // world_size
    return slice(rank * b, (rank + 1) * b)


def draw_latent(
    model: IRN, hr: Tensor, batch_size: int, part: slice, generator: torch.Generator | None
) -> Tensor:
    r"""This rank's slice of the latent $\tilde z$ drawn for the whole global batch.

    A one-process run draws `torch.randn((B, C(s²-1), H/s, W/s), generator=g)` once per step
    (`flowlearn.irn.irn_losses`); every rank makes the same draw from the same generator state
    and keeps rows `part`, so sample $i$ gets the same $\tilde z_i$ and the generators of all
    ranks stay in step.

    Args:
        model: the `IRN` (for the scale and the latent channels).
        hr: this rank's HR batch `(b, 3, H, W)` (for the size, device and dtype).
        batch_size: the global batch $B$.
        part: this rank's samples (`local_part`).
        generator: the generator of the latent draws.

    Returns:
        $\tilde z$ for this rank, `(b, C(s²-1), H/s, W/s)`.

    Examples:
        >>> from flowlearn import IRN
        >>> net = IRN(2, blocks=[1], growth=4)
        >>> hr = torch.rand(2, 3, 8, 8)
        >>> whole = torch.randn(4, 9, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> z = draw_latent(net, hr, 4, slice(2, 4), torch.Generator().manual_seed(0))
        >>> torch.equal(z, whole[2:4])
        True
    """
    height, width = hr.shape[-2] // model.scale, hr.shape[-1] // model.scale
    shape = (batch_size, model.latent_channels, height, width)  # (B, C(s²-1), H/s, W/s)
    z = torch.randn(shape, generator=generator, device=hr.device, dtype=hr.dtype)
    return z[part]


class DistributedObjective(nn.Module):
    r"""The IRN objective `irn_losses` as a module, to wrap in `DistributedDataParallel`.

    `DistributedDataParallel` hooks the backward pass of what its wrapped module's `forward`
    computes; the objective runs the IRN forward, the quantiser and the inverse, so the module
    to wrap is the objective, not the `IRN`. Its `forward` returns the four losses (`fit`,
    `distr`, `rec`, `total`, as in `IRNLosses`) as a tuple.

    Args:
        model: the `IRN` being trained.
        lambda_fit: weight of $L_\text{fit}$ (`None`: $s^2$).
        lambda_rec: weight of $L_\text{rec}$.
        lambda_ce: weight of $L_\text{distr}$.

    Examples:
        >>> from flowlearn import IRN
        >>> objective = DistributedObjective(IRN(2, blocks=[1], growth=4))
        >>> hr = torch.rand(2, 3, 8, 8)
        >>> lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
        >>> fit, distr, rec, total = objective(hr, lr_ref, torch.zeros(2, 9, 4, 4))
        >>> torch.allclose(total, fit + distr + rec)
        True
    """

    def __init__(
        self,
        model: IRN,
        *,
        lambda_fit: float | None = None,
        lambda_rec: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.lambda_fit, self.lambda_rec, self.lambda_ce = lambda_fit, lambda_rec, lambda_ce

    def forward(self, hr: Tensor, lr_ref: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        r"""`(fit, distr, rec, total)` of `irn_losses` on this rank's batch with latent `z`."""
        losses = irn_losses(
            self.model,
            hr,
            lr_ref,
            z=z,
            lambda_fit=self.lambda_fit,
            lambda_rec=self.lambda_rec,
            lambda_ce=self.lambda_ce,
        )
        return losses.fit, losses.distr, losses.rec, losses.total


@dataclass
class Processes:
    r"""This process's place in a run: rank, world size, device, and the group to wait on.

    Made by `start`; with one process (no torchrun) every method is a no-op.

    Attributes:
        rank: this process's rank $r$, 0 to `world_size - 1` (0 writes the run folder).
        world_size: number of processes $W$.
        local_rank: rank on this machine (torchrun's `LOCAL_RANK`; the GPU index).
        device: where this process trains.
        wait_group: gloo group with a long timeout for `barrier` (None with one process).
        owns_group: whether `start` created the process group (then `close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009  # immutable
    wait_group: Any = None
    owns_group: bool = False

    @property
    def main(self) -> bool:
        r"""Whether this is rank 0, the one that logs, validates and writes checkpoints."""
        return self.rank == 0

    def local_part(self, batch_size: int) -> slice:
        r"""This rank's samples of a global batch of `batch_size` (see `local_part`)."""
        return local_part(batch_size, self.rank, self.world_size)

    def wrap(self, objective: DistributedObjective) -> DistributedDataParallel:
        r"""`objective` in `DistributedDataParallel` on this process's device.

        The model's only buffers are the fixed Haar kernels (a few hundred numbers), equal on
        every rank; `DistributedDataParallel` broadcasts them from rank 0 at each forward pass.
        """
        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids)

    def barrier(self) -> None:
        r"""Wait until every rank gets here (for up to `WAIT_TIMEOUT`)."""
        if self.world_size > 1:
            dist.barrier(group=self.wait_group)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        r"""The mean over the ranks of each value (the same dict with one process).

        The losses of a rank are means over its $b$ samples, so their mean over the ranks is
        the mean over the global batch.
        """
        if self.world_size == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(values, t.tolist())}

    def any(self, flag: bool) -> bool:
        r"""Whether `flag` is true on some rank (so that all ranks take the same decision)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        r"""Leave the process group, if `start` made it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


def start(device: torch.device) -> Processes:
    r"""Join the processes of the run; with one process, just return where it runs.

    The process group is read from torchrun's environment (`init_method="env://"`), or used
    as it is when the caller has already made one. The backend is NCCL on CUDA and gloo on a
    CPU. A CUDA device without an index becomes `cuda:LOCAL_RANK` and is made current.

    Args:
        device: the configured device (`cpu`, `cuda` or `cuda:N`).

    Returns:
        The `Processes`; call `close` at the end.

    Raises:
        ValueError: `LOCAL_RANK` names a GPU that this machine does not have.
    """
    if not launched():
        return Processes(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"process with LOCAL_RANK {local_rank} needs GPU {local_rank}, but this machine "
                f"shows {count}; start at most {count} processes per machine "
                f"(torchrun --nproc_per_node={count})"
            )
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    init = dist.init_process_group
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        options: dict[str, Any] = {}
        if device.type == "cuda" and "device_id" in inspect.signature(init).parameters:
            options["device_id"] = device  # binds NCCL to this GPU (torch >= 2.3)
        init(backend, **options)
    wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return Processes(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        wait_group=wait_group,
        owns_group=owns,
    )


def distributed_backward(
    objective: DistributedDataParallel,
    hr: Tensor,
    lr_ref: Tensor,
    *,
    batch_size: int,
    part: slice,
    generator: torch.Generator | None,
) -> IRNLosses:
    r"""This rank's losses and the gradients of the global batch, averaged over the ranks.

    The distributed counterpart of `flowlearn.irn.irn_backward`: draws this rank's slice of the
    latent (`draw_latent`), runs the wrapped `DistributedObjective` and backpropagates; during
    the backward pass `DistributedDataParallel` averages the gradients over the ranks, so every
    rank's `.grad` is the gradient of the global batch (rule 4 of the module docstring).

    Args:
        objective: a `DistributedObjective` wrapped by `Processes.wrap`.
        hr: this rank's HR batch `(b, 3, H, W)`.
        lr_ref: its bicubic LR `(b, 3, H/s, W/s)`.
        batch_size: the global batch $B$.
        part: this rank's samples (`Processes.local_part`).
        generator: the generator of the latent draws (the same state on every rank).

    Returns:
        The losses of this rank's $b$ samples (means over them; `Processes.mean` gives the
        global batch's).
    """
    model = objective.module.model
    z = draw_latent(model, hr, batch_size, part, generator)
    fit, distr, rec, total = objective(hr, lr_ref, z)
    total.backward()
    return IRNLosses(fit=fit, distr=distr, rec=rec, total=total)
