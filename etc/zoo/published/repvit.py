"""A RepViT-style net written the way timm's ``repvit.py`` writes its training-time blocks (our own code; only the
forward structure, and so the exported ops, follows the library):

- ``RepVggDw``: ``bn(dwconv_kxk_bn(x) + dwconv_1x1_bn(x) + x)``, the re-parameterizable token mixer;
- ``RepViTBlock``: token mixer, SE on every other block, then a residual 1x1-GELU-1x1 (conv+BN) channel mixer;
- ``RepViTDownsample``: a block, a depthwise stride-2 conv+BN, a 1x1 conv+BN, and a residual channel mixer;
- ``RepViTStem``: two 3x3 stride-2 conv+BN with GELU between.

``RepViT()`` defaults to repvit_m0_9's size: 48/96/192/384 channels, (2, 2, 14, 2) blocks, MLP ratio 2, a pooled
linear head (about 5 M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.published.reparam import ConvBN, SqueezeExcite, randomize_bn


class RepVggDw(nn.Module):
    """Depthwise kxk conv+BN plus depthwise 1x1 conv+BN plus the input, then BN."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, kernel, 1, dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, dim)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)


class RepViTMlp(nn.Sequential):
    """1x1 conv+BN up, GELU, 1x1 conv+BN down."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(ConvBN(dim, hidden, 1, 1, 1), nn.GELU(), ConvBN(hidden, dim, 1, 1, 1))


class RepViTBlock(nn.Module):
    def __init__(self, dim: int, ratio: int, se: bool) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim)
        self.se: nn.Module = SqueezeExcite(dim, max(dim // 4, 8)) if se else nn.Identity()
        self.channel_mixer = RepViTMlp(dim, dim * ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class RepViTDownsample(nn.Module):
    def __init__(self, cin: int, cout: int, ratio: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(cin, ratio, se=False)
        self.spatial_downsample = ConvBN(cin, cin, 3, 2, cin)
        self.channel_downsample = ConvBN(cin, cout, 1, 1, 1)
        self.ffn = RepViTMlp(cout, cout * ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class RepViT(nn.Module):
    """repvit_m0_9's layout by default; ``dims``/``depths`` shrink it for tests; ``classes=0`` drops the head."""

    def __init__(
        self,
        dims: tuple[int, ...] = (48, 96, 192, 384),
        depths: tuple[int, ...] = (2, 2, 14, 2),
        ratio: int = 2,
        classes: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers: list[nn.Module] = [
            ConvBN(3, dims[0] // 2, 3, 2, 1),
            nn.GELU(),
            ConvBN(dims[0] // 2, dims[0], 3, 2, 1),
        ]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i > 0:
                layers.append(RepViTDownsample(dims[i - 1], dim, ratio))
            layers.extend(RepViTBlock(dim, ratio, se=j % 2 == 0) for j in range(depth))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(dims[-1], classes) if classes else None
        randomize_bn(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.head is None:
            return x
        return self.head(x.mean((2, 3)))
