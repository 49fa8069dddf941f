from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowlearn.images import io as images
from flowlearn.images.io import (
    ImageError,
    atomic_write,
    list_images,
    read_image,
    write_figure,
    write_image,
    write_json,
)


def _png16_rgb(path: Path, values: np.ndarray) -> None:
    # A minimal 16-bit RGB PNG (Pillow cannot write one).
    h, w, _ = values.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_target_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_file() and tmp != target
        assert target.read_bytes() == b"old"  # untouched until the block ends
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_error_leaves_nothing(tmp_path: Path) -> None:
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="half"):
        with atomic_write(kept) as tmp:
            tmp.write_bytes(b"half written")
            raise RuntimeError("half")
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "new.bin"):
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin"]
    assert kept.read_bytes() == b"old"
    with pytest.raises(OSError), atomic_write(tmp_path / "folder") as tmp:
        tmp.write_bytes(b"x")
        (tmp_path / "folder").mkdir()  # the rename itself fails: still nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "kept.bin"]


def test_atomic_write_refuses_a_folder_or_a_missing_folder_before_writing(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="folder; expected a file name"):
        with atomic_write(tmp_path / "folder"):
            raise AssertionError("the block must not run")
    missing = tmp_path / "missing" / "out.png"
    with pytest.raises(FileNotFoundError, match=f"its folder {tmp_path / 'missing'} does not"):
        with atomic_write(missing):
            raise AssertionError("the block must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_write_json_creates_the_folder_and_never_half_writes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "result.json"
    assert write_json(path, {"psnr": [38.9, 36.3]}, indent=1) == path
    assert json.loads(path.read_text()) == {"psnr": [38.9, 36.3]}
    assert path.read_text().endswith("]\n}\n") and '\n "psnr"' in path.read_text()
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"model": object()})
    assert json.loads(path.read_text()) == {"psnr": [38.9, 36.3]}  # the old content stays
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask


def test_write_then_read_roundtrip_is_exact(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 7, 9), generator=g)
    path = write_image(tmp_path / "a.png", pixels.float() / 255)
    image, note = read_image(path)
    assert note is None
    assert image.dtype == torch.float32 and image.shape == (3, 7, 9)
    assert torch.equal(torch.round(image * 255).long(), pixels)
    assert _leftovers(tmp_path) == []


def test_write_image_rounds_and_clamps_like_tensor2img(tmp_path: Path) -> None:
    x = torch.tensor([-0.3, 0.2, 100.5 / 255, 101.5 / 255, 1.4], dtype=torch.float64)
    write_image(tmp_path / "r.png", x.view(1, 1, 5).expand(3, 1, 5))
    stored = np.asarray(Image.open(tmp_path / "r.png"))
    assert stored.dtype == np.uint8
    assert stored[0, :, 0].tolist() == [0, 51, 100, 102, 255]  # ties to even, like numpy


def test_write_image_creates_parents_and_accepts_batch_of_one(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x" / "y" / "out.png", torch.rand(1, 3, 4, 5))
    assert path.is_file()
    assert Image.open(path).size == (5, 4)


def test_write_image_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"\.png"):
        write_image(tmp_path / "out.jpg", torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        write_image(tmp_path / "out.png", torch.rand(4, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "out.png", torch.full((3, 2, 2), float("nan")))
    assert not (tmp_path / "out.png").exists()
    assert _leftovers(tmp_path) == []


def test_write_image_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ImageError, match="cannot create folder"):
        write_image(blocker / "out.png", torch.rand(3, 4, 4))
    (tmp_path / "dir.png").mkdir()  # the target is a folder: os.replace fails
    with pytest.raises(ImageError, match=r"dir\.png"):
        write_image(tmp_path / "dir.png", torch.rand(3, 4, 4))
    assert _leftovers(tmp_path) == []


def test_write_image_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keep.png"
    write_image(target, torch.zeros(3, 4, 4))
    before = target.read_bytes()

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(images.Image.Image, "save", broken_save)
    with pytest.raises(ImageError, match="disk full"):
        write_image(target, torch.ones(3, 4, 4))
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_read_greyscale_becomes_rgb_with_note(tmp_path: Path) -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, note = read_image(tmp_path / "g.png")
    assert image.shape == (3, 4, 5)
    assert torch.equal(image[0], image[2]) and torch.equal(image[1], image[2])
    assert torch.equal(torch.round(image[0] * 255).to(torch.uint8), torch.from_numpy(grey))
    assert note is not None and "greyscale" in note


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_read_alpha_is_dropped_with_note(tmp_path: Path, mode: str) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 9, np.uint8)], axis=2)
    Image.fromarray(rgba).convert(mode).save(tmp_path / "a.png")
    image, note = read_image(tmp_path / "a.png")
    expected = Image.fromarray(rgb).convert("L" if mode == "LA" else "RGB").convert("RGB")
    pixels = torch.round(image * 255).byte().permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, np.asarray(expected))
    assert note is not None and "alpha" in note


def test_read_palette_and_bilevel(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    image, note = read_image(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert np.array_equal(torch.round(image * 255).byte().permute(1, 2, 0).numpy(), expected)
    assert note is not None and "palette" in note
    Image.fromarray(np.eye(6, dtype=bool)).save(tmp_path / "b.png")
    image, note = read_image(tmp_path / "b.png")
    assert image[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and image[:, 0, 1].tolist() == [0, 0, 0]
    assert note is not None and "1-bit" in note


def test_read_16bit_grey_keeps_precision(tmp_path: Path) -> None:
    values = np.array([[0, 1, 2, 65535], [30000, 30001, 40000, 12345]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image, note = read_image(tmp_path / "g16.png")
    expected = torch.from_numpy((values / 65535).astype(np.float32))
    assert torch.equal(image[1], expected)
    assert image[0, 0, 1] != image[0, 0, 2]  # steps finer than 1/255 survive
    assert note is not None and "16-bit" in note


def test_read_16bit_colour_is_reported(tmp_path: Path) -> None:
    values = (np.arange(2 * 3 * 3).reshape(2, 3, 3) * 7000).astype(np.uint16)
    _png16_rgb(tmp_path / "c16.png", values)
    image, note = read_image(tmp_path / "c16.png")
    assert image.shape == (3, 2, 3)
    assert torch.allclose(
        image.permute(1, 2, 0), torch.from_numpy(values / 65535).float(), atol=1 / 255
    )
    assert note is not None and "8-bit precision" in note


def test_read_cmyk_and_exif_orientation(tmp_path: Path) -> None:
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    image, note = read_image(tmp_path / "c.jpg")
    assert image.shape == (3, 4, 6)
    assert note is not None and "CMYK" in note
    im = Image.new("RGB", (6, 4), (10, 20, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "o.jpg", exif=exif)
    image, note = read_image(tmp_path / "o.jpg")
    assert image.shape == (3, 6, 4)
    assert note is not None and "orientation 6" in note


def test_read_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("hello")
    Image.new("RGB", (64, 64)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    cases = {
        tmp_path / "missing.png": "no such file",
        tmp_path / "text.png": "not an image",
        tmp_path / "cut.png": "corrupt",
        tmp_path: "folder",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageError) as info:
            read_image(path)
        message = str(info.value)
        assert str(path) in message and reason in message
        assert "\n" not in message
        assert isinstance(info.value, ValueError)


def test_list_images_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["c.webp", "a.PNG", "b.jpeg", "notes.txt", ".hidden.png", "d.tiff"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpeg", "c.webp", "d.tiff"]


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(ImageError, match="no image files"):
        list_images(tmp_path)
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(ImageError, match="not a folder"):
        list_images(tmp_path / "f.png")


def test_write_figure_replaces_the_file_whole_or_not_at_all(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = tmp_path / "figure.png"
    target.write_text("old")
    fig, _ = plt.subplots(figsize=(1, 1))
    with pytest.raises(ValueError, match="bogus"):
        write_figure(target, fig, format="bogus")  # savefig refuses the format
    assert target.read_text() == "old"  # left as it was
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary file
    assert not plt.fignum_exists(fig.number)  # closed all the same
    fig, _ = plt.subplots(figsize=(1, 1))
    write_figure(target, fig, dpi=20)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in target.read_bytes()  # no Matplotlib version in the file
    assert not plt.fignum_exists(fig.number)


def test_json_and_figure_writers_name_a_file_that_stands_for_their_folder(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    expected = f"its folder {blocker} is a file or inside one; expected a folder"
    with pytest.raises(NotADirectoryError, match=expected):
        write_json(blocker / "scores.json", {"psnr": 1.0})
    fig, _ = plt.subplots(figsize=(1, 1))
    with pytest.raises(NotADirectoryError, match=f"its folder {blocker / 'plots'} is a file"):
        write_figure(blocker / "plots" / "curve.png", fig)
    assert not plt.fignum_exists(fig.number)  # closed all the same
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert blocker.read_text() == "a file, not a folder"
