"""FSRCNN: feature extraction, shrinking, mapping, expanding (PReLU after each), then a strided ConvTranspose.

x -> Conv5x5(3->d) PReLU -> Conv1x1(d->s) PReLU -> [Conv3x3(s->s) PReLU] x m -> Conv1x1(s->d) PReLU
  -> ConvTranspose9x9(d->3, stride r, padding 4, output_padding r-1)      (output is r·H x r·W)
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import StateDict, count_prefix, keep_global_rng, load_exact, seeded_init_


class FSRCNN(nn.Module):
    """FSRCNN with the official keys ``first_part``, ``mid_part``, ``last_part`` (d=56, s=12, m=4)."""

    @keep_global_rng
    def __init__(self, scale: int = 4, *, d: int = 56, s: int = 12, m: int = 4, seed: int | None = 0) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)
        seeded_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))

    @classmethod
    def from_state_dict(cls, sd: StateDict, scale: int) -> FSRCNN:
        """Build from an official state dict; the stride is not stored in the weights, so pass ``scale``."""
        d, s = sd["first_part.0.weight"].shape[0], sd["mid_part.0.weight"].shape[0]
        m = count_prefix(sd, "mid_part.") // 2 - 2
        return load_exact(cls(scale, d=d, s=s, m=m, seed=None), sd)
