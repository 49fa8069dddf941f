"""Tests of flowlearn.irn.gan: discriminators, GAN and feature losses, the IRN+ training stage."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flowlearn.irn.gan as gan_module
from flowlearn import IRN
from flowlearn.cli import main
from flowlearn.images.io import write_image
from flowlearn.irn import irn_losses
from flowlearn.irn.checkpoint import load, save, to_official
from flowlearn.irn.config import Config, load_config
from flowlearn.irn.gan import (
    VGG19_CONV5_4,
    FeatureLoss,
    IRNPlusStage,
    PatchDiscriminator,
    VGGDiscriminator,
    VGGWeightsMissingError,
    discriminator_loss,
    generator_loss,
    irn_plus_losses,
    load_vgg19_features,
    trains_generator,
    vgg19_weights_path,
    vgg_features,
)
from flowlearn.irn.train import TrainingError, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gan_images")
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        coarse = torch.rand(1, 3, 12, 14, generator=g)
        x = F.interpolate(coarse, size=(48, 56), mode="bicubic")[0].clamp(0, 1)
        write_image(folder / f"{i}.png", x)
    return folder


def tiny_plus(images: Path, output: Path, **overrides: object) -> Config:
    settings = {
        "data.train": str(images),
        "data.patch_size": 24,
        "data.batch_size": 2,
        "run.output": str(output),
        "run.log_every": 1,
        "run.tensorboard": False,
        "optim.steps": 6,
        "optim.milestones": [4],
        "loss.lambda_ce": 0.0,
        "loss.lambda_rec": 0.01,
        "gan.discriminator": "patch",
        "gan.channels": 4,
        "gan.d_init_steps": 2,
        **overrides,
    }
    return load_config("tiny", overrides=settings)


# ------------------------------------------------------------------------------ discriminators


@pytest.mark.parametrize("size", [128, 144, 159])
def test_vgg_discriminator_one_logit_per_image(size: int) -> None:
    d = VGGDiscriminator(channels=4)
    assert d(torch.rand(2, 3, size, size)).shape == (2, 1)
    batchnorms = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    slopes = {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)}
    assert len(batchnorms) == 9 and slopes == {0.2}


@pytest.mark.parametrize("shape", [(1, 3, 127, 128), (1, 3, 160, 160), (1, 1, 128, 128)])
def test_vgg_discriminator_rejects_other_sizes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"VGGDiscriminator: expected .*128 <= H, W < 160"):
        VGGDiscriminator(channels=4)(torch.rand(shape))


@pytest.mark.parametrize(("layers", "size"), [(3, 24), (3, 64), (3, 70), (2, 40)])
def test_patch_discriminator_map_of_logits_for_any_size(layers: int, size: int) -> None:
    d = PatchDiscriminator(channels=4, layers=layers)
    side = size // 2**layers - 2
    assert d(torch.rand(2, 3, size, size + 8)).shape == (2, 1, side, (size + 8) // 2**layers - 2)
    with pytest.raises(ValueError, match=f"H, W >= {3 * 2**layers}"):
        d(torch.rand(1, 3, 3 * 2**layers - 1, 64))


def test_patch_discriminator_logit_sees_70_pixels() -> None:
    d = PatchDiscriminator(channels=4).eval()
    x = torch.zeros(1, 3, 160, 160, requires_grad=True)
    d(x)[0, 0, 8, 8].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()  # type: ignore[union-attr]
    assert int(rows.max() - rows.min()) + 1 == 70


# ------------------------------------------------------------------------------ GAN losses


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def test_gan_losses_are_the_binary_cross_entropies_of_the_original() -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(8, 1, generator=g), torch.randn(8, 1, generator=g)
    assert torch.allclose(generator_loss(fake), bce(fake, 1.0))
    total, r, f = discriminator_loss(real, fake)
    assert torch.allclose(r, bce(real, 1.0)) and torch.allclose(f, bce(fake, 0.0))
    assert torch.allclose(total, r + f)
    ragan_g = (bce(real - fake.mean(), 0.0) + bce(fake - real.mean(), 1.0)) / 2
    assert torch.allclose(generator_loss(fake, real, kind="ragan"), ragan_g)
    ragan_d = (bce(real - fake.mean(), 1.0) + bce(fake - real.mean(), 0.0)) / 2
    assert torch.allclose(discriminator_loss(real, fake, kind="ragan")[0], ragan_d)


def test_ragan_generator_loss_sends_no_gradient_to_real_logits() -> None:
    real = torch.randn(4, 1, requires_grad=True)
    fake = torch.randn(4, 1, requires_grad=True)
    generator_loss(fake, real, kind="ragan").backward()
    assert real.grad is None and fake.grad is not None
    with pytest.raises(ValueError, match="one of gan, ragan"):
        generator_loss(fake, kind="lsgan")


# ------------------------------------------------------------------------------ perceptual loss


def test_vgg_features_numbered_as_torchvision_vgg19() -> None:
    net = vgg_features()
    convs = [i for i, m in enumerate(net) if isinstance(m, nn.Conv2d)]
    pools = [i for i, m in enumerate(net) if isinstance(m, nn.MaxPool2d)]
    assert len(convs) == 16 and pools == [4, 9, 18, 27, 36]
    assert convs[-1] == VGG19_CONV5_4 and isinstance(net[VGG19_CONV5_4 + 1], nn.ReLU)
    assert net[VGG19_CONV5_4].in_channels == net[VGG19_CONV5_4].out_channels == 512


def test_load_vgg19_features_cuts_before_conv5_4_relu(tmp_path: Path) -> None:
    full = vgg_features()
    file = tmp_path / "vgg19.pth"  # torchvision's layout: features.* and classifier.*
    state = {f"features.{k}": v for k, v in full.state_dict().items()}
    torch.save({**state, "classifier.0.weight": torch.zeros(2, 2)}, file)
    cut = load_vgg19_features(file)
    assert len(cut) == VGG19_CONV5_4 + 1 and isinstance(cut[-1], nn.Conv2d)
    assert torch.equal(cut[-1].weight, full[VGG19_CONV5_4].weight)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not hold VGG19's feature weights"):
        load_vgg19_features(tmp_path / "bad.pth")


def test_feature_loss_normalises_input_with_imagenet_statistics() -> None:
    torch.manual_seed(0)
    loss = FeatureLoss(vgg_features([4, "M", 6]))
    mean_image = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    assert torch.allclose(loss.extract(mean_image), loss.features(torch.zeros(1, 3, 8, 8)))
    x = torch.rand(1, 3, 8, 8)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(loss.extract(x), loss.features((x - mean_image) / std))


def test_feature_loss_value_and_no_gradient_into_vgg() -> None:
    torch.manual_seed(0)
    loss = FeatureLoss(vgg_features([4, "M", 6]))
    fake = torch.rand(2, 3, 8, 8, requires_grad=True)
    real = torch.rand(2, 3, 8, 8, requires_grad=True)
    value = loss(fake, real)
    diff = loss.extract(fake) - loss.extract(real)
    assert torch.allclose(value, torch.sqrt(diff**2 + 1e-6).flatten(1).sum(1).mean())
    value.backward()
    assert fake.grad is not None and real.grad is None
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())
    loss.train()
    assert not loss.features.training  # a fixed function


def test_missing_vgg_weights_one_line_saying_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg19_weights_path() == expected
    with pytest.raises(VGGWeightsMissingError) as caught:
        load_vgg19_features()
    message = str(caught.value)
    assert "\n" not in message and str(expected) in message
    assert "vgg19-dcbb9e9d.pth" in message and "gan.vgg_weights" in message
    expected.parent.mkdir(parents=True)
    torch.save(vgg_features().state_dict(), expected)  # the features alone load too
    assert len(load_vgg19_features()) == VGG19_CONV5_4 + 1


def test_train_with_perceptual_loss_and_no_weights_stops_at_once(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = tiny_plus(images, tmp_path / "run", **{"gan.perceptual_weight": 0.01})
    with pytest.raises(VGGWeightsMissingError):
        train(cfg, progress=False)
    written = [p.name for p in (tmp_path / "run").glob("*")]  # nothing started: no run files
    assert not {"config.yaml", "checkpoint.pt", "log.csv"} & set(written)
    argv = ["irn", "train", "--config", "tiny", "--data", str(images)]
    argv += ["--output", str(tmp_path / "cli"), "--quiet", "--set", "gan.discriminator=patch"]
    argv += ["--set", "gan.perceptual_weight=0.01", "--set", "loss.lambda_ce=0"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowlearn irn train: error: the perceptual")


# ------------------------------------------------------------------------------ IRN+ objective


def test_irn_plus_losses_share_fit_and_reconstruction_with_irn_losses() -> None:
    torch.manual_seed(0)
    net, d = IRN(2, blocks=[1], growth=4), PatchDiscriminator(channels=4, layers=1)
    hr = torch.rand(2, 3, 8, 8)
    lr_ref = F.avg_pool2d(hr, 2) + 0.01
    z = torch.randn(2, 9, 4, 4)
    plus, hr_rec = irn_plus_losses(net, hr, lr_ref, d, z=z, lambda_rec=0.5, lambda_ce=0.3)
    plain = irn_losses(net, hr, lr_ref, z=z, lambda_rec=0.5, lambda_ce=0.3)
    for name in ("fit", "rec", "distr"):
        assert torch.allclose(getattr(plus, name), getattr(plain, name))
    assert torch.allclose(hr_rec, net.inverse(net.join(net.downscale(hr), z))[0])
    assert torch.allclose(plus.gan, generator_loss(d(hr_rec)))
    assert torch.allclose(plus.total, plain.total + plus.gan)


def test_trains_generator_after_warm_up_every_ratio_steps() -> None:
    assert [s for s in range(1, 8) if trains_generator(s, 2)] == [3, 4, 5, 6, 7]
    assert [s for s in range(1, 8) if trains_generator(s, 0, 3)] == [3, 6]


def test_stage_warm_up_trains_discriminator_only(images: Path, tmp_path: Path) -> None:
    cfg = tiny_plus(images, tmp_path)
    torch.manual_seed(0)
    net = IRN(2, blocks=[1], growth=4)
    stage = IRNPlusStage(cfg, torch.device("cpu"))
    hr = torch.rand(2, 3, 24, 24)
    lr_ref = F.avg_pool2d(hr, 2)
    d_params = list(stage.discriminator.parameters())
    losses = stage.backward(net, hr, lr_ref, step=1)  # warm-up: D only
    assert all(p.grad is None for p in net.parameters())
    assert all(p.grad is not None for p in d_params)
    assert float(losses.d_total) == pytest.approx(float(losses.d_real + losses.d_fake))
    stage.backward(net, hr, lr_ref, step=3)
    assert all(p.grad is not None for p in net.parameters())
    assert all(p.requires_grad for p in d_params)


def test_stage_perceptual_term_with_a_small_random_vgg(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gan_module, "load_vgg19_features", lambda path: vgg_features([4, "M", 6]))
    cfg = tiny_plus(images, tmp_path, **{"gan.perceptual_weight": 0.5})
    stage = IRNPlusStage(cfg, torch.device("cpu"))
    net = IRN(2, blocks=[1], growth=4)
    hr = torch.rand(2, 3, 24, 24)
    losses = stage.backward(net, hr, F.avg_pool2d(hr, 2), step=5)
    assert float(losses.perceptual) > 0
    parts = losses.fit + losses.distr + losses.rec + losses.gan + losses.perceptual
    assert torch.allclose(losses.total, parts)
    assert stage.feature_loss is not None
    assert all(p.grad is None for p in stage.feature_loss.parameters())


# ------------------------------------------------------------------------------ training


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("warmup", [0, 5])
def test_train_irn_plus_resume_is_exact(images: Path, tmp_path: Path, warmup: int) -> None:
    straight = train(
        tiny_plus(images, tmp_path / "straight", **{"optim.warmup": warmup}), progress=False
    )
    cfg = tiny_plus(images, tmp_path / "resumed", **{"optim.warmup": warmup})
    first = train(cfg, progress=False, max_steps=3)
    d_lr = torch.load(first.checkpoint, weights_only=True)["gan"]["optimizer"]["param_groups"]
    assert d_lr[0]["lr"] == pytest.approx(1e-4 * (4 / warmup if warmup else 1))  # step 4's
    second = train(cfg, resume=True, progress=False)
    assert first.losses + second.losses == straight.losses
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(straight.checkpoint, weights_only=True)["gan"]
    state_b = torch.load(second.checkpoint, weights_only=True)["gan"]
    for key, value in state_a["discriminator"].items():  # weights and BatchNorm statistics
        assert torch.equal(value, state_b["discriminator"][key])
    assert state_b["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 0.5)
    assert state_a["optimizer"]["state"][0]["step"] == state_b["optimizer"]["state"][0]["step"]
    log = read_log(second.log_csv)
    columns = ["step", "fit", "rec", "gan", "total", "d_real", "d_fake", "d_total"]
    assert [[r[c] for c in columns] for r in log] == [
        [r[c] for c in columns] for r in read_log(straight.log_csv)
    ]
    assert len(log) == 6 and float(log[0]["distr"]) == 0.0


def test_train_irn_plus_keeps_the_generator_during_warm_up(images: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    start = IRN(2, blocks=[2], growth=8)
    save(start, tmp_path / "start.pt")
    cfg = tiny_plus(images, tmp_path / "run", **{"model.init": str(tmp_path / "start.pt")})
    warm = train(cfg, progress=False, max_steps=2)
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in warm.model.state_dict().items())
    after = train(cfg, resume=True, progress=False, max_steps=3)
    assert any(
        not torch.equal(v, start.state_dict()[k]) for k, v in after.model.state_dict().items()
    )


def test_train_resume_refuses_to_switch_between_irn_and_irn_plus(
    images: Path, tmp_path: Path
) -> None:
    cfg = tiny_plus(images, tmp_path / "run", **{"optim.steps": 1})
    train(cfg, progress=False)
    plain = tiny_plus(images, tmp_path / "run", **{"optim.steps": 2, "gan.discriminator": None})
    with pytest.raises(TrainingError, match=r"is an IRN\+ run; resume it with gan\.discriminator"):
        train(plain, resume=True, progress=False)


def test_gan_only_fine_tune_from_the_shipped_x4(images: Path, tmp_path: Path) -> None:
    settings = {
        "data.train": str(images),
        "data.patch_size": 24,
        "data.batch_size": 1,
        "data.workers": 0,
        "run.output": str(tmp_path / "plus"),
        "run.device": "cpu",
        "run.tensorboard": False,
        "gan.discriminator": "patch",
        "gan.channels": 4,
        "gan.d_init_steps": 1,
        "optim.steps": 2,
    }
    cfg = load_config("x4_plus_gan", overrides=settings)
    assert (cfg.loss.lambda_ce, cfg.loss.lambda_rec, cfg.gan.perceptual_weight) == (0, 0.01, 0)
    result = train(cfg, progress=False)
    shipped = load("x4").state_dict()
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, shipped[k])]
    assert changed  # step 2 trained the shipped model against the discriminator
    assert load(result.model_path).config == load("x4").config


def test_original_irn_plus_weights_load_through_the_one_loading_function(tmp_path: Path) -> None:
    net = IRN(4, blocks=[1, 1], growth=4)  # IRN+ has the generator architecture of IRN
    torch.save(to_official(net), tmp_path / "IRN+_x4.pth")
    loaded = load(tmp_path / "IRN+_x4.pth", scale=4)
    assert loaded.config == net.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in net.state_dict().items())


def test_shipped_irn_plus_is_named_x4_plus() -> None:
    from flowlearn.irn.checkpoint import available_models, model_info

    if "x4_plus" not in available_models():
        pytest.skip("this installation ships no IRN+ model")
    assert list(available_models())[-1] == "x4_plus"  # after x2 and x4
    assert load("x4_plus").config == load("x4").config  # the generator of IRN x4
    meta = model_info("x4_plus")["metadata"]
    assert meta["name"] == "x4_plus" and meta["set14_psnr_y"] > meta["set14_bicubic_psnr_y"]
    cfg = load_config("x4_plus_gan", overrides=["model.init=x4_plus"])
    assert cfg.model.init == Path("x4_plus")  # a name, not resolved to a file path
