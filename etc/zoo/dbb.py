"""Diverse Branch Block super-resolution net (DBB): four branches per block at train time.

    x ──> Conv kxk (pad k//2) -> BN ─────────────────────────────────┐
    x ──> Conv1x1 -> BN ─────────────────────────────────────────────┤
    x ──> Conv1x1 (pad k//2, bias) -> BN -> Conv kxk (pad 0) -> BN ──┼─> Add -> ReLU   (no ReLU in the last block)
    x ──> Conv1x1 (pad k//2, bias) -> BN -> AvgPool kxk (pad 0) -> BN┘

The 1x1 convs pad their input (as ECB does), so their output border holds BN(bias): the same value the
re-parameterized kxk conv produces at the border, which makes every branch merge exactly. (The original DBB pads
the BN output with the BN bias explicitly; zero-padding the 1x1 input is the same function.)

    DBBSR: DBB(3->C) [DBB(C->C)] x M DBB(C->3s²) PixelShuffle(s); deploy: one kxk conv per block.
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import BlockChainSR, keep_global_rng
from etc.zoo.repvgg import conv_bn


class DBBlock(nn.Module):
    """kxk-BN, 1x1-BN, 1x1-BN-kxk-BN and 1x1-BN-avg-BN branches summed, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, act: bool = True) -> None:
        super().__init__()
        pad = kernel // 2
        self.square = conv_bn(cin, cout, kernel, pad)
        self.one = conv_bn(cin, cout, 1, 0)
        self.one_square = nn.Sequential(
            nn.Conv2d(cin, cin, 1, padding=pad),
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, kernel, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.one_avg = nn.Sequential(
            nn.Conv2d(cin, cout, 1, padding=pad),
            nn.BatchNorm2d(cout),
            nn.AvgPool2d(kernel, stride=1),
            nn.BatchNorm2d(cout),
        )
        self.act: nn.Module = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.square(x) + self.one(x) + self.one_square(x) + self.one_avg(x))


class DBBSR(BlockChainSR):
    """DBB blocks 3->C, M x C->C, C->3s², then PixelShuffle(s)."""

    @keep_global_rng
    def __init__(
        self, M: int = 4, C: int = 16, scale: int = 4, kernel: int = 3, *, seed: int | None = 0
    ) -> None:
        blocks = [DBBlock(3, C, kernel)]
        blocks += [DBBlock(C, C, kernel) for _ in range(M)]
        blocks.append(DBBlock(C, 3 * scale**2, kernel, act=False))
        super().__init__(M, C, scale, blocks, seed)
