r"""Training patches for the Invertible Rescaling Net: HR crops with their bicubic LR references.

The pipeline follows the original training loader (github.com/pkuxmq/Invertible-Image-Rescaling,
codes/data/LQGT_dataset.py and codes/data/util.py) with one deliberate change:

1. Every image under the training folder (and its subfolders) is decoded once and kept in memory
   as 8-bit (as float32 only when it holds finer levels, e.g. a 16-bit PNG).
2. **Sizes that are not a multiple of the scale $s$ are cropped** to the multiple (the last
   rows/columns are dropped, as `modcrop` does at test time). The original resizes such images
   with linear interpolation instead, which shifts and blurs the whole photo by a fraction of a
   pixel. The crop is logged (one warning naming the images), never silent.
3. The LR reference of the whole image is $\mathrm{bicubic}_{1/s}(x)$ with the MATLAB-style
   `imresize` (float, not rounded to 8 bit), computed on first use and cached.
4. A random HR patch of `patch_size` and the LR patch of `patch_size / s` at the same place
   (top-left LR pixel $(i, j)$ ↔ HR pixel $(s i, s j)$), then the same random horizontal flip,
   vertical flip and transpose on both.

Randomness is reproducible and resumable: `PatchSampler` derives batch $k$ from
`(seed, k)` alone (a `torch.Generator` it owns is re-seeded per epoch), and each sample carries
its own seed for the crop and flips. So a run resumed at step $k$ sees exactly the batches a
straight run would, with any number of loader workers and any prefetching.

Examples:
    >>> sampler = PatchSampler(num_images=5, batch_size=3, seed=0)
    >>> len(sampler.batch(0)), sorted(i for step in range(5) for i, _ in sampler.batch(step))[:4]
    (3, [0, 0, 0, 1])
    >>> sampler.batch(7) == PatchSampler(5, 3, seed=0).batch(7)  # batch k depends on (seed, k)
    True
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from flowlearn.images.imresize import imresize
from flowlearn.images.io import IMAGE_SUFFIXES, list_images, read_image

__all__ = ["IRNTrainSet", "PatchSampler", "train_loader"]

logger = logging.getLogger(__name__)


class PatchSampler(Sampler[list[tuple[int, int]]]):
    r"""Endless batches of `(image index, patch seed)` pairs, a pure function of `(seed, step)`.

    The image indices are consecutive epochs of random permutations (each image once per epoch,
    as a shuffling loader does), cut into batches of `batch_size`; an epoch boundary may fall
    inside a batch. Each sample also gets a random 62-bit seed for its crop and flips.

    With several training processes (`flowlearn.irn.distributed`), $B$ is the global batch and
    process `rank` of `world_size` iterates over its slice $[rb, (r + 1)b)$ of every batch,
    $b = B / W$: together the processes see exactly the batches of one process.

    Args:
        num_images: number of training images $N$.
        batch_size: samples per batch $B$ (the global batch).
        seed: base seed; epoch $e$ is drawn from a generator seeded by `(seed, e)`.
        start_step: the first batch `__iter__` yields (for resuming).
        rank: which slice of each batch `__iter__` yields.
        world_size: into how many slices each batch is cut ($W$ must divide $B$).

    Examples:
        >>> s = PatchSampler(4, 2, seed=1)
        >>> sorted(i for step in (0, 1) for i, _ in s.batch(step))
        [0, 1, 2, 3]
        >>> halves = [next(iter(PatchSampler(4, 2, seed=1, rank=r, world_size=2))) for r in (0, 1)]
        >>> halves[0] + halves[1] == s.batch(0)
        True
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_images < 1 or batch_size < 1:
            raise ValueError(f"PatchSampler needs images and a batch size ≥ 1, got {num_images}")
        if world_size < 1 or batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(
                f"PatchSampler: the batch of {batch_size} must split evenly over world_size "
                f"{world_size} processes, and rank must be 0 to {world_size - 1}; got rank {rank}"
            )
        self.num_images, self.batch_size = num_images, batch_size
        self.seed, self.start_step = seed, start_step
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator()
        self._cache: dict[int, tuple[list[int], list[int]]] = {}

    def _epoch(self, epoch: int) -> tuple[list[int], list[int]]:
        r"""Permutation of the images and per-sample seeds of one epoch."""
        if epoch not in self._cache:
            mixed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
            self.generator.manual_seed(int(mixed))
            order = torch.randperm(self.num_images, generator=self.generator).tolist()
            seeds = torch.randint(2**62, (self.num_images,), generator=self.generator).tolist()
            self._cache = {epoch: (order, seeds)}  # keep one epoch: batches are read in order
        return self._cache[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        r"""The `(image index, patch seed)` pairs of batch number `step` (0-based)."""
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            order, seeds = self._epoch(position // self.num_images)
            k = position % self.num_images
            out.append((order[k], seeds[k]))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        b = self.batch_size // self.world_size  # this process's slice of the global batch
        while True:
            yield self.batch(step)[self.rank * b : (self.rank + 1) * b]
            step += 1

    def state_dict(self) -> dict[str, int]:
        r"""What determines the batches (the step is kept by the training loop)."""
        return {"seed": self.seed, "num_images": self.num_images, "batch_size": self.batch_size}


def _image_files(folder: Path) -> list[Path]:
    r"""Images in `folder` and its subfolders, in sorted order."""
    if not folder.is_dir():
        raise ValueError(f"training folder {folder} does not exist or is not a folder")
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        if any(n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith(".") for n in names):
            files.extend(list_images(root))
    if not files:
        raise ValueError(f"no images in the training folder {folder} (or its subfolders)")
    return files


class IRNTrainSet(Dataset[tuple[Tensor, Tensor]]):
    r"""Aligned (HR patch, bicubic LR patch) pairs from a folder of HR images (as LQGT_dataset.py).

    An item is addressed by `(image index, patch seed)` (see `PatchSampler`); the seed fixes the
    crop position and the flips, so the same item is always the same patch.

    $$
    \mathrm{LR}_{\mathrm{ref}} = \mathrm{bicubic}_{1/s}(x),\qquad
    \mathrm{hr} = x[:, s i : s i + P,\ s j : s j + P],\qquad
    \mathrm{lr} = \mathrm{LR}_{\mathrm{ref}}[:, i : i + P/s,\ j : j + P/s]
    $$

    References:
        Xiao, Zheng, Luo, Liu, Zhang, Zhang, Bian, Ke, Liu, Liu (2020). Invertible Image
        Rescaling. arXiv:2005.05650, §4.1 (training details: DIV2K patches 144×144, bicubic
        LR guidance, flips and rotations).

    Args:
        folder: HR images (any format `read_image` reads), searched recursively.
        scale: the rescaling factor $s$.
        patch_size: HR patch side $P$, a multiple of `scale`.
        flips: random horizontal flip.
        rotations: random vertical flip and transpose.
        prescale: resize every image by this factor in (0, 1] with `imresize` (bicubic,
            antialiased) before anything else; 1 keeps the images as they are. 0.5 on JPEG
            photos gives the colour back its full resolution: JPEG usually stores the two
            chroma channels at half the width and height (4:2:0), so a full-size JPEG has no fine
            colour detail, and a model trained only on such photos drifts in colour on images
            that have it (see the model card). Halving the photo halves the luma's resolution
            to that of the chroma.
        recolour: probability in [0, 1] that a patch is recoloured: each of its channels is
            inverted ($x_c \to 1 - x_c$) with probability 1/2 and multiplied by a gain drawn
            uniformly from [1/2, 1]. Fine detail common to the three channels (grey detail,
            all a 4:2:0 JPEG has) then differs between them, which is colour detail. The map
            is affine per channel and the bicubic weights sum to one, so the LR reference of a
            recoloured patch is the recoloured LR reference: both are recoloured alike.
            0 (the default) leaves the patches and their random draws as they are.
        noise: probability in [0, 1] that Gaussian noise is added to a patch (after any
            recolouring), independently in every pixel and channel, with a standard deviation
            drawn uniformly from [0, `noise_level`] per patch:
            $\mathrm{hr}' = \mathrm{clamp}(\mathrm{hr} + \sigma\varepsilon, 0, 1)$ and
            $\mathrm{lr}' = \mathrm{lr} + \mathrm{bicubic}_{1/s}(\mathrm{hr}' - \mathrm{hr})$,
            which is the bicubic LR of the noisy patch (bicubic is linear; near the patch's
            border it reads the noise mirrored, as `imresize` pads). Independent noise in
            R, G and B is fine colour detail at every scale; photos taken in low light or on
            film have it (Set5's head.png), and a model that never saw it shifts the LR's
            colour in spots there (see the model card). 0 (the default) leaves the patches and
            their random draws as they are.
        noise_level: the largest standard deviation of that noise, in 8-bit levels (0–255).

    Items: `(hr, lr)` float32 tensors of shapes `(3, P, P)` and `(3, P/s, P/s)` in [0, 1].

    Raises:
        ValueError: no images, an unreadable image, or an image smaller than the patch (naming
            the file).

    Examples:
        >>> import tempfile, torch
        >>> from flowlearn.images.io import write_image
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_image(f"{folder}/a.png", torch.rand(3, 40, 36))
        >>> data = IRNTrainSet(folder, scale=2, patch_size=16)
        >>> hr, lr = data[0, 123]
        >>> tuple(hr.shape), tuple(lr.shape)
        ((3, 16, 16), (3, 8, 8))
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        scale: int,
        patch_size: int,
        *,
        flips: bool = True,
        rotations: bool = True,
        prescale: float = 1.0,
        recolour: float = 0.0,
        noise: float = 0.0,
        noise_level: float = 10.0,
    ) -> None:
        if patch_size % scale:
            raise ValueError(f"patch size {patch_size} is not a multiple of the scale {scale}")
        if not 0 < prescale <= 1:
            raise ValueError(f"prescale must be in (0, 1] (1 keeps the images), got {prescale}")
        if not 0 <= recolour <= 1:
            raise ValueError(f"recolour must be a probability in [0, 1], got {recolour}")
        if not 0 <= noise <= 1:
            raise ValueError(f"noise must be a probability in [0, 1], got {noise}")
        if not 0 < noise_level <= 255:
            raise ValueError(
                f"noise_level must be a standard deviation in (0, 255] 8-bit levels, "
                f"got {noise_level}"
            )
        self.scale, self.patch_size, self.prescale = scale, patch_size, prescale
        self.recolour, self.noise, self.noise_level = recolour, noise, noise_level
        self.flips, self.rotations = flips, rotations
        self.files = _image_files(Path(folder))
        self._hr: list[Tensor] = []
        self._lr: list[Tensor | None] = [None] * len(self.files)
        cropped = []
        for path in self.files:
            x, note = read_image(path)  # (3, H, W) in [0, 1]
            if note:
                logger.warning("%s: %s", path, note)
            if prescale != 1:
                x = imresize(x, prescale).clamp(0, 1)  # (3, ~H p, ~W p), no longer 8-bit
            H, W = x.shape[-2:]
            h, w = H - H % scale, W - W % scale
            if min(h, w) < patch_size:
                resized = f" after resizing by {prescale}" if prescale != 1 else ""
                raise ValueError(
                    f"{path}: {W}x{H} image{resized} is smaller than the "
                    f"{patch_size}x{patch_size} training patch (after cropping to a multiple "
                    f"of {scale})"
                )
            if (h, w) != (H, W):
                cropped.append(f"{path.name} {W}x{H}→{w}x{h}")
                x = x[:, :h, :w]  # (3, h, w), bottom/right dropped like modcrop
            q = (x * 255).round()
            exact = bool(((q / 255 - x).abs() <= 1e-6).all())
            self._hr.append(q.to(torch.uint8) if exact else x.contiguous())
        if cropped:
            logger.warning(
                "cropped %d of %d training images to a multiple of the scale %d: %s",
                len(cropped),
                len(self.files),
                scale,
                ", ".join(cropped[:3]) + (", …" if len(cropped) > 3 else ""),
            )

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> Tensor:
        r"""HR image `index` as float32 `(3, H, W)` in [0, 1], H and W multiples of the scale."""
        x = self._hr[index]
        return x.float() / 255 if x.dtype == torch.uint8 else x

    def lr_reference(self, index: int) -> Tensor:
        r"""Bicubic LR reference of the whole image `index`, float32 `(3, H/s, W/s)`, cached."""
        lr = self._lr[index]
        if lr is None:
            lr = imresize(self.image(index), 1 / self.scale)
            self._lr[index] = lr
        return lr

    def _draw(self, item: tuple[int, int]) -> tuple[int, int, list[bool], torch.Generator]:
        index, seed = item
        g = torch.Generator().manual_seed(seed)
        p = self.patch_size // self.scale
        h, w = (n // self.scale for n in self._hr[index].shape[-2:])
        i = int(torch.randint(h - p + 1, (1,), generator=g))
        j = int(torch.randint(w - p + 1, (1,), generator=g))
        hflip, vflip, transpose = (torch.rand(3, generator=g) < 0.5).tolist()
        flips = [self.flips and hflip, self.rotations and vflip, self.rotations and transpose]
        return i, j, flips, g  # g goes on to the recolouring and noise draws

    def placement(self, item: tuple[int, int]) -> tuple[int, int, list[bool]]:
        r"""Where patch `item` comes from: its crop's top-left pixel and its flips.

        Returns the top-left LR pixel $(i, j)$ of the crop of image `item[0]` (HR pixel
        $(s i, s j)$) and whether the crop is then flipped horizontally, flipped vertically and
        transposed, in that order (`FLIPS`).
        """
        i, j, flips, _ = self._draw(item)
        return i, j, flips

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, Tensor]:
        s, P = self.scale, self.patch_size
        p = P // s
        i, j, flips, g = self._draw(item)
        lr_patch = self.lr_reference(item[0])[:, i : i + p, j : j + p]  # (3, P/s, P/s)
        hr = self._hr[item[0]][:, s * i : s * i + P, s * j : s * j + P]  # (3, P, P), aligned
        hr_patch = hr.float() / 255 if hr.dtype == torch.uint8 else hr
        for flag, op in zip(flips, FLIPS, strict=True):
            if flag:
                hr_patch, lr_patch = op(hr_patch), op(lr_patch)
        if self.recolour and float(torch.rand(1, generator=g)) < self.recolour:
            hr_patch, lr_patch = _recolour(hr_patch, lr_patch, g)
        if self.noise and float(torch.rand(1, generator=g)) < self.noise:
            hr_patch, lr_patch = _add_noise(hr_patch, lr_patch, s, self.noise_level / 255, g)
        return hr_patch.contiguous(), lr_patch.contiguous()


# the flips of `IRNTrainSet.placement`, in its order: horizontal, vertical, transpose
FLIPS: tuple[Callable[[Tensor], Tensor], ...] = (
    lambda t: t.flip(-1),
    lambda t: t.flip(-2),
    lambda t: t.transpose(-1, -2),
)


def _recolour(hr: Tensor, lr: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    r"""`hr` and `lr` under one random per-channel map $x_c \to a_c + b_c x_c$ (see `recolour`)."""
    invert = torch.rand(3, 1, 1, generator=g) < 0.5
    gain = 1 - torch.rand(3, 1, 1, generator=g) / 2  # in (1/2, 1]
    offset = torch.where(invert, gain, torch.zeros_like(gain))  # a_c: g_c when inverted
    slope = torch.where(invert, -gain, gain)  # b_c
    return offset + slope * hr, offset + slope * lr


def _add_noise(
    hr: Tensor, lr: Tensor, scale: int, max_sigma: float, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    r"""`hr` with Gaussian noise of a random level, and its bicubic LR (see `noise`)."""
    sigma = max_sigma * float(torch.rand(1, generator=g))
    noisy = (hr + sigma * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    return noisy, lr + imresize(noisy - hr, 1 / scale)  # bicubic is linear


def train_loader(
    dataset: IRNTrainSet,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader[tuple[Tensor, Tensor]]:
    r"""Endless loader of `(hr, lr)` batches `(B, 3, P, P)`, `(B, 3, P/s, P/s)` from `start_step`.

    Args:
        dataset: the training patches.
        batch_size: patches per batch (the global batch: each of `world_size` processes gets
            `batch_size / world_size` of them).
        seed: seed of the `PatchSampler`.
        start_step: index of the first batch (the step a run resumes at).
        workers: loader worker processes (0: load in this process). More than the CPUs this
            process may run on (`os.sched_getaffinity`) is lowered to that number, with a
            warning: the workers would only take turns, and the batches are the same with any
            number of them.
        rank: this process's slice of each batch (see `PatchSampler`).
        world_size: number of training processes.
        pin_memory: return batches in pinned memory, for fast non-blocking copies to a GPU.

    Worker processes ignore SIGINT: Ctrl-C in a terminal reaches every process of the group,
    and the training process, which stops after the current step, shuts them down itself.
    """
    sampler = PatchSampler(
        len(dataset), batch_size, seed, start_step, rank=rank, world_size=world_size
    )
    cpus = usable_cpus()
    if workers > cpus:
        logger.warning(
            "data.workers is %d but this process may run on %d CPUs; loading with %d workers",
            workers,
            cpus,
            cpus,
        )
        workers = cpus
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_sigint if workers > 0 else None,
    )


def usable_cpus() -> int:
    r"""The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _ignore_sigint(worker_id: int) -> None:
    """`DataLoader` worker start-up: leave Ctrl-C to the training process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
