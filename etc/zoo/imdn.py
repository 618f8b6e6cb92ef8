"""IMDN (Hui et al., ACM MM 2019): information multi-distillation blocks with contrast-aware channel attention.

    IMDB(x), C channels, d = C // 4 distilled, r = C - d remaining, act = LeakyReLU(0.05):

    x ─► Conv3x3(C->C) ─► act ─► Split(d, r) ─ d1
                                        └ r ─► Conv3x3(r->C) ─► act ─► Split(d, r) ─ d2
                                                                  └ r ─► Conv3x3(r->C) ─► act ─► Split ─ d3
                                                                                                  └ r ─► Conv3x3(r->d) ─ d4
    Concat(d1, d2, d3, d4) ─► CCA ─► Conv1x1(4d->C) ─► Add(x)

    CCA(y) = y · sigmoid(Conv1x1(Relu(Conv1x1(std_hw(y) + mean_hw(y)))))      (contrast-aware channel attention)

    IMDN: fea = Conv3x3(3->C)(x); B_1..B_M = IMDB chain; Conv1x1(M·C->C) ─► act ─► Conv3x3 ─► Add(fea)
          ─► Conv3x3(C->3s²) ─► PixelShuffle(s)

The paper's configuration is M=6 IMDBs of C=64; the zoo default is small (M=3, C=32). CCA's reduction is 16 as
in the paper (at least one hidden channel). Random init only: no weights are shipped.

What a compiler can and cannot make plain here: the channel splits are selections of conv rows; the Concat of
the four distilled parts feeding CCA is data, not weights. CCA (global mean/std, Sigmoid, Mul) stays.
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import DistillationSR, conv3, keep_global_rng

SLOPE = 0.05


def stdv_channels(y: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over H and W (population variance), shape N x C x 1 x 1."""
    mean = y.mean(dim=(2, 3), keepdim=True)
    return (y - mean).pow(2).mean(dim=(2, 3), keepdim=True).pow(0.5)


class CCA(nn.Module):
    """Contrast-aware channel attention: y · sigmoid(MLP(std(y) + mean(y)))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        stats = stdv_channels(y) + y.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(stats))))
        return y * gate


class IMDB(nn.Module):
    """Information multi-distillation block: three distillation steps, CCA over the concatenated parts, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.distilled = max(1, channels // 4)
        self.remaining = channels - self.distilled
        d, r = self.distilled, self.remaining
        self.c1 = conv3(channels, channels)
        self.c2 = conv3(r, channels)
        self.c3 = conv3(r, channels)
        self.c4 = conv3(r, d)
        self.cca = CCA(4 * d)
        self.c5 = nn.Conv2d(4 * d, channels, 1)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled, self.remaining)
        d1, r = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r = torch.split(self.act(self.c2(r)), split, dim=1)
        d3, r = torch.split(self.act(self.c3(r)), split, dim=1)
        d4 = self.c4(r)
        return self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1))) + x


class IMDN(DistillationSR):
    """IMDN with M IMDBs of C channels for RGB input, upscale ``scale``."""

    @keep_global_rng
    def __init__(self, M: int = 3, C: int = 32, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__(M, C, scale, lambda: IMDB(C), SLOPE, seed)
