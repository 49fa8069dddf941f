r"""The Invertible Rescaling Net (Xiao et al. 2020, arXiv:2005.05650).

* `IRN` (`model`): the network, HR image ↔ (LR image, z), with `downscale` / `upscale`.
* `HaarDownsampling` (`flowlearn.layers.haar`) and `IRNCoupling` (`block`): its two kinds of layer.
* `irn_losses`, `IRNLosses`, `quantize` (`losses`): the training objective.
* `accelerate` (`fast`): the same network arranged for speed; `irn_backward`: the objective's
  gradients, the batch cut into shards that run in parallel threads on a CPU.
* `load`, `save`, `CheckpointError` (`checkpoint`): weights in (a shipped model by name, a flowlearn
  checkpoint, the original code's `.pth`, safetensors) and out.
"""

from flowlearn.irn.block import IRNCoupling
from flowlearn.irn.checkpoint import CheckpointError, load, save
from flowlearn.irn.fast import accelerate, irn_backward
from flowlearn.irn.losses import IRNLosses, irn_losses, quantize
from flowlearn.irn.model import IRN
from flowlearn.layers.haar import HaarDownsampling

__all__ = [
    "IRN",
    "CheckpointError",
    "HaarDownsampling",
    "IRNCoupling",
    "IRNLosses",
    "accelerate",
    "irn_backward",
    "irn_losses",
    "load",
    "quantize",
    "save",
]
