r"""TensorBoard logging of an IRN training run (`run.tensorboard`).

`flowlearn irn train` writes TensorBoard event files to `run.output/tensorboard/` (rank 0 only
under `torchrun`), beside the CSV log, which stays the reference record. Watch a run, or a
folder of runs, with

```bash
tensorboard --logdir runs/
```

What is logged, at each CSV row (every `run.log_every` steps and at each validation):

* `loss/fit`, `loss/distr`, `loss/rec`, `loss/total`: mean of the global batch's losses since
  the previous point (as in the CSV log);
* `train/lr`: learning rate of the last step;
* `train/grad_norm`: mean global gradient norm, before clipping;
* `train/seconds_per_step`: mean wall time of a step (loading, forward, backward, update), and
  `train/samples_per_second`: the global batch divided by it;
* `validation/psnr_y_sampled`, `…/psnr_y_zero`, `…/psnr_y_bicubic`, `…/ssim_y_sampled`,
  `…/ssim_y_zero`, `…/ssim_y_bicubic`, `…/lr_psnr_rgb`: the results of
  `flowlearn.irn.train.validate`;
* images `validation/<image>`: a centre crop of the first validation images, LR (enlarged by
  pixel repetition), SR (sampled $z$) and HR side by side (`validation_crops`).

A resumed run writes into the same folder; the events that an interrupted call wrote after its
last checkpoint are dropped (`purge_step`), so the curves show one run.

Examples:
    >>> import tempfile
    >>> log = TensorBoardLog(tempfile.mkdtemp())
    >>> log.training(10, {"total": 3.5}, lr=2e-4, grad_norm=1.5, seconds_per_step=0.2,
    ...              batch_size=16)
    >>> log.close()
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from flowlearn.images.io import list_images, read_image
from flowlearn.images.metrics import modcrop
from flowlearn.irn.model import IRN

__all__ = ["TensorBoardLog", "tensorboard_missing", "validation_crops"]


def tensorboard_missing() -> str | None:
    r"""Why TensorBoard logging is unavailable (a sentence), or None when it is available.

    Examples:
        >>> tensorboard_missing() is None or "pip install" in tensorboard_missing()
        True
    """
    if importlib.util.find_spec("tensorboard") is None:
        return 'the tensorboard package is not installed (pip install "flowlearn[train]")'
    return None


class TensorBoardLog:
    r"""Scalars and images of a training run, written as TensorBoard event files.

    Args:
        folder: where the event files go (created if needed).
        start_step: the step the run starts (or resumes) at; events a previous call wrote after
            it are dropped.

    Raises:
        ModuleNotFoundError: the `tensorboard` package is missing (`tensorboard_missing`).
    """

    def __init__(self, folder: str | os.PathLike[str], *, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the optional package

        self.folder = Path(folder)
        self.writer = SummaryWriter(
            log_dir=str(self.folder), purge_step=start_step + 1 if start_step else None
        )

    def training(
        self,
        step: int,
        losses: Mapping[str, float],
        *,
        lr: float,
        grad_norm: float,
        seconds_per_step: float,
        batch_size: int,
    ) -> None:
        r"""The training scalars at `step` (see the module docstring).

        Args:
            step: the global step.
            losses: `{"fit", "distr", "rec", "total"}` means (any subset).
            lr: learning rate.
            grad_norm: mean gradient norm before clipping.
            seconds_per_step: mean wall time of a step.
            batch_size: the global batch, for `train/samples_per_second`.
        """
        for name, value in losses.items():
            self.writer.add_scalar(f"loss/{name}", value, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/grad_norm", grad_norm, step)
        self.writer.add_scalar("train/seconds_per_step", seconds_per_step, step)
        if seconds_per_step > 0:
            self.writer.add_scalar("train/samples_per_second", batch_size / seconds_per_step, step)

    def validation(
        self, step: int, metrics: Mapping[str, float], crops: Mapping[str, Tensor] = {}
    ) -> None:
        r"""The validation results and image crops at `step`.

        Args:
            step: the global step.
            metrics: e.g. `{"psnr_y_sampled": 33.1, …}`, logged as `validation/<name>`.
            crops: `{image name: (3, h, w) tensor in [0, 1]}` (`validation_crops`).
        """
        for name, value in metrics.items():
            self.writer.add_scalar(f"validation/{name}", value, step)
        for name, image in crops.items():
            self.writer.add_image(f"validation/{name}", image.clamp(0, 1), step)
        self.writer.flush()

    def flush(self) -> None:
        r"""Write what is buffered to disk."""
        self.writer.flush()

    def close(self) -> None:
        r"""Flush and close the event file."""
        self.writer.close()


def validation_crops(
    model: IRN, folder: str | os.PathLike[str], *, count: int = 3, size: int = 96, seed: int = 0
) -> dict[str, Tensor]:
    r"""LR | SR | HR panels of a centre crop of the first `count` images of `folder`.

    The crop ($P \times P$, $P$ = `size` or the largest multiple of the scale that fits) is
    downscaled by the model, quantised to 8 bits, and upscaled with $z$ drawn from a generator
    seeded `seed`, so that the panels of successive validations are comparable.

    Args:
        model: the `IRN` (its mode is left as it was; no gradients are recorded).
        folder: validation HR images.
        count: how many images.
        size: side of the HR crop.
        seed: seed of $z$.

    Returns:
        `{image stem: (3, P, 3P)}`: the LR enlarged by pixel repetition, the SR and the HR side
        by side, in [0, 1].

    Examples:
        >>> import tempfile
        >>> from flowlearn.images.io import write_image
        >>> folder = tempfile.mkdtemp()
        >>> _ = write_image(f"{folder}/bird.png", torch.rand(3, 40, 50))
        >>> panels = validation_crops(IRN(2, blocks=[1], growth=4), folder, size=32)
        >>> {name: tuple(p.shape) for name, p in panels.items()}
        {'bird': (3, 32, 96)}
    """
    s = model.scale
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    panels: dict[str, Tensor] = {}
    try:
        with torch.inference_mode():
            for path in list_images(folder)[:count]:
                hr, _ = read_image(path)
                hr = modcrop(hr, s)  # (3, H, W), H and W multiples of s
                P = min(size, hr.shape[-2], hr.shape[-1]) // s * s
                top, left = (hr.shape[-2] - P) // 2 // s * s, (hr.shape[-1] - P) // 2 // s * s
                hr = hr[None, :, top : top + P, left : left + P].to(device)  # (1, 3, P, P)
                lr = model.downscale(hr)  # (1, 3, P/s, P/s), 8-bit levels
                g = torch.Generator(device).manual_seed(seed)
                sr = model.upscale(lr, generator=g).clamp(0, 1)  # (1, 3, P, P)
                big = lr.repeat_interleave(s, -2).repeat_interleave(s, -1)  # (1, 3, P, P)
                panels[path.stem] = torch.cat([big, sr, hr], dim=-1)[0].float().cpu()
    finally:
        model.train(was_training)
    return panels
