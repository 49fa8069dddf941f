from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from flowlearn.checks import jitter_parameters
from flowlearn.irn import IRN, CheckpointError, load_irn
from flowlearn.irn.checkpoint import FORMAT, VERSION
from flowlearn.layers.haar import haar_kernel
from tests.conftest import shared_path

FIXTURES = ("fixtures", "irn_reference")


@pytest.fixture(scope="module")
def x4_file() -> dict[str, Any]:
    return torch.load(shared_path(*FIXTURES, "irn_x4_seed0.pt"), weights_only=True)  # type: ignore[no-any-return]


def small_irn(scale: int = 2, blocks: list[int] | None = None) -> IRN:
    torch.manual_seed(0)
    net = IRN(scale, blocks=blocks or [1] * (scale.bit_length() - 1), growth=4)
    jitter_parameters(net, scale=0.05)
    return net


def assert_same_weights(a: IRN, b: IRN) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_from_official_fixture_x4(x4_file: dict[str, Any]) -> None:
    net = IRN.from_official(x4_file["state_dict"])
    assert net.config == {"scale": 4, "blocks": [8, 8], "clamp": 1.0, "growth": 32, "channels": 3}
    with torch.no_grad():
        y, _ = net(x4_file["x"])
    torch.testing.assert_close(y, x4_file["forward_out"], atol=1e-5, rtol=0)


def test_from_official_fixture_x2_prefix(x4_file: dict[str, Any]) -> None:
    x2 = torch.load(shared_path(*FIXTURES, "irn_x2_seed0.pt"), weights_only=True)
    state = {k: x4_file["state_dict"][k] for k in x2["state_dict_keys"]}
    net = IRN.from_official(state, scale=2)
    assert net.config["blocks"] == [8]
    with torch.no_grad():
        y, _ = net(x2["x"])
    torch.testing.assert_close(y, x2["forward_out"], atol=1e-5, rtol=0)


def test_to_official_layout_matches_fixture(x4_file: dict[str, Any]) -> None:
    reference = x4_file["state_dict"]
    official = IRN.from_official(reference).to_official()
    assert isinstance(official, OrderedDict)
    assert list(official) == list(reference)  # same keys in the same order, Haar included
    for key, value in reference.items():
        assert official[key].shape == value.shape, key
        assert torch.equal(official[key], value), key
    assert official["operations.9.haar_weights"].shape == (48, 1, 2, 2)


def test_official_roundtrip() -> None:
    net = small_irn(4)
    back = IRN.from_official(net.to_official(), scale=4)
    assert_same_weights(net, back)


def test_from_official_file_with_wrappers(tmp_path: Path) -> None:
    net = small_irn()
    state = net.to_official()
    prefixed = OrderedDict((f"module.{k}", v) for k, v in state.items())
    for i, obj in enumerate([state, prefixed, {"state_dict": state}, {"params": prefixed}]):
        path = tmp_path / f"net{i}.pth"
        torch.save(obj, path)
        assert_same_weights(net, IRN.from_official(path))
        assert_same_weights(net, load_irn(path))


def test_from_official_wrong_scale() -> None:
    state = small_irn(2).to_official()
    with pytest.raises(CheckpointError, match="checkpoint is for scale 2, expected 4"):
        IRN.from_official(state, scale=4)


def test_from_official_missing_unexpected_and_shapes() -> None:
    state = small_irn().to_official()
    missing = OrderedDict(state)
    del missing["operations.1.G.conv3.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: operations\.1\.G\.conv3\.bias"):
        IRN.from_official(missing)
    extra = OrderedDict(state, foo=torch.zeros(1))
    with pytest.raises(CheckpointError, match="unexpected keys foo"):
        IRN.from_official(extra)
    shaped = OrderedDict(state)
    shaped["operations.1.F.conv5.bias"] = torch.zeros(4)
    with pytest.raises(
        CheckpointError, match=r"wrong shapes: operations\.1\.F\.conv5\.bias \(4,\)"
    ):
        IRN.from_official(shaped)


def test_from_official_bad_haar_weights() -> None:
    state = small_irn().to_official()
    state["operations.0.haar_weights"] = haar_kernel(3) * 0.25
    with pytest.raises(CheckpointError, match=r"operations\.0\.haar_weights .* not the fixed"):
        IRN.from_official(state)


def test_from_official_rejects_non_irn() -> None:
    with pytest.raises(CheckpointError, match="not an IRN state dict"):
        IRN.from_official({"conv.weight": torch.zeros(1)})


def test_from_official_leaves_input_and_rng_alone() -> None:
    state = small_irn().to_official()
    keys = list(state)
    rng = torch.get_rng_state()
    IRN.from_official(state)
    assert list(state) == keys  # the Haar entries were not removed from the caller's dict
    assert torch.equal(torch.get_rng_state(), rng)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    net = small_irn(4, [2, 1])
    path = tmp_path / "model.pt"
    net.save(path, metadata={"step": 10, "note": "test", "psnr": [30.5, 31.0]})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == VERSION
    assert raw["config"] == net.config
    assert raw["metadata"] == {"step": 10, "note": "test", "psnr": [30.5, 31.0]}
    assert "operations.0.haar_weights" not in raw["state_dict"]
    assert_same_weights(net, IRN.load(path))
    assert_same_weights(net, load_irn(path, scale=4))
    assert_same_weights(net, load_irn(str(path)))


def test_save_load_keeps_float64(tmp_path: Path) -> None:
    net = small_irn().double()
    net.save(tmp_path / "m.pt")
    loaded = IRN.load(tmp_path / "m.pt")
    assert next(loaded.parameters()).dtype == torch.float64
    assert_same_weights(net, loaded)


def test_load_wrong_scale(tmp_path: Path) -> None:
    small_irn(2).save(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="checkpoint is for scale 2, expected 4"):
        IRN.load(tmp_path / "m.pt", scale=4)
    with pytest.raises(CheckpointError, match="checkpoint is for scale 2, expected 4"):
        load_irn(tmp_path / "m.pt", scale=4)


def test_load_truncated_file(tmp_path: Path) -> None:
    small_irn().save(tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is not a readable checkpoint"):
        load_irn(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt is not a readable checkpoint"):
        IRN.load(tmp_path / "junk.pt")


class _Custom:
    pass


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"format": FORMAT, "object": _Custom()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_irn(tmp_path / "evil.pt")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_irn(tmp_path / "nothing.pt")


def test_load_official_file_with_irn_load(tmp_path: Path) -> None:
    torch.save(small_irn().to_official(), tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="not a flowlearn IRN checkpoint"):
        IRN.load(tmp_path / "official.pth")


def test_load_newer_version_and_bad_state(tmp_path: Path) -> None:
    net = small_irn()
    net.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**payload, "version": VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="checkpoint version 2"):
        IRN.load(tmp_path / "new.pt")
    state = dict(payload["state_dict"])
    state.pop("operations.1.H.conv1.weight")
    torch.save({**payload, "state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: operations\.1\.H\.conv1\.weight"):
        IRN.load(tmp_path / "bad.pt")


def test_save_rejects_unpicklable_metadata(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"metadata\['when'\] is a object"):
        small_irn().save(tmp_path / "m.pt", metadata={"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_load_irn_accepts_loaded_dicts() -> None:
    net = small_irn()
    assert_same_weights(net, load_irn(net.to_official()))
