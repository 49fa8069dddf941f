"""Tests of flowlearn.irn.config: our YAML schema, the shipped recipes, original option files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from flowlearn.irn.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    load_test_options,
    shipped_configs,
)
from tests.conftest import ROOT, shared_path

ORIGINAL_X4 = """
name: IRN_x4_custom
use_tb_logger: true
model: IRN
distortion: sr
scale: 4
gpu_ids: [0]

datasets:
  train:
    name: DIV2K
    mode: LQGT
    dataroot_GT: ../data/DIV2K_train_HR
    dataroot_LQ: ../data/DIV2K_train_LR_bicubic/X4
    use_shuffle: true
    n_workers: 3
    batch_size: 8
    GT_size: 128
    use_flip: true
    use_rot: false
    color: RGB
  val:
    name: val_DIV2K
    mode: LQGT
    dataroot_GT: /data/DIV2K_valid_HR
    dataroot_LQ: ~

network_G:
  which_model_G:
      subnet_type: DBNet
  in_nc: 3
  out_nc: 3
  block_num: [6, 7]
  scale: 4
  init: xavier

path:
  pretrain_model_G: ~
  strict_load: true
  resume_state: ~

train:
  lr_G: !!float 1e-4
  beta1: 0.8
  beta2: 0.99
  niter: 1000
  warmup_iter: -1
  lr_scheme: MultiStepLR
  lr_steps: [200, 400]
  lr_gamma: 0.25
  pixel_criterion_forw: l2
  pixel_criterion_back: l1
  manual_seed: 10
  val_freq: !!float 50
  lambda_fit_forw: 16.
  lambda_rec_back: 1
  lambda_ce_forw: 1
  weight_decay_G: !!float 1e-5
  gradient_clipping: 10

logger:
  print_freq: 100
  save_checkpoint_freq: !!float 500
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_load_config_shipped_recipe_values(scale: int) -> None:
    cfg = load_config(f"x{scale}")
    assert cfg.model.scale == scale
    assert cfg.model.blocks == [8] * {2: 1, 4: 2, 8: 3}[scale]
    assert (cfg.data.batch_size, cfg.data.patch_size, cfg.optim.steps) == (16, 144, 500_000)
    assert cfg.optim.milestones == [100_000, 200_000, 300_000, 400_000]
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay) == (2e-4, (0.9, 0.999), 1e-5)
    assert (cfg.optim.gamma, cfg.optim.grad_clip, cfg.optim.warmup) == (0.5, 10.0, 0)
    assert cfg.lambda_fit == scale**2
    assert cfg.data.train is None  # the user has to say where the images are
    assert load_config(f"irn_x{scale}") == cfg


def test_shipped_configs_lists_every_file() -> None:
    assert sorted(shipped_configs()) == ["tiny", "x2", "x4", "x4_plus_gan", "x8"]
    assert all(path.is_file() for path in shipped_configs().values())


def test_load_config_lambda_fit_defaults_to_scale_squared(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "model: {scale: 8}\ndata: {patch_size: 64}\n"))
    assert cfg.loss.lambda_fit is None
    assert cfg.lambda_fit == 64.0
    assert load_config("tiny", overrides=["loss.lambda_fit=2.5"]).lambda_fit == 2.5


def test_load_config_relative_paths_resolved_against_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", "data: {train: ../photos}\nrun: {validation: /abs/set5}\n")
    cfg = load_config(path)
    assert cfg.data.train == tmp_path / "sub" / ".." / "photos"
    assert cfg.run.validation == Path("/abs/set5")
    assert cfg.run.output == Path("runs/irn")  # a default stays relative to the current folder


def test_load_config_unknown_key_names_key_and_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"'optim\.learning_rate'.*valid keys.*lr, betas"):
        load_config(path)


def test_load_config_unknown_section_names_valid_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'training'.*model, data, optim, loss, gan, run"):
        load_config(write(tmp_path, "training: {steps: 3}\n"))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("data: {batch_size: many}", r"data\.batch_size must be an integer, got 'many'"),
        ("data: {batch_size: 2.5}", r"data\.batch_size must be an integer"),
        ("data: {flips: 1}", r"data\.flips must be true or false"),
        ("optim: {betas: [0.9]}", r"optim\.betas must be a list of 2 a number"),
        ("model: {scale: 3}", r"model\.scale .*must be one of 2, 4, 8, got 3"),
        ("model: {scale: 4, blocks: [8]}", r"model\.blocks .*2 positive block count"),
        ("data: {patch_size: 30}\nmodel: {scale: 4}", r"patch_size .*multiple of model\.scale = 4"),
        ("run: {device: gpu}", r"run\.device .*one of cpu, cuda, auto"),
        ("optim: {milestones: [20, 10]}", r"optim\.milestones .*increasing"),
        ("optim: {steps: 0}", r"optim\.steps .*positive"),
        ("optim: {warmup: -5}", r"optim\.warmup .*0 \(no warm-up\) or a number of steps"),
        ("data: {prescale: 0}", r"data\.prescale .*a factor in \(0, 1\]"),
        ("data: {recolour: 1.5}", r"data\.recolour .*a probability in \[0, 1\]"),
        ("data: {recolour: -0.1}", r"data\.recolour .*a probability in \[0, 1\]"),
        ("data: {noise: 2}", r"data\.noise .*a probability in \[0, 1\]"),
        ("data: {noise_level: 0}", r"data\.noise_level .*\(0, 255\]"),
    ],
)
def test_load_config_bad_value_names_key(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, text + "\n"))


def test_load_config_reads_exponent_strings_as_floats(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) reads 1e-5 without a dot as a string.
    cfg = load_config(write(tmp_path, "optim: {lr: 1e-3, weight_decay: 1e-5}\n"))
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-3, 1e-5)


def test_load_config_missing_file_lists_shipped_names() -> None:
    with pytest.raises(
        ConfigError, match=r"no configuration file 'nope\.yaml'.*tiny, x2, x4, x4_plus_gan, x8"
    ):
        load_config("nope.yaml")


def test_load_config_invalid_yaml_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(write(tmp_path, "model: [unclosed\n"))


def test_load_config_overrides_strings_and_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        "x2", overrides=["data.train=photos", "optim.milestones=[10, 20]", "run.bf16=true"]
    )
    assert cfg.data.train == tmp_path / "photos"  # relative to the current directory
    assert cfg.optim.milestones == [10, 20]
    assert cfg.run.bf16 is True
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config("x2", overrides=["data.train"])
    with pytest.raises(ConfigError, match=r"unknown key 'data\.folder'"):
        load_config("x2", overrides={"data.folder": "x"})


def test_apply_overrides_leaves_input_unchanged() -> None:
    raw = {"data": {"seed": 1}}
    assert apply_overrides(raw, {"data.seed": 5})["data"]["seed"] == 5
    assert raw == {"data": {"seed": 1}}


def test_config_to_dict_round_trips() -> None:
    cfg = load_config("x4", overrides={"data.train": "/photos", "optim.betas": [0.8, 0.9]})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert isinstance(again.optim.betas, tuple)
    assert config_from_dict({}) == Config()


def test_load_config_original_option_file_maps_keys(tmp_path: Path) -> None:
    path = write(tmp_path, ORIGINAL_X4, "train_IRN_x4.yml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    for key in ["datasets.train.dataroot_LQ", "network_G.init", "train.lr_scheme", "gpu_ids"]:
        assert key in message
    assert "train.lr_G" not in message and "network_G.block_num" not in message
    assert "datasets.val.dataroot_LQ" not in message  # null: nothing to ignore
    assert (cfg.model.scale, cfg.model.blocks) == (4, [6, 7])
    assert cfg.data.train == tmp_path / ".." / "data" / "DIV2K_train_HR"
    assert (cfg.data.patch_size, cfg.data.batch_size, cfg.data.workers) == (128, 8, 3)
    assert (cfg.data.flips, cfg.data.rotations, cfg.data.seed) == (True, False, 10)
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.steps) == (1e-4, (0.8, 0.99), 1000)
    assert (cfg.optim.milestones, cfg.optim.gamma) == ([200, 400], 0.25)
    assert (cfg.optim.weight_decay, cfg.optim.grad_clip) == (1e-5, 10.0)
    assert (cfg.loss.lambda_fit, cfg.loss.lambda_rec, cfg.loss.lambda_ce) == (16.0, 1.0, 1.0)
    assert cfg.run.validation == Path("/data/DIV2K_valid_HR")
    assert (cfg.run.validate_every, cfg.run.checkpoint_every) == (50, 500)
    assert cfg.run.output == tmp_path / "runs" / "IRN_x4_custom"
    assert cfg.model.init is None


def test_load_config_original_option_file_pretrained_path(tmp_path: Path) -> None:
    text = "scale: 2\nnetwork_G: {scale: 2, block_num: [8]}\npath: {pretrain_model_G: w.pth}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing ignored here, so no warning
        cfg = load_config(write(tmp_path, text, "opt.yml"))
    assert cfg.model.init == tmp_path / "w.pth"


@pytest.mark.parametrize("shards", [0, 5])
def test_run_shards_must_fit_the_batch(shards: int) -> None:
    with pytest.raises(
        ConfigError, match=r"run\.shards.*1 to data\.batch_size = 4, got " + str(shards)
    ):
        load_config("x2", overrides=[f"run.shards={shards}", "data.batch_size=4"])
    assert load_config("x2", overrides=["run.shards=4", "data.batch_size=4"]).run.shards == 4
    assert load_config("x2").run.shards is None


def test_run_world_size_must_divide_the_global_batch() -> None:
    cfg = load_config("x4", overrides=["run.world_size=4"])
    assert (cfg.run.world_size, cfg.data.batch_size) == (4, 16)
    with pytest.raises(ConfigError, match=r"data\.batch_size.*multiple of run\.world_size = 3"):
        load_config("x4", overrides=["run.world_size=3"])
    with pytest.raises(ConfigError, match=r"run\.world_size.*positive"):
        load_config("x4", overrides=["run.world_size=0"])
    assert load_config("x4").run.world_size is None  # as launched


def test_load_config_training_switches_defaults_and_original_tb_logger(tmp_path: Path) -> None:
    run, data = load_config("tiny").run, load_config("tiny").data
    assert (run.tensorboard, run.channels_last, run.cudnn_benchmark) == (True, True, True)
    assert (run.compile, run.memory_saving, data.pin_memory) == (False, False, True)
    for name in ("x2", "x4", "x8"):  # the full recipes list every switch
        text = shipped_configs()[name].read_text()
        for key in ("tensorboard", "compile", "memory_saving", "world_size", "pin_memory"):
            assert f"  {key}:" in text, (name, key)
    off = ORIGINAL_X4.replace("use_tb_logger: true", "use_tb_logger: false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_config(write(tmp_path, off, "train_IRN_x4.yml")).run.tensorboard is False
        assert load_config(write(tmp_path, ORIGINAL_X4, "on.yml")).run.tensorboard is True


# ------------------------------------------------------------------ the original option files

ORIGINAL_FILES = [
    "train_IRN_x2.yml",
    "train_IRN_x4.yml",
    "train_IRN_x8.yml",
    "train_IRN+_x4.yml",
    "test_IRN_x2.yml",
    "test_IRN_x4.yml",
    "test_IRN_x8.yml",
    "test_IRN+_x4.yml",
]


@pytest.mark.parametrize("name", ORIGINAL_FILES)
def test_original_option_files_are_read(name: str) -> None:
    path = shared_path("fixtures", "irn_options", name)
    scale = int(name.split("_x")[1][0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name.startswith("train"):
            cfg = load_config(path)
            assert (cfg.model.scale, cfg.model.blocks) == (scale, [8] * (scale.bit_length() - 1))
        else:
            options = load_test_options(path)
            assert options.scale == scale and options.blocks == [8] * (scale.bit_length() - 1)
            folder = path.resolve().parent  # relative paths: from the option file's folder
            assert options.model == folder / ".." / "experiments" / "pretrained_models" / (
                name.removeprefix("test_").replace(".yml", ".pth")
            )
            assert list(options.datasets) == ["set5", "set14", "B100", "Urban100", "val_DIV2K"]
            assert set(options.datasets.values()) == {None}  # left to the user
    assert len(caught) <= 1  # at most one warning, listing the ignored keys


def test_original_irn_plus_option_file_maps_the_gan_section() -> None:
    path = shared_path("fixtures", "irn_options", "train_IRN+_x4.yml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(path)
    g = cfg.gan
    assert (g.discriminator, g.channels, g.loss, g.weight) == ("vgg128", 64, "gan", 1.0)
    assert (g.perceptual_weight, g.lr, g.betas, g.weight_decay) == (0.01, 1e-4, (0.9, 0.99), 0)
    assert (g.d_init_steps, g.d_update_ratio) == (5000, 1)
    assert (cfg.lambda_fit, cfg.loss.lambda_rec, cfg.loss.lambda_ce) == (16.0, 0.01, 0.0)
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.optim.steps) == (
        1e-4,
        [50000, 100000, 200000, 300000],
        400000,
    )
    assert (cfg.data.patch_size, cfg.data.batch_size) == (144, 16)
    assert cfg.model.init is not None and cfg.model.init.name == "IRN_x4.pth"
    message = str(caught[0].message)
    assert "train.lr_D" not in message and "network_D.nf" not in message
    assert "network_D.which_model_D" not in message and "train.D_init_iters" not in message


def test_original_irn_option_file_keeps_gan_off_and_the_latent_term() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(shared_path("fixtures", "irn_options", "train_IRN_x4.yml"))
    assert cfg.gan.discriminator is None and cfg.loss.lambda_ce == 1.0


def test_original_option_values_not_implemented_are_refused(tmp_path: Path) -> None:
    text = shared_path("fixtures", "irn_options", "train_IRN+_x4.yml").read_text()
    text = text.replace("gan_type: gan", "gan_type: lsgan")
    text = text.replace("lr_scheme: MultiStepLR", "lr_scheme: CosineAnnealingLR_Restart")
    text = text.replace("resume_state: ~", "resume_state: ../state/5000.state")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text, "train_IRN+_x4.yml"))
    message = str(caught.value)
    assert "train.gan_type = 'lsgan' (flowlearn implements 'gan', 'ragan')" in message
    assert "train.lr_scheme = 'CosineAnnealingLR_Restart'" in message
    assert "path.resume_state = '../state/5000.state' (flowlearn implements null only)" in message


def test_gan_section_values_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"data\.patch_size.*128 to 159 for gan"):
        load_config("x4_plus_gan", overrides=["data.patch_size=64"])
    with pytest.raises(ConfigError, match=r"data\.patch_size.*at least 24 for a patch"):
        load_config("x4_plus_gan", overrides=["gan.discriminator=patch", "data.patch_size=16"])
    with pytest.raises(ConfigError, match=r"gan\.loss.*gan or ragan, got 'wgan'"):
        load_config("x4_plus_gan", overrides=["gan.loss=wgan"])
    with pytest.raises(ConfigError, match=r"gan\.perceptual_weight.*0 while gan\.discriminator"):
        load_config("x4", overrides=["gan.perceptual_weight=0.01"])
    cfg = load_config("x4_plus_gan", overrides=["gan.loss=ragan"])
    assert cfg.gan.loss == "ragan" and cfg.model.init == Path("x4")  # a shipped model name


def test_test_options_map_and_refuse(tmp_path: Path) -> None:
    text = (
        "model: IRN+\nscale: 4\ncrop_border: ~\ntest: {gaussian_scale: 0.8}\n"
        "datasets: {test_1: {name: set5, dataroot_GT: Set5, dataroot_LQ: Set5_LR}}\n"
        "network_G: {block_num: [8, 8], scale: 4}\npath: {pretrain_model_G: w/IRN+_x4.pth}\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = load_test_options(write(tmp_path, text, "test.yml"))
    assert options.datasets == {"set5": tmp_path / "Set5"}
    assert (options.temperature, options.model) == (0.8, tmp_path / "w" / "IRN+_x4.pth")
    assert "datasets.test_1.dataroot_LQ" in str(caught[0].message)
    with pytest.raises(ConfigError, match=r"crop_border = 0 is refused"):
        load_test_options(write(tmp_path, text.replace("crop_border: ~", "crop_border: 0")))
    with pytest.raises(ConfigError, match=r"model = 'SRGAN'"):
        load_test_options(write(tmp_path, text.replace("model: IRN+", "model: SRGAN")))


def _tiny_images(folder: Path, size: int, count: int = 2) -> Path:
    import torch

    from flowlearn.images.io import write_image

    g = torch.Generator().manual_seed(0)
    for i in range(count):
        coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
        image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
        write_image(folder / f"{i}.png", image[0].clamp(0, 1))
    return folder


@pytest.mark.parametrize("name", [n for n in ORIGINAL_FILES if n.startswith("test")])
def test_cli_test_accepts_original_test_option_files(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from flowlearn import IRN
    from flowlearn.cli import main
    from flowlearn.irn.checkpoint import to_official

    path = shared_path("fixtures", "irn_options", name)
    scale = int(name.split("_x")[1][0])
    assert main(["irn", "test", "--config", str(path), "--data", str(tmp_path)]) == 1
    assert "path.pretrain_model_G" in capsys.readouterr().err  # the authors' placeholder
    net = IRN(scale, blocks=[8] * (scale.bit_length() - 1), growth=2)
    torch.save(to_official(net), tmp_path / "weights.pth")
    data = _tiny_images(tmp_path / "hr", 32, count=1)
    argv = ["irn", "test", "--config", str(path), "--model", str(tmp_path / "weights.pth")]
    assert main([*argv, "--data", str(data), "--draws", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"×{scale}" in out and "mean" in out


@pytest.mark.parametrize("name", [n for n in ORIGINAL_FILES if n.startswith("train")])
def test_cli_train_accepts_original_train_option_files(name: str, tmp_path: Path) -> None:
    import torch

    from flowlearn import IRN
    from flowlearn.cli import main
    from flowlearn.irn.checkpoint import to_official

    path = shared_path("fixtures", "irn_options", name)
    scale = int(name.split("_x")[1][0])
    levels = scale.bit_length() - 1
    blocks = f"[{', '.join(['1'] * levels)}]"
    data = _tiny_images(tmp_path / "hr", 160, count=1)
    argv = ["irn", "train", "--config", str(path), "--data", str(data), "--quiet"]
    argv += ["--output", str(tmp_path / "run"), "--steps", "1", "--device", "cpu"]
    for setting in (
        f"model.blocks={blocks}",
        "model.growth=2",
        "data.batch_size=2",
        "data.workers=0",
        "run.tensorboard=false",
        "run.validate_every=0",
    ):
        argv += ["--set", setting]
    if "IRN+" in name:  # the original's 144x144 patches and VGG-style discriminator
        torch.save(to_official(IRN(4, blocks=[1, 1], growth=2)), tmp_path / "IRN_x4.pth")
        argv += ["--set", f"model.init={tmp_path / 'IRN_x4.pth'}", "--set", "gan.channels=2"]
        argv += ["--set", "gan.perceptual_weight=0"]  # no VGG19 weights here
    else:
        argv += ["--set", f"data.patch_size={4 * scale}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    assert (tmp_path / "run" / "model.pt").is_file()


def test_how_to_configuration_example_loads(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "how-to" / "train-irn.md").read_text()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = load_config(write(tmp_path, block))
    assert (cfg.model.scale, cfg.data.patch_size, cfg.optim.steps) == (4, 144, 500_000)
    assert (cfg.data.prescale, cfg.data.recolour, cfg.run.shards) == (1.0, 0.0, None)
