"""Small test nets written the way the published code writes them (residuals by subtraction, differences of
branches, LeakyReLU with a nearest-upsampled image added): DnCNN (KAIR), FastViT's RepMixer (ml-fastvit, timm),
Real-ESRGAN's SRVGGNetCompact. Our own code; only the forward structure, and so the exported ops, follow them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.published.reparam import randomize_bn


class DnCNN(nn.Module):
    """Conv+ReLU head, Conv+BN+ReLU body, Conv tail; the output is the input minus the predicted noise."""

    def __init__(self, channels: int = 3, features: int = 64, layers: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = features
        body: list[nn.Module] = [nn.Conv2d(channels, features, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(features, features, 3, 1, 1), nn.BatchNorm2d(features), nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(features, channels, 3, 1, 1))
        self.model = nn.Sequential(*body)
        self.layers = layers
        randomize_bn(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.model(x)
        return x - noise


def conv_bn(channels: int, kernel: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel, 1, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(channels),
    )


class MobileOneBlock(nn.Module):
    """Training-time MobileOne block, depthwise, no activation: skip BN + 1x1 scale branch + kxk conv branches,
    summed starting from 0 as the published forward does (a missing branch contributes the integer 0)."""

    def __init__(
        self, channels: int, kernel: int, *, scale_branch: bool = True, conv_branches: int = 1
    ) -> None:
        super().__init__()
        self.skip = nn.BatchNorm2d(channels)
        self.scale = conv_bn(channels, 1, channels) if scale_branch else None
        self.convs = nn.ModuleList(conv_bn(channels, kernel, channels) for _ in range(conv_branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity_out = self.skip(x)
        scale_out = self.scale(x) if self.scale is not None else 0
        out = scale_out + identity_out
        for conv in self.convs:
            out += conv(x)
        return out


class RepMixer(nn.Module):
    """x + layer_scale * (mixer(x) - norm(x)): mixer is a full MobileOne block, norm its BN-only form."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.norm = MobileOneBlock(channels, kernel, scale_branch=False, conv_branches=0)
        self.mixer = MobileOneBlock(channels, kernel)
        self.layer_scale = nn.Parameter(1e-1 * torch.rand(channels, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))


class ConvFFN(nn.Module):
    """Depthwise 7x7 conv + BN, 1x1 expand, GELU, 1x1 project (FastViT's ConvFFN)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = conv_bn(channels, 7, channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    def __init__(self, channels: int, kernel: int = 3, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.token_mixer = RepMixer(channels, kernel)
        self.convffn = ConvFFN(channels, channels * mlp_ratio)
        self.layer_scale = nn.Parameter(1e-1 * torch.rand(channels, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale * self.convffn(x)


class RepMixerNet(nn.Module):
    """A stem conv, ``blocks`` RepMixer blocks and a head conv: image in, image out.

    ``deploy_convs``: what the library's reparameterize leaves: one conv per mixer, three per ConvFFN (the 7x7
    conv with its BN folded, fc1, fc2), plus stem and head.
    """

    def __init__(self, channels: int = 8, blocks: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, channels, 3, 1, 1)
        self.blocks = nn.Sequential(*(RepMixerBlock(channels) for _ in range(blocks)))
        self.head = nn.Conv2d(channels, 3, 3, 1, 1)
        self.deploy_convs = 2 + 4 * blocks
        randomize_bn(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class RepMixerOnly(nn.Module):
    """One RepMixer on an image-sized input (the block alone; deploys as one depthwise conv)."""

    def __init__(self, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.mixer = RepMixer(channels)
        randomize_bn(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)


class CompactSR(nn.Module):
    """SRVGGNetCompact: Conv+LeakyReLU(0.1) body, last conv to 3·s² channels, PixelShuffle, plus the
    nearest-upsampled input."""

    def __init__(self, features: int = 8, convs: int = 3, upscale: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        body: list[nn.Module] = [
            nn.Conv2d(3, features, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
        ]
        for _ in range(convs):
            body += [nn.Conv2d(features, features, 3, 1, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True)]
        body.append(nn.Conv2d(features, 3 * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(body)
        self.upsampler = nn.PixelShuffle(upscale)
        self.upscale = upscale
        self.activations = convs + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        out += base
        return out
