"""A FastViT-style net written the way timm's ``fastvit.py`` writes its training-time blocks (our own code; only the
forward structure, and so the exported ops, follows the library):

- ``MobileOneBlock``: k conv+BN branches, a 1x1 conv+BN scale branch, a BN identity branch when the shape allows,
  summed; optional SE; GELU (or nothing, ``act=False``).
- ``ReparamLargeKernelConv``: a large depthwise conv+BN plus a small one on the same input, summed, then GELU.
- ``RepMixer``: ``x + layer_scale * (mixer(x) - norm(x))`` with the mixer a MobileOneBlock without act and the
  norm a BN-only MobileOneBlock.
- ``ConvMlp``: depthwise 7x7 conv+BN, 1x1 up (``mlp_ratio``), GELU, 1x1 down, scaled into a residual.

``FastViT()`` defaults to fastvit_t8's size: a 3-block MobileOne stem, stages of (2, 2, 4, 2) RepMixer blocks at
48/96/192/384 channels with patch-embedding downsamples, a final depthwise MobileOne 3x3 with SE to 768 channels and a
pooled linear head (about 3.3 M parameters, 357 ONNX nodes from the legacy exporter).
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.published.reparam import ConvBN, MobileOneBlock, randomize_bn


def fast_block(
    cin: int, cout: int, kernel: int, stride: int = 1, *, gelu: bool = True, **options
) -> nn.Module:
    """timm fastvit's MobileOneBlock (training form): GELU or no activation, squeeze-excite reduced to
    max(cout / 16, 8); ``options`` as :class:`MobileOneBlock` takes them (depthwise, branches, se, scale_branch)."""
    act = nn.GELU() if gelu else nn.Identity()
    return MobileOneBlock(cin, cout, kernel, stride, act=act, se_reduced=max(cout // 16, 8), **options)


class ReparamLargeKernelConv(nn.Module):
    """Large depthwise kxk conv+BN plus a small depthwise conv+BN on the same input, summed, then GELU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, small: int = 3) -> None:
        super().__init__()
        self.large = ConvBN(cin, cout, kernel, stride, cin)
        self.small = ConvBN(cin, cout, small, stride, cin)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.large(x) + self.small(x))


class PatchEmbed(nn.Sequential):
    """The downsample between stages: a 7x7 stride-2 large-kernel conv then a pointwise MobileOne block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(ReparamLargeKernelConv(cin, cout, 7, 2), fast_block(cout, cout, 1))


class RepMixer(nn.Module):
    """``x + layer_scale * (mixer(x) - norm(x))``: the token mixer of FastViT."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.norm = fast_block(dim, dim, kernel, depthwise=True, branches=0, scale_branch=False, gelu=False)
        self.mixer = fast_block(dim, dim, kernel, depthwise=True, gelu=False)
        self.layer_scale = nn.Parameter(0.1 * torch.randn(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))


class ConvMlp(nn.Module):
    """Depthwise 7x7 conv+BN, 1x1 to ``ratio``·dim, GELU, 1x1 back."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, 1, dim)
        self.fc1 = nn.Conv2d(dim, dim * ratio, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(dim * ratio, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    """RepMixer then a scaled ConvMlp residual."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim)
        self.mlp = ConvMlp(dim, ratio)
        self.layer_scale = nn.Parameter(0.1 * torch.randn(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale * self.mlp(x)


class FastViT(nn.Module):
    """fastvit_t8's layout by default; ``dims``/``layers`` shrink it for tests; ``classes=0`` drops the head."""

    def __init__(
        self,
        dims: tuple[int, ...] = (48, 96, 192, 384),
        layers: tuple[int, ...] = (2, 2, 4, 2),
        ratio: int = 3,
        classes: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        stem = [
            fast_block(3, dims[0], 3, 2),
            fast_block(dims[0], dims[0], 3, 2, depthwise=True),
            fast_block(dims[0], dims[0], 1),
        ]
        stages: list[nn.Module] = []
        for i, (dim, count) in enumerate(zip(dims, layers)):
            if i > 0:
                stages.append(PatchEmbed(dims[i - 1], dim))
            stages.extend(RepMixerBlock(dim, ratio) for _ in range(count))
        final = fast_block(dims[-1], 2 * dims[-1], 3, depthwise=True, se=True)
        self.features = nn.Sequential(*stem, *stages, final)
        self.head = nn.Linear(2 * dims[-1], classes) if classes else None
        randomize_bn(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.head is None:
            return x
        return self.head(x.mean((2, 3)))
