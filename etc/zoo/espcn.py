"""ESPCN: conv5x5(3->64) -> tanh -> conv3x3(64->32) -> tanh -> conv3x3(32->3s²) -> PixelShuffle(s) -> sigmoid."""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import StateDict, conv3, keep_global_rng, load_exact, scale_from_channels, seeded_init_


class ESPCN(nn.Module):
    """ESPCN with the official keys ``conv1``, ``conv2``, ``conv3``."""

    @keep_global_rng
    def __init__(self, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(3, 64, 5, padding=2)
        self.conv2 = conv3(64, 32)
        self.conv3 = conv3(32, 3 * scale * scale)
        self.pixel_shuffle = nn.PixelShuffle(scale)
        seeded_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv1(x))
        y = torch.tanh(self.conv2(y))
        return torch.sigmoid(self.pixel_shuffle(self.conv3(y)))

    @classmethod
    def from_state_dict(cls, sd: StateDict) -> ESPCN:
        """Build from an official state dict (the scale is read from ``conv3``)."""
        return load_exact(cls(scale_from_channels(sd["conv3.weight"].shape[0]), seed=None), sd)
