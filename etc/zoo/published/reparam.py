"""Small test nets written the way two published re-parameterizable families write their training-time blocks,
each with the library's own deploy-time fusion computed in torch from the same weights (``deploy()``):

- timm's MobileOne (byobnet ``MobileOneBlock``): k conv+BN branches, a 1x1 conv+BN scale branch when k > 1, a BN
  identity branch when the shape allows; summed in place starting from the scale branch; optional SE; ReLU.
  Stacked as timm stacks it: a 3x3 stride-2 stem block, then depthwise kxk (stride 1 or 2) + pointwise 1x1 pairs.
- SPAN's ``Conv3XC``: 1x1 -> 3x3 (no padding) -> 1x1 on the zero-padded input, plus a 1x1 skip on the unpadded
  input; in SPAN's SPAB blocks with SiLU and the ``(out + x) * (sigmoid(out) - 0.5)`` attention.

Our own code; only the forward structure (and so the exported ops) and the fusion algebra follow the libraries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def randomize_bn(net: nn.Module, seed: int) -> nn.Module:
    """Non-trivial eval-mode statistics and affine parameters in every BatchNorm (a trained net's BN)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return net.eval()


class ConvBN(nn.Module):
    """Conv (no bias, timm's symmetric padding ((s - 1) + (k - 1)) // 2) followed by BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__()
        pad = ((stride - 1) + (kernel - 1)) // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = (bn.running_var + bn.eps).sqrt()
    return bn.weight / std, bn.bias - bn.running_mean * bn.weight / std


class SqueezeExcite(nn.Module):
    """timm's SEModule: x * sigmoid(fc2(relu(fc1(mean over H, W))))."""

    def __init__(self, channels: int, reduced: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(squeezed)


class MobileOneBlock(nn.Module):
    """Training-time MobileOne block; ``groups == cin`` is the depthwise variant, ``kernel == 1`` pointwise.

    timm writes it once for MobileOne (ReLU, the defaults here) and once for FastViT (GELU or no activation,
    squeeze-excite reduced to max(cout / 16, 8), optionally no 1x1 scale branch): ``act``, ``se_reduced`` and
    ``scale_branch`` cover both."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        *,
        depthwise: bool = False,
        branches: int = 1,
        se: bool = False,
        scale_branch: bool = True,
        act: nn.Module | None = None,
        se_reduced: int = 8,
    ) -> None:
        super().__init__()
        self.groups = cin if depthwise else 1
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.conv_kxk = nn.ModuleList(ConvBN(cin, cout, kernel, stride, self.groups) for _ in range(branches))
        self.conv_scale = ConvBN(cin, cout, 1, stride, self.groups) if kernel > 1 and scale_branch else None
        self.attn: nn.Module = SqueezeExcite(cout, se_reduced) if se else nn.Identity()
        self.act = act if act is not None else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity_out = self.identity(x) if self.identity is not None else 0
        out = self.conv_scale(x) if self.conv_scale is not None else 0
        for branch in self.conv_kxk:
            out += branch(x)
        out += identity_out
        return self.act(self.attn(out))

    @torch.no_grad()
    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel and bias of the single deploy conv: every branch's BN folded, the 1x1 zero-padded to kxk,
        the identity as a centre tap on each channel's own input (within its group), all summed."""
        template = self.conv_kxk[0].conv
        kernel, bias = torch.zeros_like(template.weight), torch.zeros(template.out_channels)
        for branch in self.conv_kxk:
            scale, shift = bn_scale_shift(branch.bn)
            kernel += branch.conv.weight * scale[:, None, None, None]
            bias += shift
        k = template.kernel_size[0]
        if self.conv_scale is not None:
            scale, shift = bn_scale_shift(self.conv_scale.bn)
            pad = k // 2
            kernel += F.pad(self.conv_scale.conv.weight * scale[:, None, None, None], [pad] * 4)
            bias += shift
        if self.identity is not None:
            scale, shift = bn_scale_shift(self.identity)
            per_group = template.in_channels // self.groups
            channels = torch.arange(template.out_channels)
            kernel[channels, channels % per_group, k // 2, k // 2] += scale
            bias += shift
        return kernel, bias

    @torch.no_grad()
    def deploy(self) -> nn.Sequential:
        """timm's ``reparameterize``: one conv with the kxk branches' geometry, then the block's attn and act."""
        template = self.conv_kxk[0].conv
        conv = nn.Conv2d(
            template.in_channels,
            template.out_channels,
            template.kernel_size,
            template.stride,
            template.padding,
            groups=template.groups,
        )
        conv.weight.copy_(self.fused()[0])
        conv.bias.copy_(self.fused()[1])
        return nn.Sequential(conv, self.attn, self.act)


class MobileOneStack(nn.Module):
    """A 3x3 stride-2 stem block, then depthwise-kxk + pointwise pairs: stride 1 at C, stride 2 to 2C, stride 1
    with SE on the last pair. ``branches`` is timm's ``num_conv_branches`` (4 in mobileone_s0)."""

    def __init__(self, channels: int = 8, kernel: int = 3, branches: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        wide = 2 * channels
        self.blocks = nn.Sequential(
            MobileOneBlock(3, channels, 3, 2, depthwise=False, branches=branches),
            *self.pair(channels, channels, kernel, 1, branches),
            *self.pair(channels, wide, kernel, 2, branches),
            *self.pair(wide, wide, kernel, 1, branches, se=True),
        )
        randomize_bn(self, seed)

    @staticmethod
    def pair(
        cin: int, cout: int, kernel: int, stride: int, branches: int, se: bool = False
    ) -> list[nn.Module]:
        return [
            MobileOneBlock(cin, cin, kernel, stride, depthwise=True, branches=branches, se=se),
            MobileOneBlock(cin, cout, 1, 1, depthwise=False, branches=branches, se=se),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    @torch.no_grad()
    def deploy(self) -> nn.Sequential:
        return nn.Sequential(*(block.deploy() for block in self.blocks)).eval()


class Conv3XC(nn.Module):
    """SPAN's training form: sk(x) + conv1x1(conv3x3_valid(conv1x1(pad(x, 1)))), biases everywhere.

    The zero padding sits on the block input, before the first 1x1, so the border the 3x3 sees is that 1x1's
    bias (not zero): exactly why the three convs compose into one 3x3 with zero padding.
    """

    def __init__(self, cin: int, cout: int, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(cin, cout, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cin * gain, 1),
            nn.Conv2d(cin * gain, cout * gain, 3),
            nn.Conv2d(cout * gain, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1), "constant", 0)) + self.sk(x)

    @torch.no_grad()
    def deploy(self) -> nn.Conv2d:
        """SPAN's ``update_params``: the 1x1-3x3-1x1 chain composed tap by tap, the 1x1 skip added at the centre."""
        first, middle, last = self.conv
        w1, w3 = first.weight[:, :, 0, 0], last.weight[:, :, 0, 0]
        kernel = torch.einsum("om,mnyx,ni->oiyx", w3, middle.weight, w1)
        bias = w3 @ (middle.bias + middle.weight.sum((2, 3)) @ first.bias) + last.bias
        kernel[:, :, 1, 1] += self.sk.weight[:, :, 0, 0]
        conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias + self.sk.bias)
        return conv


class SPAB(nn.Module):
    """Three Conv3XC with SiLU between; returns the attended output and the first conv's output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1_r, self.c2_r, self.c3_r = (Conv3XC(channels, channels) for _ in range(3))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(self.act(self.c2_r(self.act(out1))))
        attention = torch.sigmoid(out3) - 0.5
        return (out3 + x) * attention, out1


def tail(
    conv_cat: nn.Module | None,
    features: torch.Tensor,
    last: torch.Tensor,
    first: torch.Tensor,
    inner: torch.Tensor,
) -> torch.Tensor:
    """SPAN's 1x1 over the four-way concat, or the last conv's output alone."""
    return last if conv_cat is None else conv_cat(torch.cat([features, last, first, inner], 1))


class SPAN(nn.Module):
    """SPAN's layout at small size: (x - mean) * 255, Conv3XC, ``blocks`` SPABs, Conv3XC, a 1x1 over the concat of
    the first features, the last conv's output, the first block's output and the last block's first conv (after
    the in-place SiLU, as published), then a 3x3 conv and PixelShuffle. Without ``concat_tail`` the last Conv3XC
    feeds the upsampler directly. ``deploy_convs``: one conv per Conv3XC, the 1x1 and the upsampler conv."""

    def __init__(
        self, channels: int = 8, blocks: int = 2, upscale: int = 2, *, concat_tail: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.conv_1 = Conv3XC(3, channels)
        self.blocks = nn.ModuleList(SPAB(channels) for _ in range(blocks))
        self.conv_2 = Conv3XC(channels, channels)
        self.conv_cat = nn.Conv2d(4 * channels, channels, 1) if concat_tail else None
        self.upsampler = nn.Sequential(
            nn.Conv2d(channels, 3 * upscale**2, 3, padding=1), nn.PixelShuffle(upscale)
        )
        self.deploy_convs = 2 + 3 * blocks + 1 + concat_tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv_1((x - self.mean) * 255.0)
        out, first_out = features, features
        for i, block in enumerate(self.blocks):
            out, inner = block(out)
            first_out = out if i == 0 else first_out
        return self.upsampler(tail(self.conv_cat, features, self.conv_2(out), first_out, inner))

    @torch.no_grad()
    def deploy(self) -> SPANDeployed:
        return SPANDeployed(self).eval()


class SPANDeployed(nn.Module):
    """The same net with every Conv3XC replaced by its fused 3x3 (SPAN's ``eval_conv``)."""

    def __init__(self, net: SPAN) -> None:
        super().__init__()
        self.register_buffer("mean", net.mean.clone())
        self.conv_1 = net.conv_1.deploy()
        self.blocks = nn.ModuleList(
            nn.ModuleList([block.c1_r.deploy(), block.c2_r.deploy(), block.c3_r.deploy()])
            for block in net.blocks
        )
        self.act = nn.SiLU(inplace=True)
        self.conv_2 = net.conv_2.deploy()
        self.conv_cat = net.conv_cat
        self.upsampler = net.upsampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv_1((x - self.mean) * 255.0)
        out, first_out = features, features
        for i, (c1, c2, c3) in enumerate(self.blocks):
            inner = c1(out)
            out3 = c3(self.act(c2(self.act(inner))))
            out = (out3 + out) * (torch.sigmoid(out3) - 0.5)
            first_out = out if i == 0 else first_out
        return self.upsampler(tail(self.conv_cat, features, self.conv_2(out), first_out, inner))
