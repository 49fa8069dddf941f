r"""Reading and writing images as `(3, H, W)` float tensors in [0, 1], with Pillow.

Every conversion that changes what was in the file (greyscale to RGB, alpha dropped, palette
expanded, 16 bits scaled) is reported in a note next to the tensor rather than done silently, and
every failure is one `ImageError` naming the file and the reason. Files are written atomically
(`atomic_write`: a temporary file in the destination folder is renamed over the target), so a
crash never leaves a half-written file behind; `write_json` does the same for the JSON
results that the command line and the benchmarks store next to images, and `write_figure` for
Matplotlib figures.

Pixel values follow the super-resolution test protocol: 8-bit values $v$ are read as $v / 255$,
16-bit values as $v / 65535$ (kept at 16-bit precision), and written as
$\mathrm{round}(255\,\mathrm{clamp}(x, 0, 1))$.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

from flowlearn.images.metrics import to_uint8

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "atomic_write",
    "list_images",
    "make_folder",
    "read_image",
    "read_png_text",
    "write_figure",
    "write_image",
    "write_json",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File name endings (lower case) that `list_images` treats as images."""

_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    r"""An image file could not be listed, read or written; the message names file and reason.

    Examples:
        >>> try:
        ...     read_image("no/such/file.png")
        ... except ImageError as err:
        ...     print(err)
        cannot read image no/such/file.png: no such file
    """


def _one_line(err: BaseException) -> str:
    text = (getattr(err, "strerror", None) or str(err) or type(err).__name__).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)


def _to_rgb(im: Image.Image, sixteen_bit_colour: bool) -> tuple[np.ndarray, list[str]]:
    # Returns float32 (H, W, 3) in [0, 1] and the notes on what was converted.
    mode = im.mode
    if mode == "RGB":
        notes = []
        if sixteen_bit_colour:
            notes.append("16-bit colour image read at 8-bit precision (Pillow decodes it so)")
        return np.asarray(im, dtype=np.float32) / 255, notes
    if mode == "RGBA":
        rgba = np.asarray(im)
        notes = ["alpha channel dropped (RGBA image read as RGB)"]
        if sixteen_bit_colour:
            notes.append("16-bit colour image read at 8-bit precision (Pillow decodes it so)")
        return rgba[:, :, :3].astype(np.float32) / 255, notes
    if mode == "L":
        return _grey_to_rgb(np.asarray(im, dtype=np.float32) / 255), [
            "greyscale image converted to RGB (grey copied to R, G and B)"
        ]
    if mode == "LA":
        grey = np.asarray(im.getchannel("L"), dtype=np.float32) / 255
        return _grey_to_rgb(grey), [
            "alpha channel dropped and greyscale converted to RGB (LA image)"
        ]
    if mode == "1":
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255, [
            "black-and-white (1-bit) image converted to RGB"
        ]
    if mode in ("P", "PA"):
        if mode == "PA" or "transparency" in im.info:
            rgba = np.asarray(im.convert("RGBA"))
            return rgba[:, :, :3].astype(np.float32) / 255, [
                "palette image converted to RGB, transparency dropped"
            ]
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255, [
            "palette image converted to RGB"
        ]
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im).astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"integer image (mode {mode}) with values outside 0..65535")
        grey = (values / 65535).astype(np.float32)
        return _grey_to_rgb(grey), [
            "16-bit greyscale image scaled to [0, 1] (16-bit precision kept) and converted to RGB"
        ]
    if mode == "F":
        raise ImageError("floating-point images (mode F) are not supported: their range is unknown")
    try:
        rgb = im.convert("RGB")
    except ValueError as err:
        raise ImageError(f"cannot convert mode {mode} to RGB ({_one_line(err)})") from None
    return np.asarray(rgb, dtype=np.float32) / 255, [f"{mode} image converted to RGB"]


def read_image(path: str | os.PathLike[str]) -> tuple[Tensor, str | None]:
    r"""Read an image file as an RGB float32 tensor in [0, 1].

    Conversions, each reported in the returned note: greyscale and 1-bit → RGB (grey copied to all
    three channels), RGBA/LA/palette transparency → alpha dropped, palette → RGB, 16-bit greyscale
    → divided by 65535 (precision kept), CMYK and other modes → RGB, EXIF orientation applied, the
    first frame of a multi-frame file. Pillow decodes 16-bit *colour* files to 8 bits; the note
    says so.

    Args:
        path: Image file (any format Pillow reads).

    Returns:
        `(image, note)`: `image` is a float32 `(3, H, W)` tensor in [0, 1]; `note` is `None` for
        a plain 8-bit RGB file, otherwise one sentence saying what was converted.

    Raises:
        ImageError: The file is missing, unreadable, not an image, corrupt, or of an unsupported
            kind; the message is one line naming the file and the reason.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_image(f"{folder}/flat.png", torch.full((3, 2, 4), 0.5))
        >>> image, note = read_image(f"{folder}/flat.png")
        >>> image.shape, note
        (torch.Size([3, 2, 4]), None)
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            notes: list[str] = []
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                notes.append(f"first of {frames} frames read")
            # Pillow decodes 16-bit RGB(A) to 8 bits; the raw mode of the tiles tells.
            sixteen_bit_colour = im.mode in ("RGB", "RGBA") and any(
                ";16" in str(tile.args) for tile in im.tile
            )
            im.load()
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            image = im
            if orientation not in (1, None):
                image = ImageOps.exif_transpose(im)
                notes.append(f"EXIF orientation {orientation} applied")
            array, conversions = _to_rgb(image, sixteen_bit_colour)
    except ImageError as err:
        raise ImageError(f"cannot read image {path}: {err}") from None
    except FileNotFoundError:
        raise ImageError(f"cannot read image {path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"cannot read image {path}: it is a folder, not a file") from None
    except PermissionError:
        raise ImageError(f"cannot read image {path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"cannot read image {path}: not an image file (Pillow cannot identify its format)"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(
            f"cannot read image {path}: corrupt or unsupported ({_one_line(err)})"
        ) from None
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (3, H, W)
    notes = conversions + notes
    return tensor, ("; ".join(notes) if notes else None)


def make_folder(path: str | os.PathLike[str], role: str = "the output folder") -> Path:
    r"""Create the folder `path` and its parents if missing; one clear error where a file is.

    Args:
        path: The folder.
        role: What the folder is, for the message (e.g. "run.output").

    Returns:
        `path` as a `Path`.

    Raises:
        NotADirectoryError: `path`, or a folder above it, is a file.
        OSError: The folder cannot be created (permissions, a full disk).

    Examples:
        >>> import tempfile
        >>> blocker = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = blocker.write_text("a file")
        >>> make_folder(blocker / "plots", "--out")
        Traceback (most recent call last):
        ...
        NotADirectoryError: --out .../notes.txt/plots is a file or inside one; expected a folder
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(
            f"{role} {path} is a file or inside one; expected a folder"
        ) from None
    return path


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    r"""Write a file so that `path` is either its old content or the complete new one.

    Yields the path of a new, empty temporary file in the folder of `path` (hidden, named
    `.<name>.<random>.tmp`); write to it by name. When the `with` block ends normally the
    temporary file is renamed over `path` with `os.replace` (atomic on POSIX file systems); when
    it raises, the temporary file is removed and `path` is left as it was. The file gets the
    permissions of a normally created file, `0o666` minus the user's umask (not the `0o600` of
    `tempfile.mkstemp`).

    Args:
        path: The destination; its folder must exist.

    Yields:
        The temporary file's path.

    Raises:
        FileNotFoundError: The folder of `path` does not exist (nothing is written).
        IsADirectoryError: `path` is a folder (nothing is written).
        OSError: The folder cannot be written, or the rename fails.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> with atomic_write(target) as tmp:
        ...     _ = tmp.write_text("complete")
        >>> target.read_text(), [p.name for p in target.parent.iterdir()]
        ('complete', ['notes.txt'])
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {path}: its folder {path.parent} does not exist (or is not a folder)"
        )
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; expected a file name")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never reuse someone else's file; 0o666 minus the umask, like a normal file.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int = 2) -> Path:
    r"""Write `data` as JSON (with a final newline) to `path`, atomically, creating its folder.

    Args:
        path: The destination file.
        data: Anything `json.dumps` accepts.
        indent: Spaces per nesting level.

    Returns:
        `path` as a `Path`.

    Raises:
        TypeError: `data` holds a value JSON cannot represent (nothing is written then).
        NotADirectoryError: A file stands where the folder of `path` (or one above it) should
            be (nothing is written then).
    """
    path = Path(path)
    text = json.dumps(data, indent=indent) + "\n"  # fails before the file is touched
    make_folder(path.parent, f"cannot write {path}: its folder")
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def write_figure(path: str | os.PathLike[str], fig: Any, **savefig: Any) -> Path:
    r"""Save a Matplotlib figure as a PNG at `path`, atomically, creating its folder; close it.

    The PNG carries no "Software" text chunk (Matplotlib's version), so the same figure gives
    the same file under any Matplotlib. The figure is closed even when saving fails.

    Args:
        path: The destination file.
        fig: A `matplotlib.figure.Figure`.
        **savefig: Further arguments of `Figure.savefig` (e.g. `dpi=120`).

    Returns:
        `path` as a `Path`.

    Raises:
        NotADirectoryError: A file stands where the folder of `path` (or one above it) should
            be (nothing is written then).

    Examples:
        >>> import tempfile
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots(figsize=(1, 1))
        >>> path = write_figure(Path(tempfile.mkdtemp()) / "plots" / "line.png", fig, dpi=50)
        >>> path.read_bytes()[:4], plt.fignum_exists(fig.number)
        (b'\x89PNG', False)
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    savefig = {"format": "png", "metadata": {"Software": None}} | savefig
    try:
        make_folder(path.parent, f"cannot write {path}: its folder")
        with atomic_write(path) as tmp:
            fig.savefig(tmp, **savefig)
    finally:
        plt.close(fig)
    return path


def write_image(
    path: str | os.PathLike[str], x: Tensor, *, metadata: dict[str, str] | None = None
) -> Path:
    r"""Write an RGB image tensor as an 8-bit PNG, atomically, creating parent folders.

    Pixel values are $\mathrm{round}(255\,\mathrm{clamp}(x, 0, 1))$ (the protocol's
    `tensor2img`). The image is first written to a hidden temporary file in the destination
    folder and then renamed over `path` with `os.replace`, so `path` is either the old file or the
    complete new one; the temporary file is removed on failure.

    Args:
        path: Destination; must end in `.png`.
        x: `(3, H, W)` or `(1, 3, H, W)` floating tensor in [0, 1] (any device).
        metadata: text chunks (`tEXt`) to store in the PNG, `{key: value}`; `read_png_text`
            reads them back.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: `x` is not an RGB image tensor or holds NaN.
        ImageError: `path` does not end in `.png`, or the folder or file cannot be written.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_image(f"{folder}/sub/out.png", torch.rand(3, 8, 8)).name
        'out.png'
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ImageError(f"cannot write image {path}: only PNG is written; use a .png file name")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"write_image: expected a floating-point tensor, got {type(x).__name__}")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"write_image: expected an RGB image (3, H, W), got {tuple(x.shape)}")
    pixels = to_uint8(x.detach()).permute(1, 2, 0).cpu().numpy()  # (H, W, 3) uint8
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageError(
            f"cannot write image {path}: cannot create folder {path.parent} ({_one_line(err)})"
        ) from None
    try:
        info = PngImagePlugin.PngInfo()
        for key, value in (metadata or {}).items():
            info.add_text(key, value)
        with atomic_write(path) as tmp, tmp.open("wb") as f:
            Image.fromarray(pixels).save(f, format="PNG", pnginfo=info)
    except OSError as err:
        raise ImageError(f"cannot write image {path}: {_one_line(err)}") from None
    return path


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    r"""The text chunks of a PNG file (`write_image(..., metadata=...)`); `{}` for other files.

    Only the header and chunks are read, not the pixels; a file that cannot be opened gives `{}`.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> _ = write_image(path, torch.rand(3, 4, 4), metadata={"note": "hello"})
        >>> read_png_text(path)
        {'note': 'hello'}
    """
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return {}
            # the chunks before the image data (where write_image puts them); pixels not decoded
            return {str(k): v for k, v in im.info.items() if isinstance(v, str)}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return {}


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    r"""The image files directly inside `folder`, sorted by name.

    Files whose name ends in one of `IMAGE_SUFFIXES` (any case) count; hidden files (a leading
    dot) and sub-folders are ignored.

    Args:
        folder: A folder of images.

    Returns:
        Sorted list of paths.

    Raises:
        ImageError: The folder is missing, is not a folder, or holds no image file.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> for name in ["b.png", "a.JPG", "notes.txt"]:
        ...     _ = open(f"{folder}/{name}", "w").close()
        >>> [p.name for p in list_images(folder)]
        ['a.JPG', 'b.png']
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ImageError(f"{folder} is not a folder of images")
    try:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
    except OSError as err:
        raise ImageError(f"cannot list image folder {folder}: {_one_line(err)}") from None
    if not files:
        raise ImageError(f"no image files in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files
