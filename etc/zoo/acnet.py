"""ACNet-style super-resolution net: every conv is an asymmetric block (3x3-BN + 1x3-BN + 3x1-BN) at train time.

    x ──> Conv3x3 (pad 1)      -> BN ──┐
    x ──> Conv1x3 (pads 0,1)   -> BN ──┼─> Add -> ReLU          (no ReLU after the last block)
    x ──> Conv3x1 (pads 1,0)   -> BN ──┘

    ACNetSR: ACBlock(3->C) [ACBlock(C->C)] x M ACBlock(C->3s²) PixelShuffle(s)

Deploy form: one 3x3 conv per block (``deploy_convs`` = M + 2): the 1x3 and 3x1 kernels sit in the middle row
and column of the 3x3 (their "same" pads make this exact at the border).
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import BlockChainSR, keep_global_rng
from etc.zoo.repvgg import conv_bn, fuse_conv_bn


class ACBlock(nn.Module):
    """3x3-BN + 1x3-BN + 3x1-BN summed, then ReLU."""

    def __init__(self, cin: int, cout: int, act: bool = True) -> None:
        super().__init__()
        self.square = conv_bn(cin, cout, 3, 1)
        self.hor = conv_bn(cin, cout, (1, 3), (0, 1))
        self.ver = conv_bn(cin, cout, (3, 1), (1, 0))
        self.act: nn.Module = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.square(x) + self.hor(x) + self.ver(x))

    @torch.no_grad()
    def rep(self) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [fuse_conv_bn(b) for b in (self.square, self.hor, self.ver)]
        return sum(k for k, _ in parts), sum(b for _, b in parts)  # type: ignore[return-value]


class ACNetSR(BlockChainSR):
    """AC blocks 3->C, M x C->C, C->3s², then PixelShuffle(s)."""

    @keep_global_rng
    def __init__(self, M: int = 4, C: int = 16, scale: int = 4, *, seed: int | None = 0) -> None:
        blocks = [ACBlock(3, C), *[ACBlock(C, C) for _ in range(M)], ACBlock(C, 3 * scale**2, False)]
        super().__init__(M, C, scale, blocks, seed)
