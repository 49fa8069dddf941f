r"""Conditioner networks ("subnets") for coupling layers, and the factories that build them.

A coupling layer never chooses its own network: it receives a factory
`subnet(c_in, c_out) -> nn.Module` (`flowlearn.core.SubnetFactory`) and calls it once per
network it needs. The module maps `(B, c_in)` to `(B, c_out)` for vectors, or
`(B, c_in, H, W)` to `(B, c_out, H, W)` for images (same height and width).

* `MLP` / `mlp`: fully connected, for vectors `(B, D)`.
* `ConvNet` / `conv_net`: three convolutions as in Glow, for images.
* `DenseBlock` / `dense_block`: the five-convolution dense block of the Invertible Rescaling Net.

The last layer of `MLP` and `ConvNet` starts at zero, and `DenseBlock`'s last convolution is
zero as in IRN, so a freshly built coupling layer is the identity map; training starts from
there. (Check such a layer with `flowlearn.checks.jitter_parameters` first.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowlearn.core import SubnetFactory, check_channels, check_rank

__all__ = [
    "MLP",
    "ConvNet",
    "DenseBlock",
    "conv_net",
    "dense_block",
    "mlp",
]


def _check_positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value}")


class MLP(nn.Module):
    r"""A fully connected network `(B, c_in) -> (B, c_out)` with ReLU activations.

    $$
    h_0 = x,\quad h_k = \mathrm{ReLU}(W_k h_{k-1} + b_k)\ (k = 1..\text{depth}),\quad
    \text{out} = W_{\text{depth}+1} h_{\text{depth}} + b_{\text{depth}+1} .
    $$

    Args:
        c_in: input features; input `(B, c_in)`.
        c_out: output features; output `(B, c_out)`.
        hidden: width of every hidden layer.
        depth: number of hidden layers (at least 1).
        zero_init: start the last layer at zero, so the network outputs zeros.

    Examples:
        >>> import torch
        >>> from flowlearn import MLP
        >>> net = MLP(3, 4, hidden=16)
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 4])
        >>> bool(net(torch.randn(5, 3)).eq(0).all())  # zero-initialised last layer
        True
    """

    def __init__(
        self, c_in: int, c_out: int, *, hidden: int = 64, depth: int = 2, zero_init: bool = True
    ) -> None:
        super().__init__()
        _check_positive("MLP", c_in=c_in, c_out=c_out, hidden=hidden, depth=depth)
        self.c_in, self.c_out = c_in, c_out
        layers: list[nn.Module] = [nn.Linear(c_in, hidden), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        last = nn.Linear(hidden, c_out)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map `(B, c_in)` to `(B, c_out)`."""
        check_rank(self, x, (2,))
        check_channels(self, x, self.c_in)
        return self.net(x)


class ConvNet(nn.Module):
    r"""A three-convolution network `(B, c_in, H, W) -> (B, c_out, H, W)`, as in Glow.

    $$
    \text{out} = \mathrm{conv}_{k\times k}\bigl(\mathrm{ReLU}(\mathrm{conv}_{1\times 1}(
    \mathrm{ReLU}(\mathrm{conv}_{k\times k}(x))))\bigr),
    $$

    with `hidden` channels in between and "same" padding, so height and width are kept.

    References:
        D. P. Kingma, P. Dhariwal, 2018. "Glow: Generative Flow with Invertible 1x1
        Convolutions." arXiv:1807.03039, §3.3 (zero initialisation of the last convolution of
        NN()) and §5 (NN(): 3×3 conv, ReLU, 1×1 conv, ReLU, 3×3 conv).

    Args:
        c_in: input channels; input `(B, c_in, H, W)`.
        c_out: output channels; output `(B, c_out, H, W)`.
        hidden: channels of the two hidden feature maps.
        kernel_size: odd size $k$ of the first and last convolution.
        zero_init: start the last convolution at zero, so the network outputs zeros.

    Examples:
        >>> import torch
        >>> from flowlearn import ConvNet
        >>> net = ConvNet(2, 6, hidden=8)
        >>> net(torch.randn(1, 2, 5, 7)).shape
        torch.Size([1, 6, 5, 7])
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        hidden: int = 64,
        kernel_size: int = 3,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        _check_positive("ConvNet", c_in=c_in, c_out=c_out, hidden=hidden)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"ConvNet: kernel_size must be odd (to keep height and width), got {kernel_size}"
            )
        self.c_in, self.c_out = c_in, c_out
        pad = kernel_size // 2
        last = nn.Conv2d(hidden, c_out, kernel_size, padding=pad)
        if zero_init:
            assert last.bias is not None
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            last,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map `(B, c_in, H, W)` to `(B, c_out, H, W)`."""
        check_rank(self, x, (4,))
        check_channels(self, x, self.c_in)
        return self.net(x)


class DenseBlock(nn.Module):
    r"""The dense block of the Invertible Rescaling Net, `(B, c_in, H, W) -> (B, c_out, H, W)`.

    Five 3×3 convolutions (padding 1, with bias); each sees the input and all earlier
    feature maps, concatenated along channels ($g$ = `growth`):

    $$
    \begin{aligned}
    x_1 &= \mathrm{lrelu}(\mathrm{conv}_1(x)), &
    x_2 &= \mathrm{lrelu}(\mathrm{conv}_2([x, x_1])), \\
    x_3 &= \mathrm{lrelu}(\mathrm{conv}_3([x, x_1, x_2])), &
    x_4 &= \mathrm{lrelu}(\mathrm{conv}_4([x, x_1, x_2, x_3])), \\
    \text{out} &= \mathrm{conv}_5([x, x_1, x_2, x_3, x_4]) , &
    \mathrm{lrelu}(v) &= \max(v, 0.2\,v),
    \end{aligned}
    $$

    where $\mathrm{conv}_k$ has $c_{in} + (k-1)g$ input channels ($g$ outputs for $k \le 4$,
    $c_{out}$ for $k = 5$) and there is no activation after $\mathrm{conv}_5$. It is the
    ESRGAN dense block without its residual connection. Trainable parameters:

    $$
    \sum_{i=0}^{3}\bigl((c_{in} + i g)\cdot 9 g + g\bigr) + (c_{in} + 4g)\cdot 9\,c_{out}
    + c_{out} .
    $$

    Initialisation follows the original IRN code exactly, in the same order of random draws, so
    that `torch.manual_seed` gives the same weights: PyTorch's default initialisation of
    conv1..conv5 at construction, then `xavier_normal_` on the weights of conv1..conv4, each
    scaled by 0.1 with zero bias, then `kaiming_normal_(a=0, mode="fan_in")` on conv5's weight,
    scaled by 0, with zero bias. conv5 is therefore zero and the block outputs zeros. The
    attribute names `conv1` … `conv5` give the state-dict keys of the original checkpoints.

    `forward` is this formula, line by line. `flowlearn.irn.fast` holds a faster arrangement of
    the same arithmetic for IRN training (fewer, larger convolution calls), tested equal to it.

    References:
        M. Xiao, S. Zheng, C. Liu, Y. Wang, D. He, G. Ke, J. Bian, Z. Lin, T.-Y. Liu, 2020.
        "Invertible Image Rescaling." ECCV 2020, arXiv:2005.05650, §4.1 (the transformation
        functions φ, ρ, η are densely connected convolutional blocks).

        X. Wang, K. Yu, S. Wu, J. Gu, Y. Liu, C. Dong, C. C. Loy, Y. Qiao, X. Tang, 2018.
        "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks." arXiv:1809.00219,
        §3.1 (the dense block inside the residual-in-residual dense block, Fig. 4).

    Args:
        c_in: input channels; input `(B, c_in, H, W)`.
        c_out: output channels; output `(B, c_out, H, W)`.
        growth: channels $g$ added by each of conv1..conv4 (32 in IRN).

    Examples:
        >>> import torch
        >>> from flowlearn import DenseBlock
        >>> block = DenseBlock(9, 3)
        >>> sum(p.numel() for p in block.parameters())  # IRN's F subnet at 12 channels
        69494
        >>> bool(block(torch.randn(1, 9, 4, 4)).eq(0).all())  # conv5 starts at zero
        True
    """

    def __init__(self, c_in: int, c_out: int, *, growth: int = 32) -> None:
        super().__init__()
        _check_positive("DenseBlock", c_in=c_in, c_out=c_out, growth=growth)
        self.c_in, self.c_out, self.growth = c_in, c_out, growth
        g = growth
        # construction order conv1..conv5 = order of PyTorch's default random initialisation
        self.conv1 = nn.Conv2d(c_in, g, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(c_in + g, g, 3, padding=1, bias=True)
        self.conv3 = nn.Conv2d(c_in + 2 * g, g, 3, padding=1, bias=True)
        self.conv4 = nn.Conv2d(c_in + 3 * g, g, 3, padding=1, bias=True)
        self.conv5 = nn.Conv2d(c_in + 4 * g, c_out, 3, padding=1, bias=True)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
                nn.init.xavier_normal_(conv.weight)
                conv.weight.mul_(0.1)
                assert conv.bias is not None
                nn.init.zeros_(conv.bias)
            nn.init.kaiming_normal_(self.conv5.weight, a=0, mode="fan_in")
            self.conv5.weight.mul_(0.0)  # multiplied, not zeroed: the same draws, as in IRN
            assert self.conv5.bias is not None
            nn.init.zeros_(self.conv5.bias)

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, growth={self.growth}"

    def forward(self, x: Tensor) -> Tensor:
        """Map `(B, c_in, H, W)` to `(B, c_out, H, W)`; `x` itself is never modified."""
        check_rank(self, x, (4,))
        check_channels(self, x, self.c_in)
        # the in-place LeakyReLU acts on fresh convolution outputs only, never on x
        x1 = self.lrelu(self.conv1(x))  # (B, g, H, W)
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # (B, c_out, H, W), no activation


def mlp(hidden: int = 64, depth: int = 2) -> SubnetFactory:
    r"""Factory of zero-initialised `MLP` subnets for vector couplings.

    Args:
        hidden: width of the hidden layers.
        depth: number of hidden layers.

    Returns:
        `subnet(c_in, c_out) -> MLP(c_in, c_out, hidden=hidden, depth=depth)`.

    Examples:
        >>> from flowlearn import mlp
        >>> mlp(hidden=8)(2, 4)(torch.zeros(1, 2)).shape
        torch.Size([1, 4])
    """
    _check_positive("mlp", hidden=hidden, depth=depth)

    def subnet(c_in: int, c_out: int) -> nn.Module:
        return MLP(c_in, c_out, hidden=hidden, depth=depth)

    return subnet


def conv_net(hidden: int = 64) -> SubnetFactory:
    r"""Factory of zero-initialised `ConvNet` subnets for image couplings.

    Args:
        hidden: channels of the hidden feature maps.

    Returns:
        `subnet(c_in, c_out) -> ConvNet(c_in, c_out, hidden=hidden)`.

    Examples:
        >>> from flowlearn import conv_net
        >>> conv_net(hidden=8)(3, 6)(torch.zeros(1, 3, 4, 4)).shape
        torch.Size([1, 6, 4, 4])
    """
    _check_positive("conv_net", hidden=hidden)

    def subnet(c_in: int, c_out: int) -> nn.Module:
        return ConvNet(c_in, c_out, hidden=hidden)

    return subnet


def dense_block(growth: int = 32) -> SubnetFactory:
    r"""Factory of IRN `DenseBlock` subnets (the original's `subnet("DBNet", "xavier")`).

    Args:
        growth: channels added by each inner convolution (32 in IRN).

    Returns:
        `subnet(c_in, c_out) -> DenseBlock(c_in, c_out, growth=growth)`.

    Examples:
        >>> from flowlearn import dense_block
        >>> dense_block()(3, 9).conv5.weight.shape
        torch.Size([9, 131, 3, 3])
    """
    _check_positive("dense_block", growth=growth)

    def subnet(c_in: int, c_out: int) -> nn.Module:
        return DenseBlock(c_in, c_out, growth=growth)

    return subnet
