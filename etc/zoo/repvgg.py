"""RepVGG-style super-resolution net: every conv is a RepVGG block (3x3-BN + 1x1-BN [+ BN identity]) at train time.

    x ──> Conv3x3 -> BN ──┐
    x ──> Conv1x1 -> BN ──┼─> Add -> ReLU          (no ReLU after the last block)
    x ──> BN (cin == cout)┘

    RepVGGSR: RepVGGBlock(3->C) [RepVGGBlock(C->C)] x M RepVGGBlock(C->3s²) PixelShuffle(s)

Deploy form: one 3x3 conv per block (``deploy_convs`` = M + 2); ``reparameterize`` builds it in PyTorch.
BatchNorm statistics are random (seeded) so the BN folds are not identities.
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import BlockChainSR, keep_global_rng


def conv_bn(
    cin: int, cout: int, kernel: int | tuple[int, int], padding: int | tuple[int, int]
) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding, bias=False), nn.BatchNorm2d(cout))


def fuse_conv_bn(branch: nn.Sequential, size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel (centred in size x size) and bias of Conv -> BN."""
    conv, bn = branch[0], branch[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    kernel = conv.weight * scale[:, None, None, None]
    kh, kw = kernel.shape[2:]
    top, left = (size - kh) // 2, (size - kw) // 2
    kernel = nn.functional.pad(kernel, (left, size - kw - left, top, size - kh - top))
    return kernel, bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """3x3-BN + 1x1-BN (+ BN identity when cin == cout) summed, then ReLU."""

    def __init__(self, cin: int, cout: int, act: bool = True) -> None:
        super().__init__()
        self.dense = conv_bn(cin, cout, 3, 1)
        self.one = conv_bn(cin, cout, 1, 0)
        self.identity = nn.BatchNorm2d(cout) if cin == cout else None
        self.act: nn.Module = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x) + self.one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    @torch.no_grad()
    def rep(self) -> tuple[torch.Tensor, torch.Tensor]:
        kernel, bias = fuse_conv_bn(self.dense)
        k1, b1 = fuse_conv_bn(self.one)
        kernel, bias = kernel + k1, bias + b1
        if self.identity is not None:
            bn = self.identity
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            eye = torch.zeros_like(kernel)
            eye[torch.arange(len(scale)), torch.arange(len(scale)), 1, 1] = scale
            kernel, bias = kernel + eye, bias + bn.bias - bn.running_mean * scale
        return kernel, bias


class RepVGGSR(BlockChainSR):
    """RepVGG blocks 3->C, M x C->C, C->3s², then PixelShuffle(s)."""

    @keep_global_rng
    def __init__(self, M: int = 4, C: int = 16, scale: int = 4, *, seed: int | None = 0) -> None:
        blocks = [
            RepVGGBlock(3, C),
            *[RepVGGBlock(C, C) for _ in range(M)],
            RepVGGBlock(C, 3 * scale**2, False),
        ]
        super().__init__(M, C, scale, blocks, seed)

    @torch.no_grad()
    def reparameterize(self) -> nn.Module:
        """The deploy net: one 3x3 conv (+ ReLU) per block, then PixelShuffle."""
        layers: list[nn.Module] = []
        for block in self.body:
            kernel, bias = block.rep()
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1)
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
            layers += [conv, block.act]
        return nn.Sequential(*layers, nn.PixelShuffle(self.scale)).eval()
