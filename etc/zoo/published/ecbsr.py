"""The ECB block as the ECBSR paper's code and BasicSR publish it (training-time forward), in our own words.

Each 1x1 branch pads its output with zeros, then writes the 1x1 bias into the four border strips by slice
assignment, then runs a 3x3 conv without padding (a depthwise mask conv with a per-channel scale for the
Sobel/Laplacian branches, the scale folded into the kernel, the bias passed to the conv):

    y0 = conv2d(x, k0, b0); y0 = pad(y0, (1, 1, 1, 1)); y0[:, :, 0:1, :] = b0 ... y0[:, :, :, -1:] = b0
    y1 = conv2d(y0, k1, b1)                                  or conv2d(y0, scale * mask, bias, groups=C)

The legacy exporter turns each strip write into a ScatterND with index arithmetic; dynamo into slice_scatter.
``PublishedECBSR.from_train`` copies the weights of our re-implementation (``etc.zoo.ecbsr.ECBSRTrain``), which
computes the same function, so the split of the pretrained deploy kernels is shared with the rep tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.common import anchor
from etc.zoo.ecbsr import ECB, Conv1x1Conv3x3, Conv1x1Mask, ECBSRTrain


def pad_with_bias(y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Zero-pad by one pixel, then overwrite each border strip with the per-channel bias."""
    y = F.pad(y, (1, 1, 1, 1), "constant", 0)
    b = bias.view(1, -1, 1, 1)
    y[:, :, 0:1, :] = b
    y[:, :, -1:, :] = b
    y[:, :, :, 0:1] = b
    y[:, :, :, -1:] = b
    return y


class PublishedSeqConv(nn.Module):
    """One 1x1-then-3x3 branch as published: a dense 3x3 (``mask`` None) or a per-channel scaled depthwise mask."""

    def __init__(self, cin: int, cmid: int, cout: int, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.k0 = nn.Parameter(torch.zeros(cmid, cin, 1, 1))
        self.b0 = nn.Parameter(torch.zeros(cmid))
        if mask is None:
            self.k1 = nn.Parameter(torch.zeros(cout, cmid, 3, 3))
            self.register_buffer("mask", None)
        else:
            self.scale = nn.Parameter(torch.zeros(cout, 1, 1, 1))
            self.register_buffer("mask", mask.clone())
        self.b1 = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = pad_with_bias(F.conv2d(x, self.k0, self.b0), self.b0)
        if self.mask is None:
            return F.conv2d(y0, self.k1, self.b1)
        return F.conv2d(y0, self.scale * self.mask, self.b1, groups=self.mask.shape[0])

    @torch.no_grad()
    def copy_from(self, branch: Conv1x1Conv3x3 | Conv1x1Mask) -> None:
        self.k0.copy_(branch.conv0.weight)
        self.b0.copy_(branch.conv0.bias)
        if isinstance(branch, Conv1x1Conv3x3):
            self.k1.copy_(branch.conv1.weight)
            self.b1.copy_(branch.conv1.bias)
        else:
            self.scale.copy_(branch.scale.view(-1, 1, 1, 1))
            self.b1.copy_(branch.bias.view(-1))


class PublishedECB(nn.Module):
    """conv3x3 + four published 1x1 branches, summed, then PReLU, ReLU or nothing (the last block)."""

    def __init__(self, cin: int, cout: int, act: str = "prelu") -> None:
        super().__init__()
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1x1_3x3 = PublishedSeqConv(cin, 2 * cout, cout)
        masks = [torch.zeros(cout, 1, 3, 3) for _ in range(3)]
        self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl = (
            PublishedSeqConv(cin, cout, cout, m) for m in masks
        )
        self.act: nn.Module = {"prelu": nn.PReLU(cout), "relu": nn.ReLU(inplace=True)}.get(act, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x) + self.conv1x1_3x3(x) + self.conv1x1_sbx(x) + self.conv1x1_sby(x)
        return self.act(y + self.conv1x1_lpl(x))

    @torch.no_grad()
    def copy_from(self, block: ECB) -> None:
        self.conv3x3.load_state_dict(block.conv3x3.state_dict())
        mine = (self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl)
        for dst, src in zip(mine, block.branches()):
            if isinstance(src, Conv1x1Mask):
                dst.mask.copy_(src.mask)
            dst.copy_from(src)
        if isinstance(self.act, nn.PReLU) and isinstance(block.act, nn.PReLU):
            self.act.weight.copy_(block.act.weight)


class PublishedECBSR(nn.Module):
    """ECBSR with published ECB blocks: ``PS(s)(body(x) + repeat_interleave(x, s², dim=1))``."""

    def __init__(self, M: int, C: int, scale: int, act: str = "prelu") -> None:
        super().__init__()
        self.scale = scale
        blocks = [PublishedECB(3, C, act), *[PublishedECB(C, C, act) for _ in range(M)]]
        self.backbone = nn.Sequential(*blocks, PublishedECB(C, 3 * scale * scale, "linear"))
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(self.backbone(x) + anchor(x, self.scale))

    @classmethod
    def from_train(cls, train: ECBSRTrain, act: str = "prelu") -> PublishedECBSR:
        """The same weights as our re-implementation (with ``act='relu'`` the PReLUs become ReLUs)."""
        net = cls(train.M, train.C, train.scale, act)
        for dst, src in zip(net.backbone, train.backbone):
            dst.copy_from(src)
        return net.eval()
