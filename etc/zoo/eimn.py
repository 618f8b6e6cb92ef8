"""EIMN (Liu et al., ECAI 2023, "Efficient Information Modulation Network"), a small configuration.

Structure as in the authors' published model definition (their ``EIMN_L`` is C=64, 16 stages; ``EIMN_A`` 14
stages); the zoo default is small (M=3 stages, C=32), one block per stage.

    EIMN:  fea = Conv3x3(3->C)(x);  y = fea;  per stage: y = LayerNorm_C(EIMNBlock(y))
           out = PixelShuffle(s)(Conv3x3(C->3s²)(fea + y))

    EIMNBlock(y) = y + γ1 · MOLRCM(BN1(y)) ;  then  y + γ2 · SADFFM(BN2(y))     (γ: per-channel layer scales)

    MOLRCM (multi-order long-range convolutional modulation), C split as c1 = 3C/8, c2 = C/8, c3 = rest:
        v = Conv1x1(z)                                                               (value)
        q = DWConv5x5(GELU(Conv1x1(z)))                                              (query, depthwise)
        q1, q2, q3 = Split(q, c1, c2, c3)
        q = Concat(DWConv5x5 dilation 2 (q1), q2, DWConv7x7 dilation 3 (q3))          (multi-scale, depthwise)
        g = Conv1x1(q);  MOLRCM(z) = Conv1x1(g · sigmoid(g) · v)                      (SiLU gate, modulation)

    SADFFM (spatial-aware dynamic feed-forward), hidden h = int(C · 2.66):
        a, b = Split(DWConv3x3(Conv1x1(z, C->2h)), h, h);  u = Conv1x1(GELU(a) · b, h->C);  SADFFM(z) = DFFM(u)
    DFFM(u) (dynamic feature fusion), r = C/4, n = channel LayerNorm(u):
        g = GELU(Conv1x1(GlobalAvgPool(n), C->r));  l = GELU(Conv1x1(n, C->r))
        DFFM(u) = u · sigmoid(Conv1x1(g, r->C)) · sigmoid(Conv1x1(Concat(l, broadcast g), 2r->1))

Random init only (no weights shipped): convs He-uniform, BatchNorm statistics, LayerNorm affines and the layer
scales γ seeded-random (γ in [0.1, 0.5] rather than the paper's 1e-2 start, so the modulation branches matter in
tests). The in-place ``x.mul_(x.sigmoid())`` of the original is written out of place; dropout/drop-path (0 at
inference) are left out.

What a compiler can make plain: BatchNorm before 1x1 convs and the constant layer scales fold into convs; channel
splits are selections of conv rows. GELU, SiLU, Sigmoid, products, LayerNorm and global pooling stay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.common import conv3, keep_global_rng, seeded_init_


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor, written out (mean, variance, affine) as in EIMN's DFFM."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MOLRCM(nn.Module):
    """Multi-order long-range convolutional modulation: SiLU-gated multi-scale depthwise query times a value."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        c1, c2 = max(1, 3 * dim // 8), max(1, dim // 8)
        self.split = (c1, c2, dim - c1 - c2)
        self.proj_value = nn.Conv2d(dim, dim, 1)
        self.proj_query = nn.Conv2d(dim, dim, 1)
        self.region = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.spatial_1 = nn.Conv2d(c1, c1, 5, padding=4, groups=c1, dilation=2)
        c3 = self.split[2]
        self.spatial_2 = nn.Conv2d(c3, c3, 7, padding=9, groups=c3, dilation=3)
        self.fusion = nn.Conv2d(dim, dim, 1)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        value = self.proj_value(z)
        query = self.region(F.gelu(self.proj_query(z)))
        q1, q2, q3 = torch.split(query, self.split, dim=1)
        gate = self.fusion(torch.cat([self.spatial_1(q1), q2, self.spatial_2(q3)], dim=1))
        return self.out(gate * torch.sigmoid(gate) * value)


class DFFM(nn.Module):
    """Dynamic feature fusion: channel gate from global statistics times a spatial gate from local + global."""

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        r = max(1, int(channels * ratio))
        self.norm = ChannelLayerNorm(channels)
        self.global_reduce = nn.Conv2d(channels, r, 1)
        self.local_reduce = nn.Conv2d(channels, r, 1)
        self.channel_expand = nn.Conv2d(r, channels, 1)
        self.spatial_expand = nn.Conv2d(2 * r, 1, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n = self.norm(u)
        g = F.gelu(self.global_reduce(F.adaptive_avg_pool2d(n, 1)))
        local = F.gelu(self.local_reduce(n))
        c_attn = torch.sigmoid(self.channel_expand(g))
        s_attn = torch.sigmoid(self.spatial_expand(torch.cat([local, g.expand_as(local)], dim=1)))
        return u * (c_attn * s_attn)


class SADFFM(nn.Module):
    """Spatial-aware dynamic feed-forward: gated depthwise MLP followed by DFFM."""

    def __init__(self, dim: int, expand: float = 2.66) -> None:
        super().__init__()
        self.hidden = max(1, int(dim * expand))
        self.linear_in = nn.Conv2d(dim, 2 * self.hidden, 1)
        self.sal = nn.Conv2d(2 * self.hidden, 2 * self.hidden, 3, padding=1, groups=2 * self.hidden)
        self.linear_out = nn.Conv2d(self.hidden, dim, 1)
        self.dffm = DFFM(dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.sal(self.linear_in(z)), self.hidden, dim=1)
        return self.dffm(self.linear_out(F.gelu(a) * b))


class EIMNBlock(nn.Module):
    """BN -> MOLRCM and BN -> SADFFM, each scaled per channel and added back (a transformer-style block)."""

    def __init__(self, dim: int, expand: float = 2.66) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MOLRCM(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = SADFFM(dim, expand)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))


class EIMN(nn.Module):
    """EIMN with M stages (one EIMNBlock + LayerNorm each) of C channels for RGB input, upscale ``scale``."""

    @keep_global_rng
    def __init__(self, M: int = 3, C: int = 32, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        self.head = conv3(3, C)
        self.blocks = nn.ModuleList([EIMNBlock(C) for _ in range(M)])
        self.norms = nn.ModuleList([nn.LayerNorm(C) for _ in range(M)])
        self.tail = nn.Sequential(conv3(C, 3 * scale * scale), nn.PixelShuffle(scale))
        seeded_init_(self, seed)
        _seeded_norms_(self, seed)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.head(x)
        y = fea
        for block, norm in zip(self.blocks, self.norms):
            y = norm(block(y).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.tail(fea + y)


def _seeded_norms_(module: nn.Module, seed: int | None) -> None:
    """Random, deterministic BatchNorm statistics, LayerNorm affines and layer scales (zeros when seed is None)."""
    gen = torch.Generator().manual_seed(20_000 + (seed or 0))

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(
            torch.rand(t.shape, generator=gen) * (hi - lo) + lo if seed is not None else torch.zeros_like(t)
        )

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                uniform(m.weight, 0.5, 1.5)
                uniform(m.bias, -0.1, 0.1)
                uniform(m.running_mean, -0.1, 0.1)
                uniform(m.running_var, 0.5, 2.0)
            elif isinstance(m, nn.LayerNorm | ChannelLayerNorm):
                uniform(m.weight, 0.5, 1.5)
                uniform(m.bias, -0.1, 0.1)
            elif isinstance(m, EIMNBlock):
                uniform(m.layer_scale_1, 0.1, 0.5)
                uniform(m.layer_scale_2, 0.1, 0.5)
