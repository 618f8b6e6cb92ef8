"""Plain: conv_first, M backbone convs, conv_last, ReLU between, PixelShuffle, no clamp (``Plain_M6C32_x4``).

x -> Conv3x3(3->C) -> ReLU -> [Conv3x3(C->C) -> ReLU] x M -> Conv3x3(C->3s²) -> PixelShuffle(s)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.common import (
    StateDict,
    conv3,
    keep_global_rng,
    load_exact,
    plain_sizes,
    seeded_init_,
)


class Plain(nn.Module):
    """Plain conv/ReLU super-resolution net; keys ``conv_first``, ``backbone_convs.{i}``, ``conv_last``."""

    @keep_global_rng
    def __init__(self, M: int = 6, C: int = 32, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        self.conv_first = conv3(3, C)
        self.backbone_convs = nn.ModuleList(conv3(C, C) for _ in range(M))
        self.conv_last = conv3(C, 3 * scale * scale)
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv_first(x))
        for conv in self.backbone_convs:
            y = F.relu(conv(y))
        return self.upsampler(self.conv_last(y))

    @classmethod
    def from_state_dict(cls, sd: StateDict) -> Plain:
        """Build from an official state dict, inferring M, C and the scale from the shapes."""
        M, C, scale = plain_sizes(sd)
        return load_exact(cls(M, C, scale, seed=None), sd)
