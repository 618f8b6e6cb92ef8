"""ABPN (anchor-based plain net) in its training form, and the official hand-converted plain form ABPN_ET.

ABPN:     y = PS(s)(body(x) + repeat_interleave(x, s², dim=1)), optionally clamped to [0, 1]
          body = Conv(3->C) ReLU [Conv(C->C) ReLU] x M Conv(C->3s²) ReLU Conv(3s²->3s²)
ABPN_ET:  Conv(3->C+4) ReLU [Conv(C+4->C+4) ReLU] x M Conv(C+4->3s²+p) ReLU Conv(3s²+p->3s²+q) ReLU
          Conv1x1(3s²+q->3s²+q) ReLU [drop last channel if s=3] PS(s)
          with (p, q) = (3, 1) for s=3 else (4, 0).

The anchor rides through the body as 3 identity channels (the 4th extra channel only rounds widths to a multiple
of 4) and the clamp becomes Conv(-W, 1-b) + ReLU, then Conv1x1(-I, 1) + ReLU. ABPN_ET equals ABPN(clamp=True)
for inputs >= 0 (the identity channels pass ReLU unchanged only there); the shared pretrained pairs agree to ~2e-6.
"""

from __future__ import annotations

import torch
from torch import nn

from etc.zoo.common import (
    StateDict,
    anchor,
    conv3,
    count_prefix,
    keep_global_rng,
    load_exact,
    scale_from_channels,
    seeded_init_,
)


class ABPN(nn.Module):
    """ABPN training form with the anchor ``repeat_interleave(x, s*s, dim=1)``; keys ``backbone.{i}``."""

    @keep_global_rng
    def __init__(
        self, M: int = 4, C: int = 28, scale: int = 4, clamp: bool = False, *, seed: int | None = 0
    ) -> None:
        super().__init__()
        self.M, self.C, self.scale, self.clamp = M, C, scale, clamp
        out = 3 * scale * scale
        self.backbone = nn.Sequential(
            conv3(3, C),
            nn.ReLU(),
            *[nn.Sequential(conv3(C, C), nn.ReLU()) for _ in range(M)],
            conv3(C, out),
            nn.ReLU(),
            conv3(out, out),
        )
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.upsampler(self.backbone(x) + anchor(x, self.scale))
        return y.clamp(0.0, 1.0) if self.clamp else y

    @classmethod
    def from_state_dict(cls, sd: StateDict, clamp: bool = False) -> ABPN:
        """Build from an official ``ABPN_M{b}C{c}_x{s}`` state dict."""
        C = sd["backbone.0.weight"].shape[0]
        M = count_prefix(sd, "backbone.") - 3
        scale = scale_from_channels(sd[f"backbone.{M + 4}.weight"].shape[0])
        return load_exact(cls(M, C, scale, clamp, seed=None), sd)


class ABPN_ET(nn.Module):
    """Official plain form of ABPN + clamp (``ABPN_ET_M{b}C{c}_x{s}``); keys ``backbone.{i}``.

    A random model (``seed``) is ``from_abpn(ABPN(M, C, scale, seed=seed))``.
    """

    @keep_global_rng
    def __init__(self, M: int = 4, C: int = 28, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        out = 3 * scale * scale
        p, q = (3, 1) if scale == 3 else (4, 0)
        self.backbone = nn.Sequential(
            conv3(3, C + 4),
            nn.ReLU(),
            *[nn.Sequential(conv3(C + 4, C + 4), nn.ReLU()) for _ in range(M)],
            conv3(C + 4, out + p),
            nn.ReLU(),
            conv3(out + p, out + q),
            nn.ReLU(),
            nn.Conv2d(out + q, out + q, 1),
            nn.ReLU(),
        )
        self.upsampler = nn.PixelShuffle(scale)
        if seed is not None:
            self.load_state_dict(self.from_abpn(ABPN(M, C, scale, seed=seed)).state_dict())
        else:
            seeded_init_(self, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x)
        if self.scale == 3:
            y = y[:, :-1]
        return self.upsampler(y)

    @classmethod
    def from_state_dict(cls, sd: StateDict) -> ABPN_ET:
        """Build from an official ``ABPN_ET_M{b}C{c}_x{s}`` state dict."""
        C = sd["backbone.0.weight"].shape[0] - 4
        M = count_prefix(sd, "backbone.") - 4
        scale = scale_from_channels(sd[f"backbone.{M + 6}.weight"].shape[0], allow_pad=True)
        return load_exact(cls(M, C, scale, seed=None), sd)

    @classmethod
    def from_abpn(cls, net: ABPN) -> ABPN_ET:
        """Convert an ABPN (its clamp flag is ignored: the result always clamps) exactly as the official converter."""
        M, C, s = net.M, net.C, net.scale
        et = cls(M, C, s, seed=None)
        src, dst = net.backbone, et.backbone
        carry = range(C + 1, C + 4)  # the last 3 channels carry the input image
        with torch.no_grad():
            _embed(dst[0], src[0], rows=C, cols=3)
            for i in range(3):
                dst[0].weight[C + 1 + i, i, 1, 1] = 1.0
            for b in range(M):
                _embed(dst[2 + b][0], src[2 + b][0], rows=C, cols=C)
                for j in carry:
                    dst[2 + b][0].weight[j, j, 1, 1] = 1.0
            out = 3 * s * s
            head, last = dst[M + 2], dst[M + 4]
            _embed(head, src[M + 2], rows=out, cols=C)
            width = head.weight.shape[0]  # out + 3 carried channels (+1 pad unless s == 3)
            for i in range(3):
                head.weight[width - 3 + i, C + 1 + i, 1, 1] = 1.0
            last.weight.zero_()
            last.bias.fill_(1.0)
            last.weight[:out, :out] = -src[M + 4].weight
            last.bias[:out] = 1.0 - src[M + 4].bias
            for o in range(out):
                last.weight[o, width - 3 + o // (s * s), 1, 1] = -1.0
            _clip_1x1(dst[M + 6])
        return et.eval()


def _embed(dst: nn.Conv2d, src: nn.Conv2d, rows: int, cols: int) -> None:
    """Zero ``dst`` and copy ``src`` into its top-left [rows, cols] block."""
    dst.weight.zero_()
    dst.bias.zero_()
    dst.weight[:rows, :cols] = src.weight
    dst.bias[:rows] = src.bias


def _clip_1x1(conv: nn.Conv2d) -> None:
    """Set a square 1x1 conv to y = 1 - x (the second half of clip(y, 0, 1) = relu(1 - relu(1 - y)))."""
    n = conv.weight.shape[0]
    conv.weight.copy_(-torch.eye(n).view(n, n, 1, 1))
    conv.bias.fill_(1.0)
