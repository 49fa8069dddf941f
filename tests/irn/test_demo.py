from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from flowlearn.cli import main
from flowlearn.images.io import read_image, write_image
from flowlearn.irn import checkpoint
from flowlearn.irn.demo import _zoom_window, bundled_image, run_demo
from tests.conftest import smooth_image, tiny_irn

ROW = re.compile(
    r"^×(\d)\s+(IRN \(z seed \d+\)|Bicubic & Bicubic)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$"
)


def use_weights(folder: Path, monkeypatch: pytest.MonkeyPatch, scales: tuple[int, ...]) -> None:
    folder.mkdir(exist_ok=True)
    for s in scales:  # tiny untrained models standing in for shipped ones (never shipped)
        net = tiny_irn(s, seed=s, jitter=0.01)
        checkpoint.save(net, folder / f"irn_x{s}.safetensors", dtype=torch.float16)
    monkeypatch.setattr(checkpoint, "weights_dir", lambda: folder)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return write_image(tmp_path / "photo.png", smooth_image(48, 40, 0))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line]


def test_demo_end_to_end(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, (2, 4))
    out = tmp_path / "out"
    assert main(["demo", str(photo), "--out", str(out), "--seed", "3"]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if ROW.match(line)]
    assert [ROW.match(r).groups() for r in rows] == [  # type: ignore[union-attr]
        ("2", "IRN (z seed 3)"),
        ("2", "Bicubic & Bicubic"),
        ("4", "IRN (z seed 3)"),
        ("4", "Bicubic & Bicubic"),
    ]
    assert "×4: IRN downscaling to 10×12" in captured.err  # progress messages
    names = ["demo.png", "hr.png"] + [
        f"x{s}_{m}_{k}.png" for s in (2, 4) for m in ("irn", "bicubic") for k in ("lr", "sr")
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary files left
    with Image.open(out / "demo.png") as figure:
        assert figure.format == "PNG" and figure.width > 500
    assert read_image(out / "x4_irn_lr.png")[0].shape == (3, 12, 10)
    assert read_image(out / "x2_bicubic_sr.png")[0].shape == (3, 48, 40)


def test_demo_metrics_match_protocol_and_seed(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, (2,))
    a = run_demo(photo, out=tmp_path / "a", scales=[2], seed=5)
    b = run_demo(photo, out=tmp_path / "b", scales=[2], seed=5)
    assert a.rows == b.rows
    assert (tmp_path / "a" / "x2_irn_sr.png").read_bytes() == (
        tmp_path / "b" / "x2_irn_sr.png"
    ).read_bytes()
    bicubic = next(r for r in a.rows if r["method"] == "Bicubic")
    assert 20 < float(bicubic["psnr_y"]) < 60  # a smooth photo survives bicubic well
    c = run_demo(photo, out=tmp_path / "c", scales=[2], seed=6)
    assert c.rows[0]["psnr_y"] != a.rows[0]["psnr_y"]  # another z draw


def test_demo_default_photo_and_missing_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, (2,))
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "read astronaut_256.png (256×256)" in captured.err
    assert "skipping ×4: no shipped model 'x4' in this installation; available: x2" in captured.err
    assert "×4 skipped: no shipped model 'x4'" in captured.out
    assert (out / "demo.png").is_file() and not (out / "x4_irn_lr.png").exists()


def test_bundled_photo_is_shipped() -> None:
    image, note = read_image(bundled_image())
    assert image.shape == (3, 256, 256) and note is None
    assert bundled_image().parent.name == "weights"


def test_demo_without_models_is_an_error(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, ())
    assert main(["demo", str(photo), "--out", str(tmp_path / "out")]) == 1
    errors = error_lines(capsys.readouterr().err)
    assert errors == [
        "flowlearn demo: error: no shipped IRN model for ×2 or ×4 in this installation; "
        "available: none"
    ]


def test_demo_bad_image_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, (2,))
    missing = tmp_path / "nope.png"
    assert main(["demo", str(missing), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"flowlearn demo: error: cannot read image {missing}: no such file"]
    assert not (tmp_path / "out").exists()


def test_demo_bad_inputs_one_line_each(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, (2,))
    tiny = write_image(tmp_path / "tiny.png", torch.rand(3, 20, 40))
    assert main(["demo", str(tiny), "--out", str(tmp_path / "o1"), "--scales", "2"]) == 1
    assert error_lines(capsys.readouterr().err) == [
        "flowlearn demo: error: tiny.png is 40×20 after cropping to a multiple of 2; "
        "the demo needs at least 32×32"
    ]
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert main(["demo", str(text), "--out", str(tmp_path / "o2")]) == 1
    assert len(error_lines(capsys.readouterr().err)) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", str(photo), "--out", str(blocker), "--scales", "2"]) == 1
    assert len(error_lines(capsys.readouterr().err)) == 1


def test_demo_crops_to_largest_scale_with_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_weights(tmp_path / "weights", monkeypatch, (2, 4))
    odd = write_image(tmp_path / "odd.png", torch.rand(3, 35, 42))
    assert main(["demo", str(odd), "--out", str(tmp_path / "out")]) == 0
    assert "cropped 42×35 to 40×32 (a multiple of 4" in capsys.readouterr().err
    assert read_image(tmp_path / "out" / "hr.png")[0].shape == (3, 32, 40)


def test_zoom_window_finds_detail() -> None:
    hr = torch.full((3, 64, 64), 0.5)
    hr[:, 32:48, 8:24] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    top, left = _zoom_window(hr, 16, 4)
    assert (top, left) == (32, 8)
