"""RFDN (Liu et al., ECCV 2020 workshops): residual feature distillation blocks with enhanced spatial attention.

    RFDB(x), C channels, d = C // 2, act = LeakyReLU(0.05), SRB(z) = Conv3x3(z) + z (shallow residual block):

    x ─► Conv1x1(C->d) ─► act ─────────────────────────────────────────── d1
    x ─► SRB ─► act = r1 ─► Conv1x1(C->d) ─► act ───────────────────────── d2
                        r1 ─► SRB ─► act = r2 ─► Conv1x1(C->d) ─► act ──── d3
                                             r2 ─► SRB ─► act ─► Conv3x3(C->d) ─► act ─ d4
    Concat(d1, d2, d3, d4) ─► Conv1x1(4d->C) ─► ESA

    ESA(y), f = C // 4:
    y ─► Conv1x1(C->f) = c ─► Conv3x3 stride 2 (no pad) ─► MaxPool 7x7/3 ─► Conv3x3 ─► Relu ─► Conv3x3 ─► Relu
                        │                                      ─► Conv3x3 ─► Resize(bilinear, to y's H x W) ─┐
                        └► Conv1x1(f->f) ──────────────────────────────────────────────────────────────────── Add
    ─► Conv1x1(f->C) ─► Sigmoid = m ;  ESA(y) = y · m

    RFDN: fea = Conv3x3(3->C)(x); B_1..B_M = RFDB chain; Conv1x1(M·C->C) ─► act ─► Conv3x3 ─► Add(fea)
          ─► Conv3x3(C->3s²) ─► PixelShuffle(s)

The paper uses M=4 RFDBs of C=48 (RFDN) or 50 (RFDN, AIM 2020); the zoo default is small (M=4, C=32).
Deviation, on purpose: ESA's 7x7/3 max-pool is padded by ``pool_padding=3`` (default) so the net runs at any input
of at least 3x3 pixels; the paper pools without padding, which needs inputs of at least 15x15 (``pool_padding=0``
reproduces it). Random init only: no weights are shipped.

What a compiler can make plain: each SRB is Conv3x3 + identity, one conv (parallel merge); Conv1x1 -> Conv1x1
pairs compose. ESA (strided conv, max-pool, bilinear Resize, Sigmoid, Mul) stays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.common import DistillationSR, conv3, keep_global_rng

SLOPE = 0.05


class SRB(nn.Module):
    """Shallow residual block: Conv3x3(z) + z."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3(channels, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(z) + z


class ESA(nn.Module):
    """Enhanced spatial attention: a strided, pooled, bilinearly upsampled mask gates the features."""

    def __init__(self, channels: int, pool_padding: int = 3) -> None:
        super().__init__()
        f = max(1, channels // 4)
        self.pool_padding = pool_padding
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv_max = conv3(f, f)
        self.conv3 = conv3(f, f)
        self.conv3_ = conv3(f, f)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(y)
        c1 = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3, padding=self.pool_padding)
        c3 = torch.relu(self.conv3(torch.relu(self.conv_max(c1))))
        c3 = F.interpolate(self.conv3_(c3), size=y.shape[2:], mode="bilinear", align_corners=False)
        mask = torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
        return y * mask


class RFDB(nn.Module):
    """Residual feature distillation block: 1x1 distillation convs beside shallow residual blocks, then ESA."""

    def __init__(self, channels: int, pool_padding: int = 3) -> None:
        super().__init__()
        d = max(1, channels // 2)
        self.c1_d, self.c2_d, self.c3_d = (nn.Conv2d(channels, d, 1) for _ in range(3))
        self.c1_r, self.c2_r, self.c3_r = (SRB(channels) for _ in range(3))
        self.c4 = conv3(channels, d)
        self.c5 = nn.Conv2d(4 * d, channels, 1)
        self.esa = ESA(channels, pool_padding)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x))
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1))
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2))
        d4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, d4], dim=1)))


class RFDN(DistillationSR):
    """RFDN with M RFDBs of C channels for RGB input, upscale ``scale``."""

    @keep_global_rng
    def __init__(
        self, M: int = 4, C: int = 32, scale: int = 4, pool_padding: int = 3, *, seed: int | None = 0
    ) -> None:
        super().__init__(M, C, scale, lambda: RFDB(C, pool_padding), SLOPE, seed)
