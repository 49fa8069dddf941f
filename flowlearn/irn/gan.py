r"""IRN+: the perceptual, adversarial fine-tuning stage of the Invertible Rescaling Net.

IRN is trained for distortion: its reconstruction loss rewards the *mean* of the plausible HR
images, which is blurred. IRN+ fine-tunes a trained IRN so that the reconstructions look sharp.
With $[y, z] = f(x)$, the straight-through quantiser $Q$, a fresh $\tilde z \sim
\mathcal{N}(0, I)$ and the reconstruction $\hat x = f^{-1}([Q(y), \tilde z])$, the generator
(the IRN) minimises

$$
L_G = \lambda_\text{fit}\,\tfrac1B\textstyle\sum_b\|y_b - y^\text{ref}_b\|_2^2
    + \lambda_\text{rec}\,\tfrac1B\textstyle\sum_b\sum_i \rho(x_{b,i} - \hat x_{b,i})
    + \lambda_\text{per}\,\tfrac1B\textstyle\sum_b\sum_j
      \rho\bigl(\phi(x_b)_j - \phi(\hat x_b)_j\bigr)
    + \lambda_\text{GAN}\, L_\text{adv}(\hat x),
$$

with the Charbonnier penalty $\rho(t) = \sqrt{t^2 + \epsilon}$ (what the original code calls
"l1"), VGG19 features $\phi$ up to conv5_4 before its ReLU, and the adversarial term of a
discriminator $D$ (vanilla or relativistic average, `generator_loss`). The latent term
$\lambda_\text{ce}\|z\|^2$ of IRN is dropped ($\lambda_\text{ce} = 0$): the GAN loss is the
distribution matching of the paper's §3.3 in its adversarial form. The discriminator minimises
`discriminator_loss` on real HR patches and detached reconstructions.

Mind the reductions: fit, reconstruction and perceptual terms **sum** over pixels (features)
and average over the batch, the adversarial terms are plain **means** of a binary
cross-entropy. The paper's weights (fit 16, reconstruction 0.01, perceptual 0.01, GAN 1 at ×4)
only mean what they mean with these reductions.

One training step (`IRNPlusStage`, called by `flowlearn.irn.train.train`):

1. the IRN's losses and gradients (`irn_plus_losses`), with $D$ frozen; during the first
   `d_init_steps` steps (and when `step % d_update_ratio != 0`) the generator is not trained:
   the losses are computed without gradients, only for the log;
2. $D$'s loss and gradients on the real batch and the detached reconstructions;
3. the IRN's Adam step (after gradient clipping) and $D$'s own Adam step, each with its own
   copy of the IRN's learning-rate schedule (`flowlearn.irn.schedule.irn_scheduler`: the
   milestones and `optim.warmup`).

The perceptual term needs ImageNet weights of VGG19: `load_vgg19_features` reads torchvision's
checkpoint file (`vgg19-dcbb9e9d.pth`) from a path or from torchvision's cache and never
downloads; the GAN-only variant ($\lambda_\text{per} = 0$) needs nothing.

References:
    M. Xiao et al., 2020. "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §3.3
    (distribution matching, its adversarial form) and §4 (experiments, the IRN+ variant with
    perceptual and GAN losses; the authors' train_IRN+_x4.yml holds its settings).
    C. Ledig et al., 2017. "Photo-Realistic Single Image Super-Resolution Using a Generative
    Adversarial Network." CVPR 2017, arXiv:1609.04802, §2.2 (the VGG-style discriminator),
    Eq. 5 (VGG feature loss).
    X. Wang et al., 2018. "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks."
    ECCV Workshops 2018, arXiv:1809.00219, §3.2 Eq. 1-2 (relativistic average GAN), §3.3
    (features before the activation).
    P. Isola et al., 2017. "Image-to-Image Translation with Conditional Adversarial Networks."
    CVPR 2017, arXiv:1611.07004, §3.2.2 (the PatchGAN discriminator).
    K. Simonyan, A. Zisserman, 2015. "Very Deep Convolutional Networks for Large-Scale Image
    Recognition." ICLR 2015, arXiv:1409.1556, Table 1 column E (VGG19).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowlearn.irn.losses import CHARBONNIER_EPS, _rescaling_terms, _sum_per_sample
from flowlearn.irn.schedule import irn_scheduler, load_scheduler_state, scheduler_state

if TYPE_CHECKING:
    from flowlearn.irn.config import Config
    from flowlearn.irn.model import IRN

__all__ = [
    "DISCRIMINATOR_TERMS",
    "GAN_LOSSES",
    "GENERATOR_TERMS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG19_CONV5_4",
    "VGG19_LAYOUT",
    "VGG19_WEIGHTS_FILE",
    "FeatureLoss",
    "IRNPlusLosses",
    "IRNPlusStage",
    "IRNPlusStepLosses",
    "PatchDiscriminator",
    "VGGDiscriminator",
    "VGGWeightsMissingError",
    "build_discriminator",
    "discriminator_loss",
    "generator_loss",
    "irn_plus_losses",
    "load_vgg19_features",
    "trains_generator",
    "vgg19_weights_path",
    "vgg_features",
]

GAN_LOSSES = ("gan", "ragan")
"""The adversarial losses: `"gan"` (vanilla, Goodfellow et al. 2014) and `"ragan"`."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet, which the VGG19 weights expect subtracted (RGB in [0, 1])."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet, which the VGG19 weights expect divided out."""

VGG19_LAYOUT: tuple[int | str, ...] = (
    *(64, 64, "M"),
    *(128, 128, "M"),
    *(256, 256, 256, 256, "M"),
    *(512, 512, 512, 512, "M"),
    *(512, 512, 512, 512, "M"),
)
r"""VGG19's feature layers (Simonyan & Zisserman 2015, Table 1, column E): an integer is a 3×3
convolution with that many outputs followed by a ReLU, `"M"` a 2×2 max-pooling. `vgg_features`
numbers the modules as torchvision's `vgg19().features` does."""
VGG19_CONV5_4 = 34
"""Index of conv5_4 in `vgg_features(VGG19_LAYOUT)`: the perceptual loss cuts after it."""
VGG19_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
"""File name of torchvision's ImageNet VGG19 weights (`VGG19_Weights.IMAGENET1K_V1`)."""
VGG19_WEIGHTS_URL = f"https://download.pytorch.org/models/{VGG19_WEIGHTS_FILE}"


# ------------------------------------------------------------------------------ discriminators


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    """Convolution (no bias: BatchNorm has one), BatchNorm, LeakyReLU(0.2)."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2),
    ]


class VGGDiscriminator(nn.Module):
    r"""The VGG-style discriminator of SRGAN and IRN+, for 128×128 patches: one logit per image.

    Five stages, each a 3×3 convolution and a 4×4 stride-2 convolution, with BatchNorm (except
    after the very first convolution) and LeakyReLU(0.2); the channels go $c, 2c, 4c, 8c, 8c$
    and each stage halves the side: $128 \to 4$. Then two linear layers, $8c\cdot 4\cdot 4 \to
    100 \to 1$. The output is a logit: $D(x) = \sigma(\text{output})$ is the probability that
    $x$ is a real HR patch. Any side from 128 to 159 pixels ends at 4×4 (the original trains it
    on 144×144 patches).

    References:
        C. Ledig et al., 2017, arXiv:1609.04802, §2.2 and Fig. 4 (the discriminator);
        M. Xiao et al., 2020, arXiv:2005.05650, §4 (IRN+ uses it at ×4).

    Args:
        in_channels: channels of the images (3 for RGB).
        channels: $c$, the width of the first stage (64 in the original).

    Examples:
        >>> import torch
        >>> d = VGGDiscriminator(channels=8)
        >>> d(torch.rand(2, 3, 128, 128)).shape
        torch.Size([2, 1])
    """

    def __init__(self, in_channels: int = 3, channels: int = 64) -> None:
        super().__init__()
        self.in_channels = in_channels
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1), nn.LeakyReLU(0.2)]
        layers += _conv_bn(c, c, 4, 2)  # (B, c, 64, 64)
        for c_in, c_out in [(c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c), (8 * c, 8 * c)]:
            layers += _conv_bn(c_in, c_out, 3, 1) + _conv_bn(c_out, c_out, 4, 2)
        self.features = nn.Sequential(*layers)  # (B, 8c, 4, 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * c * 4 * 4, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        r"""Images `(B, C, H, W)`, $128 \le H, W < 160$ → logits `(B, 1)`."""
        if (
            x.dim() != 4
            or x.shape[1] != self.in_channels
            or not all(128 <= n < 160 for n in x.shape[2:])
        ):
            raise ValueError(
                f"VGGDiscriminator: expected images (B, {self.in_channels}, H, W) with "
                f"128 <= H, W < 160 (it ends in a 4x4 map; the original's patches are 128 to "
                f"144 pixels), received shape {tuple(x.shape)}; PatchDiscriminator takes any "
                "patch size"
            )
        return self.classifier(self.features(x))


class PatchDiscriminator(nn.Module):
    r"""A PatchGAN discriminator: one logit per overlapping patch, for images of any size.

    `layers` 4×4 stride-2 convolutions with $c, 2c, 4c, \dots$ channels (capped at $8c$), a 4×4
    stride-1 convolution, then a 4×4 stride-1 convolution to one channel; BatchNorm after all
    but the first and the last, LeakyReLU(0.2) throughout. With `layers=3` every output logit
    sees a 70×70 window of the input; an $H\times W$ image gives a
    $(\lfloor H/8\rfloor - 2)\times(\lfloor W/8\rfloor - 2)$ map of logits, so it works on the
    small patches a CPU can afford as well as on large ones. The GAN losses average over the
    map as over a batch.

    References:
        P. Isola et al., 2017, arXiv:1611.07004, §3.2.2 (PatchGAN) and appendix 6.1.2 (the
        70×70 discriminator C64-C128-C256-C512).

    Args:
        in_channels: channels of the images.
        channels: $c$, the width of the first convolution.
        layers: stride-2 convolutions; the smallest input side is $3\cdot 2^\text{layers}$.

    Examples:
        >>> import torch
        >>> d = PatchDiscriminator(channels=8)
        >>> d(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"PatchDiscriminator: layers must be positive, got {layers}")
        self.in_channels = in_channels
        self.layers = layers
        widths = [min(channels * 2**k, 8 * channels) for k in range(layers + 1)]
        net: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for k in range(1, layers):
            net += _conv_bn(widths[k - 1], widths[k], 4, 2)  # side / 2
        net += _conv_bn(widths[layers - 1], widths[layers], 4, 1)  # side - 1
        net.append(nn.Conv2d(widths[layers], 1, 4, 1, 1))  # side - 1
        self.net = nn.Sequential(*net)

    @property
    def min_size(self) -> int:
        """The smallest image side it accepts (the map of logits is then 1×1)."""
        return 3 * 2**self.layers

    def forward(self, x: Tensor) -> Tensor:
        """Images `(B, C, H, W)` → logits `(B, 1, H/2^layers - 2, W/2^layers - 2)`."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"PatchDiscriminator: expected images (B, {self.in_channels}, H, W) with "
                f"H, W >= {self.min_size}, received shape {tuple(x.shape)}"
            )
        return self.net(x)


# ------------------------------------------------------------------------------ GAN losses


def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"GAN loss must be one of {', '.join(GAN_LOSSES)}, got {kind!r}")


def generator_loss(fake: Tensor, real: Tensor | None = None, *, kind: str = "gan") -> Tensor:
    r"""The adversarial loss of the generator, from the discriminator's logits.

    With $\log\sigma(t) = -\mathrm{softplus}(-t)$ and means over every logit (batch and, for a
    patch discriminator, positions):

    $$
    L^\text{gan}_G = -\overline{\log\sigma(D(\hat x))}, \qquad
    L^\text{ragan}_G = -\tfrac12\Bigl(\overline{\log\bigl(1 - \sigma(D(x) -
    \overline{D(\hat x)})\bigr)} + \overline{\log\sigma\bigl(D(\hat x) - \overline{D(x)}\bigr)}
    \Bigr),
    $$

    the vanilla (non-saturating) loss and the relativistic average one, in which the generator
    also pushes real images to look *less* real than the average fake. The real logits are
    detached: only the generator is trained by this loss.

    References:
        I. Goodfellow et al., 2014, "Generative Adversarial Nets", arXiv:1406.2661, §3 (the
        non-saturating generator loss); X. Wang et al., 2018, arXiv:1809.00219, §3.2 Eq. 2.

    Args:
        fake: logits of the reconstructions, `(B, 1)` or `(B, 1, h, w)`.
        real: logits of the real images (needed for `"ragan"`).
        kind: `"gan"` or `"ragan"`.

    Examples:
        >>> import torch
        >>> round(float(generator_loss(torch.zeros(4, 1))), 4)  # log 2: D undecided
        0.6931
    """
    _check_kind(kind)
    if kind == "gan":
        return F.softplus(-fake).mean()
    if real is None:
        raise ValueError("generator_loss: the relativistic loss needs the real logits too")
    real = real.detach()
    return (F.softplus(real - fake.mean()).mean() + F.softplus(real.mean() - fake).mean()) / 2


def discriminator_loss(
    real: Tensor, fake: Tensor, *, kind: str = "gan"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The discriminator's loss on real images and (detached) reconstructions.

    $$
    L^\text{gan}_D = -\overline{\log\sigma(D(x))} - \overline{\log(1 - \sigma(D(\hat x)))},
    \qquad
    L^\text{ragan}_D = -\tfrac12\Bigl(\overline{\log\sigma\bigl(D(x) - \overline{D(\hat x)}
    \bigr)} + \overline{\log\bigl(1 - \sigma(D(\hat x) - \overline{D(x)})\bigr)}\Bigr),
    $$

    binary cross-entropies with the labels real = 1, fake = 0, each a plain mean.

    References:
        I. Goodfellow et al., 2014, arXiv:1406.2661, Eq. 1; X. Wang et al., 2018,
        arXiv:1809.00219, §3.2 Eq. 1.

    Args:
        real: logits of real images.
        fake: logits of reconstructions (computed from detached images).
        kind: `"gan"` or `"ragan"`.

    Returns:
        `(total, real_term, fake_term)`: the loss and its two cross-entropies (for the log).

    Examples:
        >>> import torch
        >>> total, r, f = discriminator_loss(torch.full((4, 1), 9.0), torch.full((4, 1), -9.0))
        >>> float(total) < 1e-3  # a discriminator that is sure and right
        True
    """
    _check_kind(kind)
    if kind == "gan":
        real_term, fake_term = F.softplus(-real).mean(), F.softplus(fake).mean()
        return real_term + fake_term, real_term, fake_term
    real_term = F.softplus(fake.mean() - real).mean() / 2
    fake_term = F.softplus(fake - real.mean()).mean() / 2
    return real_term + fake_term, real_term, fake_term


# ------------------------------------------------------------------------------ perceptual loss


class VGGWeightsMissingError(FileNotFoundError):
    r"""The perceptual loss asked for, but no VGG19 ImageNet weights on this machine."""


def vgg_features(
    layout: Sequence[int | str] = VGG19_LAYOUT, *, in_channels: int = 3
) -> nn.Sequential:
    r"""A VGG feature stack from its layout, randomly initialised, numbered as torchvision does.

    An integer $n$ adds `Conv2d(c, n, 3, padding=1)` and `ReLU`; `"M"` adds
    `MaxPool2d(2, 2)`. With `VGG19_LAYOUT` the modules and their state-dict keys
    (`"0.weight"`, …, `"34.bias"`) are those of torchvision's `vgg19().features`, so its
    checkpoints load (`load_vgg19_features`). A small layout gives a cheap stand-in for tests.

    Args:
        layout: convolution widths and `"M"` pooling marks.
        in_channels: channels of the input images.

    Examples:
        >>> net = vgg_features()
        >>> type(net[VGG19_CONV5_4]).__name__, net[VGG19_CONV5_4].out_channels, len(net)
        ('Conv2d', 512, 37)
    """
    layers: list[nn.Module] = []
    c = in_channels
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif isinstance(item, int):
            layers += [nn.Conv2d(c, item, 3, padding=1), nn.ReLU()]
            c = item
        else:
            raise ValueError(f"vgg_features: layout items are widths or 'M', got {item!r}")
    return nn.Sequential(*layers)


def vgg19_weights_path(path: str | os.PathLike[str] | None = None) -> Path:
    r"""Where the VGG19 ImageNet weights are looked for: `path`, else torchvision's cache.

    torchvision keeps downloaded weights in `torch.hub.get_dir()/checkpoints/`
    (`$TORCH_HOME/hub/checkpoints`, by default `~/.cache/torch/hub/checkpoints`).
    """
    if path is not None:
        return Path(path).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_WEIGHTS_FILE


def load_vgg19_features(
    path: str | os.PathLike[str] | None = None, *, cut: int = VGG19_CONV5_4
) -> nn.Sequential:
    r"""VGG19's ImageNet feature stack up to module `cut` (conv5_4, before its ReLU), frozen.

    Reads torchvision's checkpoint `vgg19-dcbb9e9d.pth` (the whole network's state dict; only
    the `features.*` entries are used) or a state dict of the feature stack alone, from `path`
    or torchvision's cache (`vgg19_weights_path`). Nothing is downloaded.

    Args:
        path: the weights file; `None` looks in torchvision's cache.
        cut: index of the last module kept.

    Raises:
        VGGWeightsMissingError: no file there; the message says how to get it.
        ValueError: a file without the VGG19 feature weights.
    """
    file = vgg19_weights_path(path)
    if not file.is_file():
        where = f"at {file}" if path is not None else f"in torchvision's cache ({file})"
        raise VGGWeightsMissingError(
            f"the perceptual loss needs VGG19 ImageNet weights and found none {where}; download "
            f"{VGG19_WEIGHTS_URL} once (torchvision.models.vgg19(weights='IMAGENET1K_V1') puts "
            "it in that cache) and set gan.vgg_weights=FILE or leave it in the cache, or set "
            "gan.perceptual_weight=0 to train with the GAN loss alone"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and any(str(k).startswith("features.") for k in state):
        state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
    features = nn.Sequential(*list(vgg_features())[: cut + 1])
    wanted = features.state_dict()
    missing = [k for k in wanted if k not in state or state[k].shape != wanted[k].shape]
    if missing:
        raise ValueError(
            f"{file} does not hold VGG19's feature weights (missing or misshapen: "
            f"{', '.join(missing[:3])}); expected torchvision's {VGG19_WEIGHTS_FILE}"
        )
    features.load_state_dict({k: state[k] for k in wanted})
    return features


class FeatureLoss(nn.Module):
    r"""Perceptual loss: the Charbonnier distance between frozen VGG features of two images.

    $$
    L_\text{per} = \tfrac1B \textstyle\sum_b \sum_j
    \sqrt{\bigl(\phi(\tilde x_b)_j - \phi(\tilde{\hat x}_b)_j\bigr)^2 + \epsilon},
    \qquad \tilde x = (x - \mu) / \sigma,
    $$

    with $\phi$ the feature stack (VGG19 up to conv5_4, before its ReLU, in IRN+), the input
    normalised per channel by the ImageNet mean $\mu$ and standard deviation $\sigma$, and the
    same sum-over-features, mean-over-batch reduction as the reconstruction loss. The VGG's
    parameters are frozen (no gradient ever reaches them); gradients flow to the reconstruction
    only, the target's features are computed without a graph.

    References:
        C. Ledig et al., 2017, arXiv:1609.04802, Eq. 5 (VGG loss); X. Wang et al., 2018,
        arXiv:1809.00219, §3.3 (features before activation); M. Xiao et al., 2020,
        arXiv:2005.05650, §4 (IRN+).

    Args:
        features: the feature stack, e.g. `load_vgg19_features()` (or a small random
            `vgg_features(...)` in tests); frozen in place.
        mean: per-channel mean subtracted from the input.
        std: per-channel standard deviation divided out.

    Examples:
        >>> import torch
        >>> loss = FeatureLoss(vgg_features([4, "M", 8]))
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> value = loss(x, torch.rand(2, 3, 16, 16))
        >>> value.backward()
        >>> x.grad is not None, all(p.grad is None for p in loss.parameters())
        (True, True)
    """

    def __init__(
        self,
        features: nn.Module,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> FeatureLoss:
        """The feature stack stays in eval mode (a fixed function)."""
        super().train(mode)
        self.features.eval()
        return self

    def extract(self, x: Tensor) -> Tensor:
        r"""$\phi((x - \mu)/\sigma)$ for images `(B, 3, H, W)` in [0, 1]."""
        return self.features((x - self.mean) / self.std)

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        """The loss between reconstructions `fake` and targets `real`, both `(B, 3, H, W)`."""
        with torch.no_grad():
            target = self.extract(real)
        diff = self.extract(fake) - target
        return _sum_per_sample(torch.sqrt(diff**2 + CHARBONNIER_EPS))


# ------------------------------------------------------------------------------ IRN+ objective


@dataclass
class IRNPlusLosses:
    r"""The terms of the IRN+ generator objective (0-d tensors, weights applied).

    Attributes:
        fit: LR guidance, as in `IRNLosses`.
        distr: latent term $\lambda_\text{ce}\frac1B\sum_b\|z_b\|^2$ (0 in the IRN+ recipe).
        rec: HR reconstruction (Charbonnier, summed over pixels, mean over the batch).
        gan: adversarial term $\lambda_\text{GAN} L_G$.
        perceptual: VGG feature term $\lambda_\text{per} L_\text{per}$ (0 when not used).
        total: the sum, what is differentiated.
    """

    fit: Tensor
    distr: Tensor
    rec: Tensor
    gan: Tensor
    perceptual: Tensor
    total: Tensor


def irn_plus_losses(
    model: IRN,
    hr: Tensor,
    lr_ref: Tensor,
    discriminator: nn.Module,
    *,
    kind: str = "gan",
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
    lambda_fit: float | None = None,
    lambda_rec: float = 0.01,
    lambda_ce: float = 0.0,
    gan_weight: float = 1.0,
    perceptual_weight: float = 0.0,
    feature_loss: FeatureLoss | None = None,
) -> tuple[IRNPlusLosses, Tensor]:
    r"""The IRN+ objective of the generator for one batch (see the module docstring).

    The fit, latent and reconstruction terms are those of `flowlearn.irn.irn_losses` (the same
    numbers for the same $\tilde z$); the adversarial and perceptual terms are added on the
    reconstruction $\hat x = f^{-1}([Q(y), \tilde z])$, which is returned for the
    discriminator's step.

    References:
        M. Xiao et al., 2020, arXiv:2005.05650, §3.3 and §4 (IRN+).

    Args:
        model: the `IRN` being fine-tuned.
        hr: HR batch `(B, 3, H, W)` in [0, 1].
        lr_ref: bicubic LR `(B, 3, H/s, W/s)`.
        discriminator: $D$, giving logits.
        kind: `"gan"` or `"ragan"` (`generator_loss`).
        z: latent of the reconstruction; drawn from $\mathcal{N}(0, I)$ with `generator` when
            `None`.
        generator: random generator for z.
        lambda_fit: weight of the LR guidance; `None` means $s^2$.
        lambda_rec: weight of the HR reconstruction (0.01 in IRN+).
        lambda_ce: weight of the latent term (0 in IRN+).
        gan_weight: $\lambda_\text{GAN}$.
        perceptual_weight: $\lambda_\text{per}$; needs `feature_loss` when positive.
        feature_loss: the `FeatureLoss`.

    Returns:
        `(losses, hr_rec)`: an `IRNPlusLosses` and the reconstruction `(B, 3, H, W)`.

    Examples:
        >>> import torch
        >>> from flowlearn import IRN
        >>> net, d = IRN(2, blocks=[1], growth=4), PatchDiscriminator(channels=4, layers=1)
        >>> hr = torch.rand(2, 3, 8, 8)
        >>> losses, hr_rec = irn_plus_losses(net, hr, torch.nn.functional.avg_pool2d(hr, 2), d)
        >>> hr_rec.shape, float(losses.perceptual)
        (torch.Size([2, 3, 8, 8]), 0.0)
    """
    _check_kind(kind)
    if perceptual_weight > 0 and feature_loss is None:
        raise ValueError("irn_plus_losses: a positive perceptual_weight needs a feature_loss")
    fit, distr, rec, hr_rec = _rescaling_terms(  # x̂ = hr_rec = f⁻¹([Q(y), z̃])
        "irn_plus_losses", model, hr, lr_ref, z, generator, lambda_fit, lambda_rec, lambda_ce
    )
    real_logits = discriminator(hr) if kind == "ragan" else None
    gan = gan_weight * generator_loss(discriminator(hr_rec), real_logits, kind=kind)
    perceptual = fit.new_zeros(())
    if perceptual_weight > 0:
        assert feature_loss is not None
        perceptual = perceptual_weight * feature_loss(hr_rec, hr)
    total = fit + distr + rec + gan + perceptual
    return IRNPlusLosses(fit, distr, rec, gan, perceptual, total), hr_rec


# ------------------------------------------------------------------------------ training stage

GENERATOR_TERMS = ("fit", "distr", "rec", "gan", "perceptual", "total")
"""The IRN's loss terms logged by an IRN+ run (`IRNPlusLosses`' fields)."""
DISCRIMINATOR_TERMS = ("d_real", "d_fake", "d_total")
"""The discriminator's loss terms logged by an IRN+ run (`IRNPlusStepLosses`)."""


@dataclass
class IRNPlusStepLosses(IRNPlusLosses):
    r"""Every loss of one IRN+ step, detached: the IRN's terms and the discriminator's.

    Attributes:
        d_real: the discriminator's cross-entropy on real images.
        d_fake: its cross-entropy on reconstructions.
        d_total: `d_real + d_fake`, what the discriminator minimises.
    """

    d_real: Tensor
    d_fake: Tensor
    d_total: Tensor


def build_discriminator(config: Config) -> nn.Module:
    r"""The discriminator that `config.gan` names, initialised from seed `data.seed + 2`.

    The global random state is left as it was, so the IRN's initialisation and the data order
    do not depend on whether a discriminator is built.
    """
    g = config.gan
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.data.seed + 2)
        if g.discriminator == "vgg128":
            return VGGDiscriminator(channels=g.channels)
        if g.discriminator == "patch":
            return PatchDiscriminator(channels=g.channels, layers=g.patch_layers)
    raise ValueError(f"gan.discriminator must be vgg128 or patch, got {g.discriminator!r}")


def trains_generator(step: int, d_init_steps: int, d_update_ratio: int = 1) -> bool:
    r"""Whether IRN+ step `step` (1-based) trains the IRN, or only the discriminator.

    The discriminator learns alone for the first `d_init_steps` steps (it must tell real from
    reconstructed before its verdict is worth following); after that the IRN is updated every
    `d_update_ratio`-th step, the discriminator at every step.

    Examples:
        >>> [s for s in range(1, 10) if trains_generator(s, d_init_steps=3, d_update_ratio=2)]
        [4, 6, 8]
    """
    return step > d_init_steps and step % d_update_ratio == 0


class IRNPlusStage:
    r"""The discriminator side of IRN+ training and its part of each step (see the module doc).

    `flowlearn.irn.train.train` builds one when `gan.discriminator` is set and, each step,
    calls `backward` in place of `irn_backward` (it fills the IRN's and the discriminator's
    gradients and returns every loss as a float), clips and steps the IRN's optimiser as usual,
    then calls `step` (the discriminator's Adam and schedule). The discriminator's weights,
    BatchNorm statistics, optimiser and schedule are in `state_dict`, saved in the training
    checkpoint, so a resumed run continues exactly.

    Args:
        config: the training configuration (its `gan`, `loss` and `optim` sections).
        device: where the discriminator (and VGG) live.

    Raises:
        VGGWeightsMissingError: `gan.perceptual_weight > 0` and no VGG19 weights here.
    """

    def __init__(self, config: Config, device: torch.device) -> None:
        g = config.gan
        self.kind = g.loss
        self.gan_weight = g.weight
        self.perceptual_weight = g.perceptual_weight
        self.d_init_steps = g.d_init_steps
        self.d_update_ratio = g.d_update_ratio
        self.lambda_fit = config.lambda_fit
        self.lambda_rec = config.loss.lambda_rec
        self.lambda_ce = config.loss.lambda_ce
        self.feature_loss: FeatureLoss | None = None
        if g.perceptual_weight > 0:  # fails at once, before any data is read
            self.feature_loss = FeatureLoss(load_vgg19_features(g.vgg_weights)).to(device)
        self.discriminator = build_discriminator(config).to(device).train()
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=g.lr, betas=g.betas, weight_decay=g.weight_decay
        )
        self.scheduler = irn_scheduler(  # the IRN's schedule, warm-up included
            self.optimizer,
            config.optim.milestones,
            gamma=config.optim.gamma,
            warmup=config.optim.warmup,
        )

    def trains_generator(self, step: int) -> bool:
        """Whether step `step` (1-based) updates the IRN (`trains_generator`)."""
        return trains_generator(step, self.d_init_steps, self.d_update_ratio)

    def backward(
        self,
        model: IRN,
        hr: Tensor,
        lr_ref: Tensor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> IRNPlusStepLosses:
        r"""Gradients of one IRN+ step: the IRN's (when it trains), then the discriminator's.

        Args:
            model: the IRN (its `.grad` are filled when `trains_generator(step)`).
            hr: HR batch `(B, 3, H, W)`.
            lr_ref: bicubic LR batch.
            step: the step being made, 1-based.
            generator: random generator of the reconstruction's latent.

        Returns:
            Every term, detached (`IRNPlusStepLosses`): the IRN's objective (computed without
            gradients while the IRN does not train) and the discriminator's.
        """
        d = self.discriminator

        def objective() -> tuple[IRNPlusLosses, Tensor]:
            return irn_plus_losses(
                model,
                hr,
                lr_ref,
                d,
                kind=self.kind,
                generator=generator,
                lambda_fit=self.lambda_fit,
                lambda_rec=self.lambda_rec,
                lambda_ce=self.lambda_ce,
                gan_weight=self.gan_weight,
                perceptual_weight=self.perceptual_weight,
                feature_loss=self.feature_loss,
            )

        if self.trains_generator(step):
            d.requires_grad_(False)  # D is fixed while the IRN learns to fool it
            try:
                losses, hr_rec = objective()
                losses.total.backward()
            finally:
                d.requires_grad_(True)
        else:
            with torch.no_grad():
                losses, hr_rec = objective()
        self.optimizer.zero_grad(set_to_none=True)
        d_total, d_real, d_fake = discriminator_loss(d(hr), d(hr_rec.detach()), kind=self.kind)
        d_total.backward()
        terms = {name: getattr(losses, name).detach() for name in GENERATOR_TERMS}
        return IRNPlusStepLosses(
            **terms, d_real=d_real.detach(), d_fake=d_fake.detach(), d_total=d_total.detach()
        )

    def step(self) -> None:
        """The discriminator's Adam step and learning-rate schedule step."""
        self.optimizer.step()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """Discriminator weights and statistics, optimiser and schedule (`torch.save`-able)."""
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler_state(self.scheduler),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler_state(self.scheduler, state["scheduler"])
