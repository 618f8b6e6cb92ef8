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


class ABPN(AnchoredSR):
    """ABPN training form with the anchor ``repeat_interleave(x, s*s, dim=1)``; keys ``backbone.{i}``."""

    @keep_global_rng
    def __init__(
        self, M: int = 4, C: int = 28, scale: int = 4, clamp: bool = False, *, seed: int | None = 0
    ) -> None:
        super().__init__(M, C, scale, clamp)
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

    @classmethod
    def from_state_dict(cls, sd: StateDict, clamp: bool = False) -> ABPN:
        """Build from an official ``ABPN_M{b}C{c}_x{s}`` state dict."""
        M, C, scale = backbone_sizes(sd, 3, 4)
        return load_exact(cls(M, C, scale, clamp, seed=None), sd)


class ABPN_ET(CarriedImageSR):
    """Official plain form of ABPN + clamp (``ABPN_ET_M{b}C{c}_x{s}``); keys ``backbone.{i}``.

    A random model (``seed``) is ``from_abpn(ABPN(M, C, scale, seed=seed))``.
    """

    @keep_global_rng
    def __init__(self, M: int = 4, C: int = 28, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__(M, C, scale)
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
        self.finish_(scale, None if seed is None else lambda: self.from_abpn(ABPN(M, C, scale, seed=seed)))

    @classmethod
    def from_state_dict(cls, sd: StateDict) -> ABPN_ET:
        """Build from an official ``ABPN_ET_M{b}C{c}_x{s}`` state dict."""
        M, C, scale = backbone_sizes(sd, 4, 6, carried=4, allow_pad=True)
        return load_exact(cls(M, C, scale, seed=None), sd)

    @classmethod
    def from_abpn(cls, net: ABPN) -> ABPN_ET:
        """Convert an ABPN (its clamp flag is ignored: the result always clamps) exactly as the official converter."""
        M, C, s = net.M, net.C, net.scale
        et = cls(M, C, s, seed=None)
        src, dst = net.backbone, et.backbone
        carry = range(C + 1, C + 4)  # the last 3 channels carry the input image
        with torch.no_grad():
            embed_(dst[0], src[0], rows=C, cols=3)
            for i in range(3):
                dst[0].weight[C + 1 + i, i, 1, 1] = 1.0
            for b in range(M):
                embed_(dst[2 + b][0], src[2 + b][0], rows=C, cols=C)
                for j in carry:
                    dst[2 + b][0].weight[j, j, 1, 1] = 1.0
            out = 3 * s * s
            head, last = dst[M + 2], dst[M + 4]
            embed_(head, src[M + 2], rows=out, cols=C)
            width = head.weight.shape[0]  # out + 3 carried channels (+1 pad unless s == 3)
            for i in range(3):
                head.weight[width - 3 + i, C + 1 + i, 1, 1] = 1.0
            one_minus_with_anchor_(last, src[M + 4], width - 3, s)
            clip_1x1_(dst[M + 6])
        return et.eval()
