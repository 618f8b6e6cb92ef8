"""ECBSR: deploy form (one conv per block), training-time ECB form, and the official hand-converted ECBSR_ET.

ECBSR (deploy):  y = PS(s)(body(x) + repeat_interleave(x, s², dim=1)), optionally clamped to [0, 1]
                 body = Conv(3->C) PReLU [Conv(C->C) PReLU] x M Conv(C->3s²)
ECBSRTrain:      the same with every conv an ECB block summing five branches on the same input x:

    x ──> Conv3x3(pad 1) ──────────────────────────────────────────────┐
    x ──> Pad0(1) -> Conv1x1(c->2c, bias) -> Conv3x3(pad 0) ───────────┤
    x ──> Pad0(1) -> Conv1x1(bias) -> DWConv(Sobel-x) -> Mul(a) -> Add(b) ─┤ Add -> PReLU (identity in the last block)
    x ──> Pad0(1) -> Conv1x1(bias) -> DWConv(Sobel-y) -> Mul(a) -> Add(b) ─┤
    x ──> Pad0(1) -> Conv1x1(bias) -> DWConv(Laplacian) -> Mul(a) -> Add(b)┘

    Zero-padding the input of a biased 1x1 conv pads its output with the bias, which is what makes the branches
    re-parameterize exactly (borders included): K = Σ_m K1[:, m] K0[m, :], B = b1 + Σ_m b0[m] ΣK1[:, m].
ECBSR_ET:        Conv(3->C+4) PReLU [Conv(C+4->C+4) PReLU] x M Conv(C+4->3s²[+1]) ReLU Conv1x1 ReLU [drop] PS(s)
                 (image carried in the last 3 channels with PReLU slope 0; clamp as Conv(-W, 1-b)/Conv1x1(-I, 1)).

ECBSR_ET equals ECBSR(clamp=True) for inputs >= 0; on the shared pretrained pairs the difference is ~2e-6
(float rounding only), and ``ECBSR_ET.from_ecbsr`` reproduces the official ECBSR_ET weights bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.common import (
    AnchoredSR,
    CarriedImageSR,
    StateDict,
    backbone_sizes,
    clip_1x1_,
    conv3,
    embed_,
    keep_global_rng,
    load_exact,
    one_minus_with_anchor_,
    seeded_init_,
)

SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def _pad1(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1))


def _deploy_blocks(cin: int, C: int, M: int, out: int, head: bool) -> list[nn.Module]:
    """Blocks ``[Conv, PReLU]`` x (M+1), then ``[Conv(C->out)]`` if ``head``."""
    blocks: list[nn.Module] = [nn.Sequential(conv3(cin, C), nn.PReLU(C))]
    blocks += [nn.Sequential(conv3(C, C), nn.PReLU(C)) for _ in range(M)]
    if head:
        blocks.append(nn.Sequential(conv3(C, out)))
    return blocks


class ECBSR(AnchoredSR):
    """ECBSR after re-parameterization (``ECBSR_M{b}C{c}_x{s}``); keys ``backbone.{i}.0`` conv, ``.1`` PReLU."""

    @keep_global_rng
    def __init__(
        self, M: int = 4, C: int = 16, scale: int = 4, clamp: bool = False, *, seed: int | None = 0
    ) -> None:
        super().__init__(M, C, scale, clamp)
        self.backbone = nn.Sequential(*_deploy_blocks(3, C, M, 3 * scale * scale, head=True))
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, seed)

    @classmethod
    def from_state_dict(cls, sd: StateDict, clamp: bool = False) -> ECBSR:
        """Build from an official deploy state dict."""
        M, C, scale = backbone_sizes(sd, 2, 1, conv="0.weight")
        return load_exact(cls(M, C, scale, clamp, seed=None), sd)


class Conv1x1Conv3x3(nn.Module):
    """Zero-Pad(1) -> Conv1x1 (bias) -> Conv3x3 (pad 0): a 1x1 conv whose output border holds its bias."""

    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cmid, 1)
        self.conv1 = nn.Conv2d(cmid, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.conv0(_pad1(x)))

    def rep(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Equivalent 3x3 (pad 1) kernel and bias."""
        k0, b0 = self.conv0.weight[:, :, 0, 0], self.conv0.bias
        k1, b1 = self.conv1.weight, self.conv1.bias
        return torch.einsum("omhw,mi->oihw", k1, k0), b1 + torch.einsum("omhw,m->o", k1, b0)


class Conv1x1Mask(nn.Module):
    """Zero-Pad(1) -> Conv1x1 (bias) -> fixed depthwise 3x3 mask -> Mul(per-channel scale) -> Add(per-channel bias)."""

    def __init__(self, cin: int, cout: int, mask: tuple[tuple[float, ...], ...]) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cout, 1)
        kernel = torch.tensor(mask, dtype=torch.float32).expand(cout, 1, 3, 3).clone()
        self.register_buffer("mask", kernel, persistent=False)
        self.scale = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(self.conv0(_pad1(x)), self.mask, groups=self.mask.shape[0])
        return y * self.scale + self.bias

    def rep(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Equivalent 3x3 (pad 1) kernel and bias."""
        a = self.scale.view(-1)
        k0, b0 = self.conv0.weight[:, :, 0, 0], self.conv0.bias
        kernel = a[:, None, None, None] * self.mask * k0[:, :, None, None]
        bias = self.bias.view(-1) + a * self.mask.sum(dim=(1, 2, 3)) * b0
        return kernel, bias


class ECB(nn.Module):
    """Edge-oriented convolution block (training time): five parallel branches summed, then the activation."""

    def __init__(self, cin: int, cout: int, act: bool = True, depth_multiplier: int = 2) -> None:
        super().__init__()
        self.conv3x3 = conv3(cin, cout)
        self.conv1x1_3x3 = Conv1x1Conv3x3(cin, depth_multiplier * cout, cout)
        self.conv1x1_sbx = Conv1x1Mask(cin, cout, SOBEL_X)
        self.conv1x1_sby = Conv1x1Mask(cin, cout, SOBEL_Y)
        self.conv1x1_lpl = Conv1x1Mask(cin, cout, LAPLACIAN)
        self.act: nn.Module = nn.PReLU(cout) if act else nn.Identity()

    def branches(self) -> tuple[Conv1x1Conv3x3, Conv1x1Mask, Conv1x1Mask, Conv1x1Mask]:
        return self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x)
        for branch in self.branches():
            y = y + branch(x)
        return self.act(y)

    def rep(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Equivalent single 3x3 (pad 1) kernel and bias of the five branches."""
        kernel, bias = self.conv3x3.weight.clone(), self.conv3x3.bias.clone()
        for branch in self.branches():
            k, b = branch.rep()
            kernel, bias = kernel + k, bias + b
        return kernel, bias

    @torch.no_grad()
    def split_(self, kernel: torch.Tensor, bias: torch.Tensor, gen: torch.Generator) -> None:
        """Fill the branches with random values whose re-parameterized sum is (kernel, bias).

        Each branch gets a kernel about a quarter of the target's spread; the remainder, computed in float64,
        goes to the plain 3x3 branch, so the split adds a single rounding per weight.
        """
        size = float(kernel.std()) if kernel.numel() > 1 else 0.0
        size = size if size > 0 else 1e-2
        for branch in self.branches():
            _randomize(branch, gen)
            k, _ = branch.rep()
            factor = 0.25 * size / max(float(k.std()), 1e-12)
            if isinstance(branch, Conv1x1Conv3x3):
                branch.conv1.weight.mul_(factor)
                branch.conv1.bias.mul_(factor)
            else:
                branch.scale.mul_(factor)
                branch.bias.mul_(size)
        k_rest, b_rest = kernel.double(), bias.double()
        for branch in self.branches():
            k, b = _rep64(branch)
            k_rest, b_rest = k_rest - k, b_rest - b
        self.conv3x3.weight.copy_(k_rest)
        self.conv3x3.bias.copy_(b_rest)


def _rep64(branch: Conv1x1Conv3x3 | Conv1x1Mask) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch's re-parameterized kernel and bias computed in float64."""
    dtype = branch.conv0.weight.dtype
    branch.double()
    try:
        return branch.rep()
    finally:
        branch.to(dtype)


def _randomize(branch: nn.Module, gen: torch.Generator) -> None:
    for p in branch.parameters():
        fan = p[0].numel() if p.dim() > 1 else 1
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan**0.5)


class ECBSRTrain(AnchoredSR):
    """ECBSR before re-parameterization: every conv is an ECB block (``backbone.{i}`` are ECB modules).

    A random model (``seed``) is ``from_deploy(ECBSR(M, C, scale, clamp, seed=seed), seed)``, so its
    ``reparameterize()`` is ``ECBSR(..., seed=seed)`` up to rounding.
    """

    @keep_global_rng
    def __init__(
        self, M: int = 4, C: int = 16, scale: int = 4, clamp: bool = False, *, seed: int | None = 0
    ) -> None:
        super().__init__(M, C, scale, clamp)
        blocks = [ECB(3, C), *[ECB(C, C) for _ in range(M)], ECB(C, 3 * scale * scale, act=False)]
        self.backbone = nn.Sequential(*blocks)
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, None)
        if seed is not None:
            self.load_state_dict(self.from_deploy(ECBSR(M, C, scale, clamp, seed=seed), seed).state_dict())

    @classmethod
    def from_deploy(cls, deploy: ECBSR, seed: int = 0) -> ECBSRTrain:
        """Split every deploy conv into random ECB branches summing exactly to it (same function)."""
        dtype = deploy.backbone[0][0].weight.dtype
        net = cls(deploy.M, deploy.C, deploy.scale, deploy.clamp, seed=None).to(dtype)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for block, src in zip(net.backbone, deploy.backbone):
                block.split_(src[0].weight, src[0].bias, gen)
                if isinstance(block.act, nn.PReLU):
                    block.act.weight.copy_(src[1].weight)
        return net.eval()

    @torch.no_grad()
    def reparameterize(self) -> ECBSR:
        """The deploy ECBSR computing the same function (one 3x3 conv per ECB block)."""
        net = ECBSR(self.M, self.C, self.scale, self.clamp, seed=None).to(
            self.backbone[0].conv3x3.weight.dtype
        )
        for block, dst in zip(self.backbone, net.backbone):
            kernel, bias = block.rep()
            dst[0].weight.copy_(kernel)
            dst[0].bias.copy_(bias)
            if isinstance(block.act, nn.PReLU):
                dst[1].weight.copy_(block.act.weight)
        return net.eval()


class ECBSR_ET(CarriedImageSR):
    """Official plain form of ECBSR + clamp (``ECBSR_ET_M{b}C{c}_x{s}``); PReLU kept, width C+4.

    A random model (``seed``) is ``from_ecbsr(ECBSR(M, C, scale, seed=seed))``.
    """

    @keep_global_rng
    def __init__(self, M: int = 4, C: int = 16, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__(M, C, scale)
        out = 3 * scale * scale + (1 if scale == 3 else 0)
        blocks = _deploy_blocks(3, C + 4, M, out, head=False)
        blocks += [
            nn.Sequential(conv3(C + 4, out), nn.ReLU()),
            nn.Sequential(nn.Conv2d(out, out, 1), nn.ReLU()),
        ]
        self.backbone = nn.Sequential(*blocks)
        self.finish_(scale, None if seed is None else lambda: self.from_ecbsr(ECBSR(M, C, scale, seed=seed)))

    @classmethod
    def from_state_dict(cls, sd: StateDict) -> ECBSR_ET:
        """Build from an official ``ECBSR_ET`` state dict."""
        M, C, scale = backbone_sizes(sd, 3, 2, conv="0.weight", carried=4, allow_pad=True)
        return load_exact(cls(M, C, scale, seed=None), sd)

    @classmethod
    def from_ecbsr(cls, net: ECBSR) -> ECBSR_ET:
        """Convert a deploy ECBSR (clamp implied) the way the official converter does."""
        M, C, s = net.M, net.C, net.scale
        et = cls(M, C, s, seed=None)
        with torch.no_grad():
            for b in range(M + 1):
                cin = 3 if b == 0 else C
                conv, prelu = et.backbone[b]
                embed_(conv, net.backbone[b][0], rows=C, cols=cin)
                prelu.weight.zero_()
                prelu.weight[:C] = net.backbone[b][1].weight
                for i in range(3):
                    conv.weight[C + 1 + i, i if b == 0 else C + 1 + i, 1, 1] = 1.0
            last = et.backbone[M + 1][0]
            one_minus_with_anchor_(last, net.backbone[M + 1][0], C + 1, s)
            clip_1x1_(et.backbone[M + 2][0])
        return et.eval()
