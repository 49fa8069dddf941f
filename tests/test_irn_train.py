"""Tests of flowlearn.irn.train: a tiny run learns, resumes exactly, and fails clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import flowlearn.irn.train as train_module
from flowlearn.irn.checkpoint import load_irn
from flowlearn.irn.config import Config, ConfigError, load_config
from flowlearn.irn.images import write_image
from flowlearn.irn.train import TrainingError, resolve_device, train


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A random but smooth RGB image (3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 6 + 2, width // 6 + 2, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
    return x[0].clamp(0, 1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train_images")
    for i in range(4):
        write_image(folder / f"{i}.png", smooth_image(40, 48, i))
    return folder


def tiny(images: Path, output: Path, **overrides: object) -> Config:
    settings = {
        "data.train": str(images),
        "data.patch_size": 16,
        "data.batch_size": 2,
        "run.output": str(output),
        "run.log_every": 1,
        **overrides,
    }
    return load_config("tiny", overrides=settings)


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_train_resume_is_exact(images: Path, tmp_path: Path) -> None:
    cfg = tiny(images, tmp_path / "b", **{"optim.steps": 6, "optim.milestones": [4]})
    cfg_straight = tiny(images, tmp_path / "c", **{"optim.steps": 6, "optim.milestones": [4]})
    straight = train(cfg_straight, progress=False)
    first = train(cfg, progress=False, max_steps=3)
    assert first.step == 3 and len(first.losses) == 3
    assert torch.load(first.checkpoint, weights_only=True)["step"] == 3
    second = train(cfg, resume=True, progress=False)
    assert second.step == 6
    assert first.losses + second.losses == straight.losses
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed_state = torch.load(second.checkpoint, weights_only=True)
    straight_state = torch.load(straight.checkpoint, weights_only=True)
    assert resumed_state["optimizer"]["param_groups"][0]["lr"] == 1e-3 * 0.5  # milestone 4
    assert torch.equal(resumed_state["z_generator"], straight_state["z_generator"])
    columns = ["step", "fit", "distr", "rec", "total", "lr"]
    resumed_log = [[r[c] for c in columns] for r in read_log(second.log_csv)]
    assert resumed_log == [[r[c] for c in columns] for r in read_log(straight.log_csv)]


def test_train_tiny_run_loss_falls_and_writes_run_folder(images: Path, tmp_path: Path) -> None:
    val = tmp_path / "val"
    for i in range(2):
        write_image(val / f"v{i}.png", smooth_image(32, 32, 10 + i))
    cfg = tiny(
        images,
        tmp_path / "run",
        **{
            "optim.steps": 24,
            "run.validation": str(val),
            "run.validate_every": 12,
            "run.log_every": 5,
        },
    )
    result = train(cfg, progress=False)
    assert result.step == 24 and len(result.losses) == 24
    early, late = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert late < 0.5 * early
    rows = read_log(result.log_csv)
    assert [int(r["step"]) for r in rows] == [5, 10, 12, 15, 20, 24]
    validated = [r for r in rows if r["psnr_y_sampled"]]
    assert [int(r["step"]) for r in validated] == [12, 24]
    assert validated[0]["psnr_y_bicubic"] == validated[1]["psnr_y_bicubic"]
    assert float(validated[1]["psnr_y_zero"]) > 20
    assert [v["step"] for v in result.validation] == [12, 24]
    model = load_irn(result.model_path)
    assert model.config == result.model.config
    assert all(torch.equal(model.state_dict()[k], v) for k, v in result.model.state_dict().items())
    assert load_config(result.output / "config.yaml") == cfg


def test_train_non_finite_loss_names_step_and_keeps_checkpoint(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.irn_losses
    calls = []

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(train_module, "irn_losses", poisoned)
    cfg = tiny(images, tmp_path / "run", **{"run.checkpoint_every": 2, "optim.steps": 10})
    with pytest.raises(TrainingError, match=r"step 3: the loss is nan.*checkpoint.*\(step 2\)"):
        train(cfg, progress=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "run" / "model.pt").exists()


def test_train_refuses_to_overwrite_or_resume_nothing(images: Path, tmp_path: Path) -> None:
    cfg = tiny(images, tmp_path / "run", **{"optim.steps": 1})
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(cfg, resume=True, progress=False)
    train(cfg, progress=False)
    with pytest.raises(TrainingError, match=r"already holds a run.*--resume"):
        train(cfg, progress=False)
    other = tiny(images, tmp_path / "run", **{"optim.steps": 2, "model.growth": 4})
    with pytest.raises(TrainingError, match="model settings"):
        train(other, resume=True, progress=False)


def test_train_needs_training_folder(tmp_path: Path) -> None:
    cfg = load_config("tiny", overrides={"run.output": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"set data\.train to a folder of training images"):
        train(cfg, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_train_bf16_needs_cuda(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bf16.*needs CUDA"):
        train(tiny(images, tmp_path, **{"run.bf16": True}), progress=False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
