"""Tests of flowlearn.irn.train: a tiny run learns, resumes exactly, and fails clearly."""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import flowlearn.irn.train as train_module
from flowlearn import IRN
from flowlearn.checks import jitter_parameters
from flowlearn.images.io import write_image
from flowlearn.irn import irn_losses
from flowlearn.irn.checkpoint import load, save
from flowlearn.irn.config import Config, ConfigError, load_config
from flowlearn.irn.evaluate import evaluate_folder
from flowlearn.irn.train import (
    TrainingError,
    build_model,
    clip_gradients,
    irn_optimizer,
    resolve_device,
    train,
)
from tests.conftest import smooth_image

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_train_warmup_rises_linearly_and_resumes_exactly(images: Path, tmp_path: Path) -> None:
    settings = {"optim.steps": 6, "optim.milestones": [4], "optim.warmup": 3}
    straight = train(tiny(images, tmp_path / "a", **settings), progress=False)
    rates = [float(r["lr"]) for r in read_log(straight.log_csv)]
    assert rates == pytest.approx([1e-3 * f for f in (1 / 3, 2 / 3, 1, 1, 0.5, 0.5)], rel=1e-5)
    cfg = tiny(images, tmp_path / "b", **settings)
    first = train(cfg, progress=False, max_steps=2)  # stopped inside the warm-up
    second = train(cfg, resume=True, progress=False)
    assert first.losses + second.losses == straight.losses
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [float(r["lr"]) for r in read_log(second.log_csv)] == rates
    other = tiny(images, tmp_path / "b", **{**settings, "optim.warmup": 0, "optim.steps": 8})
    with pytest.raises(TrainingError, match=r"optim\.warmup = 3, not 0.*same warm-up"):
        train(other, resume=True, progress=False)


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
    lr_fidelity = evaluate_folder(result.model, val, 2, draws=1, progress=False)["mean"]
    assert float(validated[1]["lr_psnr_rgb"]) == pytest.approx(lr_fidelity["lr_psnr_rgb"], abs=1e-4)
    assert [v["step"] for v in result.validation] == [12, 24]
    model = load(result.model_path)
    assert model.config == result.model.config
    assert all(torch.equal(model.state_dict()[k], v) for k, v in result.model.state_dict().items())
    recorded = load_config(result.output / "config.yaml")
    assert recorded.run.world_size == 1  # one process, recorded
    assert recorded == dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, world_size=1))


def test_train_non_finite_loss_names_step_and_keeps_checkpoint(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.irn_backward
    calls = []

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses.total = losses.total * float("nan")
        return losses

    monkeypatch.setattr(train_module, "irn_backward", poisoned)
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
    blocker = tmp_path / "run" / "model.pt"  # a file where the run folder should be
    for out in [blocker, blocker / "sub"]:
        on_a_file = tiny(images, out, **{"optim.steps": 1})
        with pytest.raises(NotADirectoryError, match="is a file or inside one; expected a"):
            train(on_a_file, progress=False)


def test_build_model_is_seeded_by_the_recipe_and_loads_init(images: Path, tmp_path: Path) -> None:
    cfg = tiny(images, tmp_path / "run")
    key = "operations.1.F.conv1.weight"
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = build_model(cfg).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    torch.manual_seed(2)
    assert torch.equal(build_model(cfg).state_dict()[key], a[key])  # seeded by data.seed
    other_seed = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=11))
    assert not torch.equal(build_model(other_seed).state_dict()[key], a[key])

    source = jitter_parameters(IRN(2, blocks=[2], growth=8), scale=0.1)
    save(source, tmp_path / "init.pt")
    with_init = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, init=tmp_path / "init.pt")
    )
    started = build_model(with_init).state_dict()
    assert all(torch.equal(started[k], v) for k, v in source.state_dict().items())
    assert not torch.equal(started[key], a[key])


def test_train_needs_training_folder(tmp_path: Path) -> None:
    cfg = load_config("tiny", overrides={"run.output": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"set data\.train to a folder of training images"):
        train(cfg, progress=False)


def test_train_bf16_runs_subnetworks_in_bf16_and_returns_float32(
    images: Path, tmp_path: Path
) -> None:
    cfg = tiny(images, tmp_path / "bf16", **{"run.bf16": True, "optim.steps": 2})
    plain = train(tiny(images, tmp_path / "fp32", **{"optim.steps": 2}), progress=False)
    result = train(cfg, progress=False)
    assert result.step == 2 and all(math.isfinite(v) for v in result.losses)
    assert not result.model.bf16  # the returned model computes in float32
    # at initialisation the last convolutions are zero, so step 1 matches exactly; after one
    # update the sub-networks contribute, rounded to bfloat16: close, but not equal
    assert result.losses[0] == plain.losses[0]
    assert result.losses[1] == pytest.approx(plain.losses[1], rel=2e-2)
    assert result.losses[1] != plain.losses[1]


def test_train_bf16_warns_on_a_cpu_without_bfloat16(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    cfg = tiny(images, tmp_path / "slow", **{"run.bf16": True, "optim.steps": 1})
    with pytest.warns(UserWarning, match="slower than float32"):
        train(cfg, progress=False)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: None)  # unknown: no warning
    cfg = tiny(images, tmp_path / "unknown", **{"run.bf16": True, "optim.steps": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(cfg, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_resolve_device_without_cuda() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_irn_optimizer_and_clipping_match_the_plain_loop() -> None:
    torch.manual_seed(0)
    a = jitter_parameters(IRN(2, blocks=[2], growth=4), scale=0.05)
    b = IRN(2, blocks=[2], growth=4)
    b.load_state_dict(a.state_dict())
    plain = torch.optim.Adam(a.parameters(), lr=1e-2, weight_decay=1e-3, foreach=False)
    fused = irn_optimizer(b.parameters(), lr=1e-2, weight_decay=1e-3)
    assert fused.defaults["fused"] is True
    hr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        norms = []
        for net, opt in ((a, plain), (b, fused)):
            opt.zero_grad()
            irn_losses(net, hr, hr[:, :, ::2, ::2], z=torch.zeros(2, 9, 4, 4)).total.backward()
            if opt is plain:
                norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), 0.5)))
            else:
                norms.append(clip_gradients(net.parameters(), 0.5))
            opt.step()
        assert norms[0] == pytest.approx(norms[1], rel=1e-5)
        assert norms[0] > 0.5  # clipping was active
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert clip_gradients([nn.Parameter(torch.ones(2))], 1.0) == 0.0  # no gradients: no-op


def test_train_shards_the_batch_as_configured(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.irn_backward
    shards_seen: list[int | None] = []

    def spy(*args: object, shards: int | None = None, **kwargs: object) -> object:
        shards_seen.append(shards)
        return real(*args, shards=shards, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "irn_backward", spy)
    one = train(
        tiny(images, tmp_path / "one", **{"optim.steps": 2, "run.shards": 1}), progress=False
    )
    two = train(
        tiny(images, tmp_path / "two", **{"optim.steps": 2, "run.shards": 2}), progress=False
    )
    auto = train(tiny(images, tmp_path / "auto", **{"optim.steps": 1}), progress=False)
    assert shards_seen == [1, 1, 2, 2, None]
    # the same batch and latent: the first loss agrees to float round-off, the second nearly
    assert one.losses[0] == pytest.approx(two.losses[0], rel=1e-6)
    assert one.losses[0] == pytest.approx(auto.losses[0], rel=1e-6)
    assert one.losses[1] == pytest.approx(two.losses[1], rel=1e-3)


def test_train_builds_the_patches_with_the_data_section(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.IRNTrainSet
    seen: list[dict[str, object]] = []

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "IRNTrainSet", spy)
    settings = {
        "optim.steps": 1,
        "data.recolour": 0.5,
        "data.prescale": 0.75,
        "data.noise": 0.25,
        "data.noise_level": 4.0,
    }
    plain = train(tiny(images, tmp_path / "plain", **{"optim.steps": 1}), progress=False)
    recoloured = train(tiny(images, tmp_path / "recoloured", **settings), progress=False)
    keys = ("prescale", "recolour", "noise", "noise_level")
    assert [tuple(k[key] for key in keys) for k in seen] == [
        (1.0, 0.0, 0.0, 10.0),
        (0.75, 0.5, 0.25, 4.0),
    ]
    assert plain.losses[0] != pytest.approx(recoloured.losses[0], rel=1e-4)  # other patches


def test_train_tensorboard_events_hold_scalars_and_images(images: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val = tmp_path / "val"
    for i in range(2):
        write_image(val / f"v{i}.png", smooth_image(32, 32, 10 + i))
    settings = {"optim.steps": 4, "run.validation": str(val), "run.validate_every": 2}
    cfg = tiny(images, tmp_path / "run", **settings, **{"run.tensorboard": True})
    first = train(cfg, progress=False, max_steps=2)
    second = train(cfg, resume=True, progress=False)  # the same event folder, continued
    events = EventAccumulator(
        str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    ).Reload()
    tags = events.Tags()
    for tag in [
        *(f"loss/{name}" for name in ("fit", "distr", "rec", "total")),
        "train/lr",
        "train/grad_norm",
        "train/seconds_per_step",
        "train/samples_per_second",
        *(f"validation/{m}_y_{z}" for m in ("psnr", "ssim") for z in ("sampled", "zero")),
        "validation/psnr_y_bicubic",
        "validation/ssim_y_bicubic",
        "validation/lr_psnr_rgb",
    ]:
        assert tag in tags["scalars"], tag
    total = events.Scalars("loss/total")
    assert [e.step for e in total] == [1, 2, 3, 4]  # log_every 1, each step once
    assert [e.value for e in total] == pytest.approx(first.losses + second.losses, rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([1e-3] * 4)
    assert all(e.value > 0 for e in events.Scalars("train/grad_norm"))
    psnr = events.Scalars("validation/psnr_y_sampled")
    validated = first.validation + second.validation
    assert [e.step for e in psnr] == [2, 4]
    assert [e.value for e in psnr] == pytest.approx([v["psnr_y_sampled"] for v in validated])
    ssim = [e.value for e in events.Scalars("validation/ssim_y_zero")]
    assert ssim == pytest.approx([v["ssim_y_zero"] for v in validated]) and 0 < ssim[0] <= 1
    assert sorted(tags["images"]) == ["validation/v0", "validation/v1"]
    crops = events.Images("validation/v0")
    assert [e.step for e in crops] == [2, 4]
    assert (crops[0].width, crops[0].height) == (3 * 32, 32)  # LR | SR | HR of a 32² crop
    rows = read_log(second.log_csv)  # the CSV log is kept alongside
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_train_without_tensorboard_package_warns_and_logs_csv(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "tensorboard_missing", lambda: "no tensorboard here")
    cfg = tiny(images, tmp_path / "run", **{"optim.steps": 1})
    with pytest.warns(UserWarning, match=r"run.tensorboard: no tensorboard here; logging to"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "log.csv").is_file()
    off = tiny(images, tmp_path / "off", **{"optim.steps": 1, "run.tensorboard": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(off, progress=False)
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_train_speed_switches_leave_the_result_to_round_off(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowlearn.irn.speed as speed

    compiled: list[torch.device] = []
    monkeypatch.setattr(speed, "compile_subnets", lambda model, device: compiled.append(device))
    base = train(tiny(images, tmp_path / "base", **{"optim.steps": 2}), progress=False)
    switched = {
        "optim.steps": 2,
        "run.channels_last": False,
        "run.memory_saving": True,
        "run.compile": True,
        "data.pin_memory": False,
    }
    other = train(tiny(images, tmp_path / "other", **switched), progress=False)
    assert compiled == [torch.device("cpu")]
    assert other.losses == pytest.approx(base.losses, rel=1e-5)

    def conv_weight(model: nn.Module) -> torch.Tensor:
        return next(p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1)

    assert not conv_weight(base.model).is_contiguous()  # channels-last by default
    assert conv_weight(base.model).is_contiguous(memory_format=torch.channels_last)
    assert conv_weight(other.model).is_contiguous()  # channels_last off: the ordinary layout
    a, b = base.model.state_dict(), other.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
