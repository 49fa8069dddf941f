from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import flowlearn.irn.pretrained as pretrained
from flowlearn.checks import jitter_parameters
from flowlearn.images.io import write_image
from flowlearn.irn import IRN, CheckpointError
from flowlearn.irn.pretrained import (
    ModelNotAvailableError,
    available_models,
    is_model_name,
    load_pretrained,
    load_pretrained_file,
    pretrained_info,
    save_pretrained,
)
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[2]


def small_irn(scale: int = 2, seed: int = 0) -> IRN:
    torch.manual_seed(seed)
    net = IRN(scale, blocks=[1] * (scale.bit_length() - 1), growth=4)
    jitter_parameters(net, scale=0.05, seed=seed)
    return net


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in weights folder holding a small x2 model (never a trained one)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    save_pretrained(small_irn(2), folder / "irn_x2.safetensors", metadata={"steps": 7})
    monkeypatch.setattr(pretrained, "weights_dir", lambda: folder)
    return folder


def test_available_models_lists_shipped_files(weights: Path) -> None:
    (weights / "notes.txt").write_text("not a model")
    (weights / "irn_x2.pt").write_bytes(b"")  # .safetensors wins over .pt of the same scale
    small_irn(4).save(weights / "irn_x4.pt")
    models = available_models()
    assert list(models) == ["x2", "x4"]
    assert models["x2"].name == "irn_x2.safetensors"
    assert models["x4"].name == "irn_x4.pt"


def test_available_models_empty_without_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained, "weights_dir", lambda: tmp_path / "absent")
    assert available_models() == {}
    with pytest.raises(ModelNotAvailableError, match=r"available: none$"):
        load_pretrained("x2")


def test_load_pretrained_names_agree(weights: Path) -> None:
    reference = load_pretrained("x2")
    for spec in (2, "2", "X2", " x2 "):
        other = load_pretrained(spec)
        assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), other.parameters()))
    by_class = IRN.pretrained(2)
    assert by_class.config == reference.config
    assert not reference.training
    assert all(p.dtype == torch.float32 for p in reference.parameters())


def test_load_pretrained_missing_lists_available(weights: Path) -> None:
    with pytest.raises(ModelNotAvailableError) as info:
        load_pretrained("x4")
    assert str(info.value) == "no shipped model 'x4' in this installation; available: x2"
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotAvailableError, match="'x4'"):
        IRN.pretrained(4)


@pytest.mark.parametrize("bad", ["x", "x0", "two", "irn_x2.safetensors", 0, -2, True, 2.0])
def test_load_pretrained_bad_name(weights: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="named by its scale"):
        load_pretrained(bad)  # type: ignore[arg-type]


def test_is_model_name() -> None:
    assert is_model_name("x2") and is_model_name("X8")
    assert not is_model_name("x2.pt") and not is_model_name("model") and not is_model_name(2)


def test_save_pretrained_float16_round_trip(tmp_path: Path) -> None:
    net = small_irn(4)
    path = save_pretrained(net, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    n_weights = sum(p.numel() for p in net.state_dict().values())
    assert 2 * n_weights < path.stat().st_size < 2 * n_weights + 64 * 1024
    loaded = load_pretrained_file(path)
    for (key, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == torch.float32, key
        assert torch.equal(b, a.half().float()), key  # exactly the float16 rounding
        torch.testing.assert_close(b, a, rtol=2.0**-11, atol=2.0**-24)
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(hr)[0], net(hr)[0], rtol=0, atol=2e-3)


def test_load_pretrained_dtype_and_device(weights: Path) -> None:
    net = load_pretrained("x2", dtype=torch.float64, device="cpu")
    assert {p.dtype for p in net.parameters()} == {torch.float64}
    assert {p.device.type for p in net.parameters()} == {"cpu"}


def test_pretrained_info_metadata(weights: Path) -> None:
    info = pretrained_info("x2")
    assert info["format"] == "flowlearn.irn.pretrained" and info["version"] == 1
    assert info["dtype"] == "float16"
    assert info["config"] == small_irn(2).config
    assert info["metadata"] == {"steps": 7}
    assert info["file_size"] == (weights / "irn_x2.safetensors").stat().st_size
    assert pretrained_info(weights / "irn_x2.safetensors")["metadata"] == {"steps": 7}


def test_pretrained_info_of_pt_checkpoint(weights: Path) -> None:
    small_irn(4).save(weights / "irn_x4.pt", metadata={"step": 3})
    info = pretrained_info(4)
    assert info["config"]["scale"] == 4 and info["metadata"] == {"step": 3}
    assert load_pretrained(4).config == small_irn(4).config


def test_to_official_round_trip_of_shipped_model(weights: Path) -> None:
    shipped = load_pretrained("x2")
    again = IRN.from_official(shipped.to_official(), scale=2)
    assert again.config == shipped.config
    a, b = shipped.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_save_pretrained_rejects_bad_input(tmp_path: Path) -> None:
    net = small_irn(2)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_pretrained(net, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="plain JSON"):
        save_pretrained(net, tmp_path / "m.safetensors", metadata={"when": object()})
    with pytest.raises(ValueError, match="plain JSON"):
        save_pretrained(net, tmp_path / "m.safetensors", metadata={"psnr": float("nan")})
    with torch.no_grad():
        next(net.parameters())[0] = 1e6
    with pytest.raises(ValueError, match="does not fit in float16"):
        save_pretrained(net, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_load_pretrained_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_file(tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_pretrained_file(corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a flowlearn pretrained model"):
        load_pretrained_file(foreign)


def rewrite_header(src: Path, dst: Path, change: dict[str, object], drop: str = "") -> None:
    with safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()["flowlearn"])
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != drop}
    save_file(tensors, str(dst), metadata={"flowlearn": json.dumps({**header, **change})})


def test_load_pretrained_file_mismatches(weights: Path, tmp_path: Path) -> None:
    src = weights / "irn_x2.safetensors"
    newer = tmp_path / "newer.safetensors"
    rewrite_header(src, newer, {"version": 2})
    with pytest.raises(CheckpointError, match="version 2; this flowlearn reads up to 1"):
        load_pretrained_file(newer)
    other = tmp_path / "other.safetensors"
    rewrite_header(src, other, {"config": {**small_irn(2).config, "growth": 8}})
    with pytest.raises(CheckpointError, match="misshaped"):
        load_pretrained_file(other)
    missing = tmp_path / "missing.safetensors"
    rewrite_header(src, missing, {}, drop="operations.1.F.conv1.weight")
    with pytest.raises(CheckpointError, match=r"missing operations\.1\.F\.conv1\.weight"):
        load_pretrained_file(missing)
    invalid = tmp_path / "invalid.safetensors"
    rewrite_header(src, invalid, {"config": {"scale": 3}})
    with pytest.raises(CheckpointError, match="invalid config"):
        load_pretrained_file(invalid)


def test_weights_folder_is_package_data() -> None:
    folder = ROOT / "flowlearn" / "irn" / "weights"
    assert pretrained.weights_dir().resolve() == folder.resolve()
    assert (folder / "README.md").is_file()
    for path in folder.glob("irn_x*.safetensors"):  # what ships must carry its measured quality
        meta = pretrained_info(path)["metadata"]
        assert meta["set5_psnr_y"] > meta["set5_bicubic_psnr_y"], path.name
        assert not meta["forced_export"], path.name
    for name, path in available_models().items():
        assert load_pretrained(name).scale == int(name[1:]), path.name


# ------------------------------------------------------------------------------ export script


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_sets(tmp_path: Path) -> tuple[Path, Path]:
    generator = torch.Generator().manual_seed(0)
    folders = []
    for name in ("set5", "set14"):
        folder = tmp_path / name
        for i in range(2):
            smooth = torch.rand(1, 3, 8, 8, generator=generator)
            image = torch.nn.functional.interpolate(smooth, size=(32, 32), mode="bilinear")[0]
            write_image(folder / f"{i}.png", image)
        folders.append(folder)
    return folders[0], folders[1]


def test_export_refuses_model_worse_than_bicubic(
    tmp_path: Path,
    tiny_sets: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pretrained, "weights_dir", lambda: tmp_path / "no_weights")
    export = script("export_pretrained")
    run = tmp_path / "model.pt"
    small_irn(2).save(run)  # untrained: its z-sampled reconstruction loses to bicubic
    out = tmp_path / "irn_x2.safetensors"
    argv = [str(run), "--out", str(out), "--set5", str(tiny_sets[0]), "--set14",
            str(tiny_sets[1]), "--draws", "2", "--device", "cpu",
            "--hardware", "test CPU"]  # fmt: skip
    assert export.main([*argv, "--skip-set14"]) == 1
    assert "refusing to export" in capsys.readouterr().err
    assert not out.exists()
    assert export.main([*argv, "--force"]) == 0
    meta = pretrained_info(out)["metadata"]
    assert meta["forced_export"] is True and meta["hardware"] == "test CPU"
    assert meta["scale"] == 2 and meta["blocks"] == [1] and meta["draws"] == 2
    assert meta["set5_psnr_y"] < meta["set5_bicubic_psnr_y"]
    assert {"set14_psnr_y", "set14_psnr_y_std", "set5_ssim_y"} <= set(meta)
    evaluate = script("evaluate_pretrained")
    argv = ["--scales", "2", "4", "--model", f"x2={out}", "--set5", str(tiny_sets[0]),
            "--set14", str(tiny_sets[1]), "--draws", "2", "--device", "cpu"]  # fmt: skip
    assert evaluate.main(argv) == 0
    table = capsys.readouterr().out
    assert "| ×2 | IRN (mean of 2 z draws ± spread) |" in table
    assert "43.99 / 0.9871" in table and "30.24 / 0.8688" in table


def test_export_records_the_training_clock_unless_told_not_to(
    tmp_path: Path, tiny_sets: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained, "weights_dir", lambda: tmp_path / "no_weights")
    export = script("export_pretrained")
    net = small_irn(2)
    run = tmp_path / "checkpoint.pt"  # the layout of flowlearn.irn.train's checkpoints
    torch.save(
        {"format": export.TRAIN_FORMAT, "model_config": dict(net.config),
         "model": net.state_dict(), "step": 7, "seconds": 12.34, "config": {}},
        run,
    )  # fmt: skip
    out = tmp_path / "irn_x2.safetensors"
    argv = [str(run), "--out", str(out), "--set5", str(tiny_sets[0]), "--skip-set14",
            "--draws", "1", "--device", "cpu", "--force"]  # fmt: skip
    assert export.main(argv) == 0
    meta = pretrained_info(out)["metadata"]
    assert meta["steps"] == 7 and meta["wall_time_s"] == pytest.approx(12.3)
    assert export.main([*argv, "--no-wall-time"]) == 0
    meta = pretrained_info(out)["metadata"]
    assert meta["steps"] == 7 and meta["wall_time_s"] is None


@pytest.mark.parametrize("name", ["x2", "x4"])
def test_shipped_model_round_trips_through_the_original_layout(name: str) -> None:
    """The shipped files load into the original code's state-dict layout exactly."""
    assert name in available_models(), f"flowlearn ships IRN {name}"
    shipped = load_pretrained(name)
    official = shipped.to_official()
    fixture = torch.load(
        shared_path("fixtures", "irn_reference", f"irn_{name}_seed0.pt"), weights_only=True
    )
    # the key names of the original code's checkpoint of this scale (Haar kernels included)
    keys = fixture["state_dict"] if "state_dict" in fixture else fixture["state_dict_keys"]
    assert list(official) == list(keys)
    again = IRN.from_official(official, scale=shipped.scale)
    a, b = shipped.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(shipped(x)[0], again(x)[0])
