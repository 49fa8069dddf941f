r"""The Invertible Rescaling Net (Xiao et al. 2020, arXiv:2005.05650).

* `IRN` (`model`): the network, HR image ↔ (LR image, z), with `downscale` / `upscale`.
* `HaarDownsampling` (`flowlearn.layers.haar`) and `IRNCoupling` (`block`): its two kinds of layer.
* `irn_losses`, `IRNLosses`, `quantize` (`losses`): the training objective; `irn_backward`: its
  gradients, the batch cut into shards that run in parallel threads on a CPU.
* `load_irn`, `CheckpointError` (`checkpoint`): weights of the original code or of flowlearn.
"""

from flowlearn.irn.block import IRNCoupling
from flowlearn.irn.checkpoint import CheckpointError, load_irn
from flowlearn.irn.losses import IRNLosses, irn_backward, irn_losses, quantize
from flowlearn.irn.model import IRN
from flowlearn.layers.haar import HaarDownsampling

__all__ = [
    "IRN",
    "CheckpointError",
    "HaarDownsampling",
    "IRNCoupling",
    "IRNLosses",
    "irn_backward",
    "irn_losses",
    "load_irn",
    "quantize",
]
