"""Small SR nets in the shapes that made exact rewrites expensive (issue: cost-aware compilation).

Written after the published structures, in our own code and at test sizes:
* :class:`GhostBottleneckSR`: RepGhost bottlenecks, a 1x1 primary conv whose output a depthwise 3x3 "cheap" op
  reads next to a BatchNorm on the same tensor (added, re-parameterizable), and a shortcut of depthwise conv +
  1x1 conv on the block input, so the residual Add reads two different tensors through depthwise convs.
* :class:`PartialLargeKernelSR`: PLKSR blocks, a 3x3 channel mixer, a large-kernel conv on the first channels of a
  split with the other channels passed through and concatenated, a 1x1 refinement and a residual.
* :class:`ResBlockSR`: EDSR residual blocks (conv-relu-conv scaled and added to a signed input) behind a head conv
  without activation, a global residual and a pixel-shuffle tail.
* :class:`CompactSR`: Real-ESRGAN's compact net: a long Conv+activation chain, a pixel-shuffle tail, plus the
  nearest-upsampled image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic random weights, BatchNorm statistics included (so folding has something to do)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + 0.1 * torch.rand(m.running_var.shape, generator=gen))
    return module.eval()


def _conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class GhostModule(nn.Module):
    """1x1 primary conv (+BN); a depthwise 3x3 cheap op and a BN on the same tensor, added; optional ReLU."""

    def __init__(self, cin: int, cout: int, relu: bool) -> None:
        super().__init__()
        self.primary = nn.Sequential(*_conv_bn(cin, cout, 1), *([nn.ReLU()] if relu else []))
        self.cheap = _conv_bn(cout, cout, 3, groups=cout)
        self.fusion = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary(x)
        x2 = self.cheap(x1) + self.fusion(x1)
        return F.relu(x2) if self.relu else x2


class GhostBottleneck(nn.Module):
    """ghost(relu) -> ghost, plus a depthwise + 1x1 shortcut on the input (the widths differ)."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.ghost1 = GhostModule(cin, mid, relu=True)
        self.ghost2 = GhostModule(mid, cout, relu=False)
        self.shortcut = nn.Sequential(*_conv_bn(cin, cin, 3, groups=cin), *_conv_bn(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


class GhostBottleneckSR(nn.Module):
    def __init__(self, channels: int = 16, scale: int = 2, seed: int = 0) -> None:
        super().__init__()
        c = channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(GhostBottleneck(c, 2 * c, 2 * c), GhostBottleneck(2 * c, 2 * c, c))
        self.tail = nn.Conv2d(c, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        _seeded(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.blocks(F.relu(self.head(x)))))


class PartialLargeKernel(nn.Module):
    """A large-kernel conv on the first ``idx`` channels; the others pass through and are concatenated."""

    def __init__(self, channels: int, idx: int, kernel: int) -> None:
        super().__init__()
        self.idx = idx
        self.conv = nn.Conv2d(idx, idx, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.idx, x.size(1) - self.idx], dim=1)
        return torch.cat([self.conv(x1), x2], dim=1)


class PartialLargeKernelBlock(nn.Module):
    def __init__(self, channels: int, idx: int, kernel: int) -> None:
        super().__init__()
        self.mixer = nn.Conv2d(channels, channels, 3, padding=1)
        self.lk = PartialLargeKernel(channels, idx, kernel)
        self.refine = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.lk(F.relu(self.mixer(x)))) + x


class PartialLargeKernelSR(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 2, kernel: int = 13, scale: int = 2, seed: int = 0):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.Sequential(
            *[PartialLargeKernelBlock(channels, channels // 4, kernel) for _ in range(blocks)]
        )
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        _seeded(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.blocks(self.head(x))))


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


class ResBlockSR(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 3, scale: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(channels, 0.5) for _ in range(blocks)], nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        _seeded(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.upsample(self.body(h) + h))


class CompactSR(nn.Module):
    def __init__(self, channels: int = 32, convs: int = 16, scale: int = 2, seed: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)
        self.scale = scale
        _seeded(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


MODELS = {
    "ghost_bottleneck": GhostBottleneckSR,
    "partial_large_kernel": PartialLargeKernelSR,
    "res_blocks": ResBlockSR,
    "compact": CompactSR,
}
