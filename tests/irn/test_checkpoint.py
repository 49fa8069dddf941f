"""Tests of `flowlearn.irn.checkpoint`: one `load` for every kind of source, one `save`."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import flowlearn.irn
from flowlearn.irn import checkpoint
from flowlearn.irn.checkpoint import (
    FORMAT,
    SHIPPED_FORMAT,
    TRAINING_FORMAT,
    VERSION,
    CheckpointError,
    ModelNotAvailableError,
    available_models,
    load,
    model_info,
    save,
    to_official,
)
from flowlearn.irn.model import IRN
from flowlearn.layers.haar import haar_kernel
from tests.conftest import tiny_irn

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def assert_same_weights(a: IRN, b: IRN) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for flowlearn/irn/weights/ holding a tiny x2 model (never a trained one)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    save(tiny_irn(2), folder / "irn_x2.safetensors", metadata={"steps": 7}, dtype=torch.float16)
    monkeypatch.setattr(checkpoint, "weights_dir", lambda: folder)
    return folder


# ------------------------------------------------------------------------------ every source


def _flowlearn_pt(net: IRN, folder: Path) -> Any:
    return save(net, folder / "model.pt")


def _safetensors(net: IRN, folder: Path) -> Any:
    return save(net, folder / "model.safetensors")


def _official_pth(net: IRN, folder: Path) -> Any:
    torch.save(to_official(net), folder / "IRN_x4.pth")
    return folder / "IRN_x4.pth"


def _official_wrapped(net: IRN, folder: Path) -> Any:
    prefixed = OrderedDict((f"module.{k}", v) for k, v in to_official(net).items())
    torch.save({"state_dict": prefixed}, folder / "wrapped.pth")
    return folder / "wrapped.pth"


def _state_dict_pt(net: IRN, folder: Path) -> Any:
    torch.save(net.state_dict(), folder / "state.pt")  # flowlearn's keys: no Haar filters
    return folder / "state.pt"


def _state_dict_safetensors(net: IRN, folder: Path) -> Any:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / "s.safetensors")
    return folder / "s.safetensors"


def _training_checkpoint(net: IRN, folder: Path) -> Any:
    state = {"format": TRAINING_FORMAT, "version": 1, "model_config": net.config,
             "model": net.state_dict(), "step": 3, "seconds": 1.5, "config": {}}  # fmt: skip
    torch.save(state, folder / "checkpoint.pt")
    return folder / "checkpoint.pt"


def _loaded_dict(net: IRN, folder: Path) -> Any:
    return to_official(net)


SOURCES: dict[str, Callable[[IRN, Path], Any]] = {
    "flowlearn .pt": _flowlearn_pt,
    "safetensors": _safetensors,
    "original .pth": _official_pth,
    "original, wrapped, module.": _official_wrapped,
    "state_dict .pt": _state_dict_pt,
    "state_dict .safetensors": _state_dict_safetensors,
    "training checkpoint": _training_checkpoint,
    "loaded dict": _loaded_dict,
}


@pytest.mark.parametrize("stored", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(SOURCES))
def test_load_every_source_kind_and_stored_dtype(
    kind: str, stored: torch.dtype, tmp_path: Path
) -> None:
    net = tiny_irn(4, blocks=[2, 1]).to(stored)
    source = SOURCES[kind](net, tmp_path)
    model = load(source, scale=4)
    assert model.config == net.config and not model.training
    expected = net.state_dict()
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32, key
        assert torch.equal(value, expected[key].float()), key  # exactly the stored values
    double = load(source, dtype=torch.float64)
    assert {p.dtype for p in double.parameters()} == {torch.float64}
    hr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y32, y64 = model(hr)[0], double(hr.double())[0]
    torch.testing.assert_close(y32, y64.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("stored", DTYPES, ids=str)
def test_load_shipped_name_any_stored_dtype(
    weights: Path, stored: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = tiny_irn(4)
    save(net, weights / "irn_x4.safetensors", dtype=stored)
    expected = {k: v.to(stored).float() for k, v in net.state_dict().items()}
    for name in ("x4", "X4", 4):
        model = load(name)
        assert not model.training
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert {p.dtype for p in load("x2", dtype=torch.bfloat16).parameters()} == {torch.bfloat16}


def test_load_is_the_package_entry_point() -> None:
    assert flowlearn.irn.load is load and flowlearn.irn.save is save


def test_load_official_fixture(irn_ref: dict[str, Any]) -> None:
    net = load(irn_ref["state_dict"])
    scale = irn_ref["config"]["scale"]
    assert net.config == {"scale": scale, "blocks": [8] * (scale // 2), "clamp": 1.0,
                          "growth": 32, "channels": 3}  # fmt: skip
    with torch.no_grad():
        y, _ = net(irn_ref["x"])
    torch.testing.assert_close(y, irn_ref["forward_out"], atol=1e-5, rtol=0)


def test_to_official_layout_matches_fixture(irn_ref: dict[str, Any]) -> None:
    reference = irn_ref["state_dict"]
    official = to_official(load(reference))
    assert isinstance(official, OrderedDict)
    assert list(official) == list(reference)  # same keys in the same order, Haar included
    for key, value in reference.items():
        assert official[key].shape == value.shape, key
        assert torch.equal(official[key], value), key


def test_load_safetensors_recognised_by_content_not_name(tmp_path: Path) -> None:
    net = tiny_irn(2)
    save(net, tmp_path / "model.safetensors")
    for name in ("model.pt", "weights.bin", "no_suffix"):
        (tmp_path / name).write_bytes((tmp_path / "model.safetensors").read_bytes())
        assert_same_weights(net, load(tmp_path / name))
    save(net, tmp_path / "torch.pth")
    (tmp_path / "torch.safetensors").write_bytes((tmp_path / "torch.pth").read_bytes())
    assert_same_weights(net, load(tmp_path / "torch.safetensors"))  # a PyTorch file, misnamed


# ------------------------------------------------------------------------------ errors


def _message(source: Any, **kwargs: Any) -> str:
    with pytest.raises(CheckpointError) as info:
        load(source, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "weights_only" not in text  # one line, never PyTorch's advice
    return text


def test_load_text_file_is_one_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "model.pt"
    text.write_text("model: irn_x4\nsteps: 5000\n")
    message = _message(text)
    assert message.startswith(f"{text} is a text file ('model: irn_x4'")
    assert "expected a shipped model name (x2, x4), a flowlearn checkpoint" in message
    binary = tmp_path / "noise.bin"
    binary.write_bytes(bytes(range(200, 256)) * 4)
    assert "neither a PyTorch nor a safetensors file" in _message(binary)


def test_load_empty_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    assert _message(tmp_path / "empty.pt").startswith(f"{tmp_path / 'empty.pt'} is empty (0 bytes)")
    net = tiny_irn(2)
    for name in ("m.pt", "m.safetensors"):
        data = save(net, tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
    assert "is a truncated PyTorch file" in _message(tmp_path / "cut_m.pt")
    assert "is a damaged safetensors file" in _message(tmp_path / "cut_m.safetensors")
    head = (tmp_path / "m.safetensors").read_bytes()[:100]  # the header is cut off
    (tmp_path / "head.safetensors").write_bytes(head)
    assert "is a truncated safetensors file" in _message(tmp_path / "head.safetensors")
    torch.save(net.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pt").read_bytes()
    (tmp_path / "legacy_cut.pt").write_bytes(data[: len(data) // 2])
    assert "is a truncated PyTorch file" in _message(tmp_path / "legacy_cut.pt")


class _Custom:
    pass


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"format": FORMAT, "object": _Custom()}, tmp_path / "evil.pt")
    assert "holds pickled Python objects besides tensors" in _message(tmp_path / "evil.pt")


def test_load_missing_file_folder_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model file .*nothing\.pt does not exist"):
        load(tmp_path / "nothing.pt")
    assert "is a folder, not a model file" in _message(tmp_path)
    with pytest.raises(ValueError, match=r"floating-point torch\.dtype"):
        load(to_official(tiny_irn()), dtype=torch.int64)
    with pytest.raises(TypeError, match="got a list"):
        load([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["flowlearn .pt", "safetensors", "original .pth"])
def test_load_wrong_scale(kind: str, tmp_path: Path) -> None:
    source = SOURCES[kind](tiny_irn(2), tmp_path)
    assert _message(source, scale=4).endswith("holds a x2 model, expected scale 4")


def test_load_state_dict_mismatches() -> None:
    state = to_official(tiny_irn())
    missing = OrderedDict(state)
    del missing["operations.1.G.conv3.bias"]
    assert "missing keys: operations.1.G.conv3.bias" in _message(missing)
    extra = OrderedDict(state, foo=torch.zeros(1))
    assert "not an IRN state dict (unexpected keys foo)" in _message(extra)
    shaped = OrderedDict(state)
    shaped["operations.1.F.conv5.bias"] = torch.zeros(4)
    assert "wrong shapes: operations.1.F.conv5.bias (4,) (expected (3,))" in _message(shaped)
    haar = OrderedDict(state)
    haar["operations.0.haar_weights"] = haar_kernel(3) * 0.25
    assert "operations.0.haar_weights (12, 1, 2, 2) is not the fixed ±1 Haar" in _message(haar)
    ints = OrderedDict(state)
    ints["operations.1.F.conv1.bias"] = torch.zeros(4, dtype=torch.int64)
    assert "not floating-point tensors: operations.1.F.conv1.bias" in _message(ints)
    assert "expected a shipped model name" in _message({"format": "other"})


def test_load_leaves_input_and_rng_alone() -> None:
    state = to_official(tiny_irn())
    keys = list(state)
    rng = torch.get_rng_state()
    load(state)
    assert list(state) == keys  # the Haar entries were not removed from the caller's dict
    assert torch.equal(torch.get_rng_state(), rng)


def test_load_newer_versions_and_broken_headers(tmp_path: Path) -> None:
    net = tiny_irn()
    payload = torch.load(save(net, tmp_path / "m.pt"), weights_only=True)
    torch.save({**payload, "version": VERSION + 1}, tmp_path / "new.pt")
    assert "flowlearn checkpoint of version 2; this flowlearn reads up to 1" in _message(
        tmp_path / "new.pt"
    )
    state = dict(payload["state_dict"])
    state.pop("operations.1.H.conv1.weight")
    torch.save({**payload, "state_dict": state}, tmp_path / "bad.pt")
    assert "missing keys: operations.1.H.conv1.weight" in _message(tmp_path / "bad.pt")
    src = save(net, tmp_path / "m.safetensors")
    with safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()["flowlearn"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    def rewrite(name: str, **change: Any) -> Path:
        save_file(
            tensors, tmp_path / name, metadata={"flowlearn": json.dumps({**header, **change})}
        )
        return tmp_path / name

    assert "of version 2" in _message(rewrite("v2.safetensors", version=2))
    invalid = _message(rewrite("c.safetensors", config={"scale": 3}))
    assert "has an invalid config {'scale': 3}" in invalid
    other = _message(rewrite("g.safetensors", config={**net.config, "growth": 8}))
    assert "does not match IRN(scale=2, blocks=[1], clamp=1.0, growth=8" in other
    assert "is not a flowlearn header" in _message(rewrite("f.safetensors", format="x"))


# ------------------------------------------------------------------------------ saving


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_save_load_round_trip(suffix: str, tmp_path: Path) -> None:
    net = tiny_irn(4, blocks=[2, 1])
    meta = {"step": 10, "note": "test", "psnr": [30.5, 31.0]}
    path = save(net, tmp_path / f"model{suffix}", metadata=meta)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert_same_weights(net, load(path))
    info = model_info(path)
    assert info["config"] == net.config and info["metadata"] == meta
    assert info["version"] == VERSION and info["dtype"] == "float32"
    assert info["format"] == (SHIPPED_FORMAT if suffix == ".safetensors" else FORMAT)
    if suffix != ".safetensors":
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == FORMAT and raw["config"] == net.config
        assert "operations.0.haar_weights" not in raw["state_dict"]


def test_save_float16_export(tmp_path: Path) -> None:
    net = tiny_irn(4)
    path = save(net, tmp_path / "m.safetensors", dtype=torch.float16)
    with safe_open(str(path), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    n_weights = sum(p.numel() for p in net.state_dict().values())
    assert 2 * n_weights < path.stat().st_size < 2 * n_weights + 64 * 1024
    assert model_info(path)["dtype"] == "float16"
    loaded = load(path)
    for (key, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(b, a.half().float()), key  # exactly the float16 rounding
        torch.testing.assert_close(b, a, rtol=2.0**-11, atol=2.0**-24)


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    net = tiny_irn(2)
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        save(net, tmp_path / "m.ckpt")
    for meta in ({"when": object()}, {"psnr": float("nan")}):
        with pytest.raises(ValueError, match="plain JSON values"):
            save(net, tmp_path / "m.safetensors", metadata=meta)
    with torch.no_grad():
        next(net.parameters())[0] = 1e6
    with pytest.raises(ValueError, match=r"does not fit in torch\.float16"):
        save(net, tmp_path / "m.safetensors", dtype=torch.float16)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_to_official_round_trip() -> None:
    net = tiny_irn(4)
    assert_same_weights(net, load(to_official(net), scale=4))


# ------------------------------------------------------------------------------ shipped list


def test_available_models_lists_shipped_files(weights: Path) -> None:
    (weights / "notes.txt").write_text("not a model")
    (weights / "irn_x2.pt").write_bytes(b"")  # .safetensors wins over .pt of the same scale
    save(tiny_irn(4), weights / "irn_x4.pt")
    models = available_models()
    assert list(models) == ["x2", "x4"]
    assert models["x2"].name == "irn_x2.safetensors" and models["x4"].name == "irn_x4.pt"
    assert load("x4").config == tiny_irn(4).config


def test_missing_shipped_model_lists_available(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotAvailableError) as info:
        load("x4")
    assert str(info.value) == "no shipped model 'x4' in this installation; available: x2"
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="named by its scale"):
        load(0)
    monkeypatch.setattr(checkpoint, "weights_dir", lambda: tmp_path / "absent")
    assert available_models() == {}
    with pytest.raises(ModelNotAvailableError, match=r"available: none$"):
        load(2)


def test_model_info_by_name_and_of_other_kinds(weights: Path, tmp_path: Path) -> None:
    info = model_info("x2")
    assert info["kind"] == "flowlearn safetensors model" and info["dtype"] == "float16"
    assert info["config"] == tiny_irn(2).config and info["metadata"] == {"steps": 7}
    assert info["file_size"] == (weights / "irn_x2.safetensors").stat().st_size
    official = model_info(_official_pth(tiny_irn(4), tmp_path))
    assert official["kind"] == "state dict of the original IRN code"
    assert official["config"]["blocks"] == [1, 1] and official["metadata"] == {}
    training = model_info(_training_checkpoint(tiny_irn(2), tmp_path))
    assert training["metadata"] == {"step": 3, "seconds": 1.5, "training_config": {}}
