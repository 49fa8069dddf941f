"""Tests of flowlearn.irn.distributed: two gloo processes train the model that one process trains.

Two processes are started twice: with `torch.multiprocessing` (the workers join a gloo group on
127.0.0.1 and call `train` several times, so every step can be compared) and with `torchrun`
running `python -m flowlearn irn train`, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flowlearn import IRN
from flowlearn.irn.config import Config, ConfigError, load_config
from flowlearn.irn.distributed import (
    DistributedObjective,
    draw_latent,
    launched,
    local_part,
    start,
)
from flowlearn.irn.losses import irn_losses
from flowlearn.irn.train import train
from tests.conftest import ROOT

STEPS = 3


def tiny(images: Path, output: Path, **overrides: object) -> Config:
    """The tiny recipe on 16² patches, global batch 4 (2 per process), lr halved at step 2."""
    settings = {
        "data.train": str(images),
        "data.patch_size": 16,
        "data.batch_size": 4,
        "optim.steps": 10,
        "optim.milestones": [2],
        "run.output": str(output),
        "run.log_every": 1,
        "run.tensorboard": False,
        **overrides,
    }
    return load_config("tiny", overrides=settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, images: Path, out: Path) -> None:
    """One of the processes: join the group, then train as the test needs (rank 0 records)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        # step by step, resumed after each step: the weights after every step
        stepwise = tiny(images, out / "stepwise")
        for k in range(1, STEPS + 1):
            result = train(stepwise, resume=k > 1, progress=False, max_steps=k)
            if rank == 0:
                torch.save(result.model.state_dict(), out / f"stepwise_{k}.pt")
                torch.save(result.losses, out / f"stepwise_losses_{k}.pt")
        # the same steps in one call
        result = train(tiny(images, out / "straight"), progress=False, max_steps=STEPS)
        # memory-saving backpropagation under DDP
        saving = tiny(images, out / "memory_saving", **{"run.memory_saving": True})
        result = train(saving, progress=False, max_steps=2)
        # a global batch the processes do not divide is refused on every rank
        try:
            train(tiny(images, out / "odd", **{"data.batch_size": 3}), progress=False)
        except ConfigError as err:
            if rank == 0:
                (out / "odd_error.txt").write_text(str(err))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run `_worker` on 2 gloo processes; the folder of what rank 0 recorded."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), images, out), nprocs=2, join=True)
    return out


@pytest.fixture(scope="module")
def one_process(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same runs in this process: weights after each step, and memory saving."""
    out = tmp_path_factory.mktemp("one")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny(images, out / "stepwise")
        for k in range(1, STEPS + 1):
            result = train(cfg, resume=k > 1, progress=False, max_steps=k)
            torch.save(result.model.state_dict(), out / f"stepwise_{k}.pt")
            torch.save(result.losses, out / f"stepwise_losses_{k}.pt")
        saving = tiny(images, out / "memory_saving", **{"run.memory_saving": True})
        train(saving, progress=False, max_steps=2)
    finally:
        torch.set_num_threads(threads)
    return out


def load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_distributed_weights_after_each_step_equal_one_process(
    two_processes: Path, one_process: Path
) -> None:
    start_weights = load(one_process / "stepwise_1.pt")  # for the size of a step
    for k in range(1, STEPS + 1):
        ddp, one = load(two_processes / f"stepwise_{k}.pt"), load(one_process / f"stepwise_{k}.pt")
        moved = max_difference(one, start_weights) if k > 1 else 1e-3  # lr 1e-3: Adam's step
        assert moved > 1e-4
        assert max_difference(ddp, one) < 1e-6, f"step {k}"
        # the losses are the global batch's: the same as one process, to round-off
        ddp_losses = torch.load(two_processes / f"stepwise_losses_{k}.pt")
        one_losses = torch.load(one_process / f"stepwise_losses_{k}.pt")
        assert ddp_losses == pytest.approx(one_losses, rel=1e-5)


def test_distributed_resume_is_exact(two_processes: Path) -> None:
    straight = load(two_processes / "straight" / "checkpoint.pt")
    stepwise = load(two_processes / "stepwise" / "checkpoint.pt")
    assert straight["step"] == stepwise["step"] == STEPS
    a, b = straight["model"], stepwise["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(straight["z_generator"], stepwise["z_generator"])


def test_distributed_run_folder_records_world_size(two_processes: Path) -> None:
    state = load(two_processes / "straight" / "checkpoint.pt")
    assert state["world_size"] == 2
    assert state["batch_size"] == {"global": 4, "per_process": 2}
    assert state["config"]["run"]["world_size"] == 2
    recorded = load_config(two_processes / "straight" / "config.yaml")
    assert recorded.run.world_size == 2 and recorded.data.batch_size == 4
    written = {p.name for p in (two_processes / "straight").iterdir()}
    assert {"checkpoint.pt", "config.yaml", "log.csv", "model.pt"} <= written


def test_distributed_memory_saving_equals_one_process(
    two_processes: Path, one_process: Path
) -> None:
    ddp = load(two_processes / "memory_saving" / "checkpoint.pt")["model"]
    one = load(one_process / "memory_saving" / "checkpoint.pt")["model"]
    assert max_difference(ddp, one) < 1e-5


def test_distributed_batch_not_divisible_is_refused(two_processes: Path) -> None:
    message = (two_processes / "odd_error.txt").read_text()
    assert "data.batch_size = 3" in message and "2 processes" in message


def test_distributed_torchrun_trains_and_resumes_on_one_process(
    images: Path, two_processes: Path, one_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "flowlearn",
        "irn",
        "train",
        "--config",
        "tiny",
        "--data",
        str(images),
        "--output",
        str(out),
        "--steps",
        "2",
        "--quiet",
    ]
    for setting in (
        "data.patch_size=16",
        "data.batch_size=4",
        "optim.steps=10",
        "optim.milestones=[2]",
        "run.tensorboard=false",
    ):  # as in tiny()
        command += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("step 2: weights in") == 1  # rank 0 reports
    torchrun_weights = load(out / "checkpoint.pt")["model"]
    assert max_difference(torchrun_weights, load(two_processes / "stepwise_2.pt")) == 0
    # resumed on one process: another world size, the same batches and latents
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(tiny(images, out), resume=True, progress=False, max_steps=STEPS)
    finally:
        torch.set_num_threads(threads)
    assert result.step == STEPS
    resumed = result.model.state_dict()
    assert max_difference(resumed, load(one_process / f"stepwise_{STEPS}.pt")) < 1e-6
    assert load(out / "checkpoint.pt")["world_size"] == 1


def test_local_part_cuts_the_global_batch_in_order() -> None:
    parts = [local_part(12, r, 3) for r in range(3)]
    assert [list(range(12))[p] for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="multiple of 5"):
        local_part(12, 0, 5)


def test_draw_latent_slices_equal_the_one_process_draw() -> None:
    net = IRN(2, blocks=[1], growth=4)
    hr = torch.rand(4, 3, 8, 8)
    lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
    g = torch.Generator().manual_seed(3)
    losses = irn_losses(net, hr, lr_ref, generator=g)  # draws z for the whole batch
    after_one = g.get_state()
    slices = []
    for rank in range(2):
        g_rank = torch.Generator().manual_seed(3)
        slices.append(
            draw_latent(net, hr[2 * rank : 2 * rank + 2], 4, local_part(4, rank, 2), g_rank)
        )
        assert torch.equal(g_rank.get_state(), after_one)  # the generators stay in step
    z = torch.cat(slices)
    again = irn_losses(net, hr, lr_ref, z=z)
    assert torch.equal(again.total, losses.total)


def test_distributed_objective_returns_irn_losses() -> None:
    net = IRN(2, blocks=[1], growth=4)
    hr = torch.rand(2, 3, 8, 8)
    lr_ref = torch.nn.functional.avg_pool2d(hr, 2)
    z = torch.randn(2, 9, 4, 4)
    with torch.no_grad():
        got = DistributedObjective(net, lambda_fit=2.0, lambda_ce=0.5)(hr, lr_ref, z)
        want = irn_losses(net, hr, lr_ref, z=z, lambda_fit=2.0, lambda_ce=0.5)
    assert torch.equal(torch.stack(got), torch.stack([want.fit, want.distr, want.rec, want.total]))


def test_start_without_torchrun_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert not launched()
    processes = start(torch.device("cpu"))
    assert (processes.rank, processes.world_size, processes.main) == (0, 1, True)
    assert processes.mean({"a": 2.0}) == {"a": 2.0} and processes.any(True)
    processes.barrier()
    processes.close()


def test_train_world_size_unlike_the_launch_is_refused(images: Path, tmp_path: Path) -> None:
    cfg = tiny(images, tmp_path / "run", **{"run.world_size": 2})
    with pytest.raises(ConfigError, match=r"run.world_size is 2.*started as 1 process"):
        train(cfg, progress=False, max_steps=1)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything is written
