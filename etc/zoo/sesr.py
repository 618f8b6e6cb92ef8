"""SESR (collapsible linear blocks) for RGB: wide linear blocks at train time, one conv each after collapsing.

    LinearBlock(k, residual):  x ──> Conv kxk (cin -> E) -> Conv1x1 (E -> cout) ──> (+ x if residual)

    x ─► LB5x5(3->C) ─┬─► [LB3x3(C->C, residual) -> PReLU] x M ─► Add ─► LB5x5(C->3s²) ─► Add ─► DepthToSpace(s)
                      └──────────────── long skip ───────────────┘                      ▲
    x ─► repeat_interleave(s²) (global skip) ────────────────────────────────────────────┘

Deploy form: M + 2 convs (each linear block is one kxk conv; the residual is its identity kernel).
E (``expand``) is 256 in the paper; smaller values keep tests fast.
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import anchor, keep_global_rng, seeded_init_


class LinearBlock(nn.Module):
    """Conv kxk (cin -> expand) then Conv1x1 (expand -> cout), plus the input when ``residual``."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, residual: bool = False) -> None:
        super().__init__()
        self.wide = nn.Conv2d(cin, expand, kernel, padding=kernel // 2)
        self.narrow = nn.Conv2d(expand, cout, 1)
        self.residual = residual and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.narrow(self.wide(x))
        return y + x if self.residual else y


class SESR(nn.Module):
    """SESR-M{M} with C channels for RGB input, upscale ``scale``."""

    @keep_global_rng
    def __init__(
        self, M: int = 5, C: int = 16, scale: int = 2, expand: int = 256, *, seed: int | None = 0
    ) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        self.first = LinearBlock(3, C, 5, expand)
        self.blocks = nn.ModuleList([LinearBlock(C, C, 3, expand, residual=True) for _ in range(M)])
        self.acts = nn.ModuleList([nn.PReLU(C) for _ in range(M)])
        self.last = LinearBlock(C, 3 * scale**2, 5, expand)
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, seed)
        self.eval()

    @property
    def deploy_convs(self) -> int:
        return self.M + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.first(x)
        y = skip
        for block, act in zip(self.blocks, self.acts):
            y = act(block(y))
        y = self.last(y + skip) + anchor(x, self.scale)
        return self.upsampler(y)
