"""ETDS: the official plain inference form (``ETDSForInference``) and the training-time dual-stream form.

ETDSPlain:  Conv(3->C) ReLU [Conv(C->C) ReLU] x M Conv(C->3s²[+1]) ReLU Conv1x1 ReLU [drop last if s=3] PS(s)
ETDSDual:   backbone stream x (C-3 channels) and residual stream r (3 channels):

    x = relu(Conv_first(I)),  r = relu(Conv_rfirst(I))
    x, r = relu(W_b x + W_r2b r), relu(W_r r)                       (M times)
    out = clamp(PS(s)(W_L x) + PS(s)(W_RL r), 0, 1)

The plain form is the dual form on concatenated channels [x | r]: conv_first rows [first; rfirst], body convs
block-triangular [[W_b, W_r2b], [0, W_r]], conv_last rows [:3s²] = -[W_L | W_RL] with bias 1 - (b_L + b_RL),
conv_clip = (-I, 1), using clip(y, 0, 1) = relu(1 - relu(1 - y)) and PS(a) + PS(b) = PS(a + b). The x3 extra
channel (zero weights, bias 1) only rounds the width to a multiple of 4 and is dropped before PS(3).
``ETDSDual.from_plain`` inverts this exactly (b_RL := 0); every shared ETDS checkpoint has an exactly zero
lower-left block and an exact (-I, 1) conv_clip, and the two forms agree to float rounding (~1e-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.common import (
    StateDict,
    conv3,
    keep_global_rng,
    load_exact,
    plain_sizes,
    seeded_init_,
)


class ETDSPlain(nn.Module):
    """ETDS plain form (= ``ETDSForInference``); keys ``conv_first``, ``backbone_convs.{i}``, ``conv_last``,
    ``conv_clip``. C counts all channels (backbone plus the 3 residual ones).

    A random model (``seed``) is ``ETDSDual(M, C, scale, seed=seed).to_plain()``, so it has the ETDS structure.
    """

    @keep_global_rng
    def __init__(self, M: int = 5, C: int = 16, scale: int = 4, *, seed: int | None = 0) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        out = 3 * scale * scale + (1 if scale == 3 else 0)
        self.conv_first = conv3(3, C)
        self.backbone_convs = nn.ModuleList(conv3(C, C) for _ in range(M))
        self.conv_last = conv3(C, out)
        self.conv_clip = nn.Conv2d(out, out, 1)
        self.upsampler = nn.PixelShuffle(scale)
        if seed is not None:
            self.load_state_dict(ETDSDual(M, C, scale, seed=seed).to_plain().state_dict())
        else:
            seeded_init_(self, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv_first(x))
        for conv in self.backbone_convs:
            y = F.relu(conv(y))
        y = F.relu(self.conv_clip(F.relu(self.conv_last(y))))
        if self.scale == 3:
            y = y[:, :-1]
        return self.upsampler(y)

    @classmethod
    def from_state_dict(cls, sd: StateDict) -> ETDSPlain:
        """Build from an official ``ETDS_M{b}C{c}_x{s}`` state dict."""
        M, C, scale = plain_sizes(sd, allow_pad=True)
        return load_exact(cls(M, C, scale, seed=None), sd)


class ETDSDual(nn.Module):
    """ETDS training-time dual-stream form with the official keys (``conv_residual_first``, ``residual_convs``,
    ``add_residual_convs``, ``conv_residual_last``); C counts all channels, ``residual`` of them in r."""

    @keep_global_rng
    def __init__(
        self, M: int = 5, C: int = 16, scale: int = 4, residual: int = 3, *, seed: int | None = 0
    ) -> None:
        super().__init__()
        if not C > residual >= 3:
            raise ValueError(f"ETDS needs C > residual >= 3, got C={C}, residual={residual}")
        self.M, self.C, self.scale, self.residual = M, C, scale, residual
        feat, out = C - residual, 3 * scale * scale
        self.conv_first = conv3(3, feat)
        self.conv_residual_first = conv3(3, residual)
        self.backbone_convs = nn.ModuleList(conv3(feat, feat) for _ in range(M))
        self.residual_convs = nn.ModuleList(conv3(residual, residual) for _ in range(M))
        self.add_residual_convs = nn.ModuleList(conv3(residual, feat) for _ in range(M))
        self.conv_last = conv3(feat, out)
        self.conv_residual_last = conv3(residual, out)
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, r = F.relu(self.conv_first(x)), F.relu(self.conv_residual_first(x))
        for conv, res_conv, add_conv in zip(
            self.backbone_convs, self.residual_convs, self.add_residual_convs
        ):
            y, r = F.relu(conv(y) + add_conv(r)), F.relu(res_conv(r))
        out = self.upsampler(self.conv_last(y)) + self.upsampler(self.conv_residual_last(r))
        return out.clamp(0.0, 1.0)

    @classmethod
    def from_plain(cls, plain: ETDSPlain, residual: int = 3) -> ETDSDual:
        """Recover the dual-stream form from the plain one (raises if the plain net lacks the ETDS structure)."""
        _check_plain(plain, residual)
        M, C, s = plain.M, plain.C, plain.scale
        net = cls(M, C, s, residual, seed=None).to(plain.conv_first.weight.dtype)
        feat, out = C - residual, 3 * s * s
        with torch.no_grad():
            _set(net.conv_first, plain.conv_first.weight[:feat], plain.conv_first.bias[:feat])
            _set(net.conv_residual_first, plain.conv_first.weight[feat:], plain.conv_first.bias[feat:])
            for i, conv in enumerate(plain.backbone_convs):
                w, b = conv.weight, conv.bias
                _set(net.backbone_convs[i], w[:feat, :feat], b[:feat])
                _set(net.add_residual_convs[i], w[:feat, feat:], torch.zeros_like(b[:feat]))
                _set(net.residual_convs[i], w[feat:, feat:], b[feat:])
            w, b = plain.conv_last.weight[:out], plain.conv_last.bias[:out]
            _set(net.conv_last, -w[:, :feat], 1.0 - b)
            _set(net.conv_residual_last, -w[:, feat:], torch.zeros_like(b))
        return net.eval()

    def to_plain(self) -> ETDSPlain:
        """The equivalent plain network (the official ``converter.py`` construction)."""
        M, C, s, feat, out = self.M, self.C, self.scale, self.C - self.residual, 3 * self.scale**2
        plain = ETDSPlain(M, C, s, seed=None).to(self.conv_first.weight.dtype)
        with torch.no_grad():
            _set(
                plain.conv_first,
                torch.cat([self.conv_first.weight, self.conv_residual_first.weight]),
                torch.cat([self.conv_first.bias, self.conv_residual_first.bias]),
            )
            for dst, conv, res_conv, add_conv in zip(
                plain.backbone_convs, self.backbone_convs, self.residual_convs, self.add_residual_convs
            ):
                dst.weight.zero_()
                dst.weight[:feat, :feat] = conv.weight
                dst.weight[:feat, feat:] = add_conv.weight
                dst.weight[feat:, feat:] = res_conv.weight
                dst.bias.copy_(torch.cat([conv.bias + add_conv.bias, res_conv.bias]))
            plain.conv_last.weight.zero_()
            plain.conv_last.bias.fill_(1.0)
            plain.conv_last.weight[:out] = -torch.cat(
                [self.conv_last.weight, self.conv_residual_last.weight], 1
            )
            plain.conv_last.bias[:out] = 1.0 - (self.conv_last.bias + self.conv_residual_last.bias)
            n = plain.conv_clip.weight.shape[0]
            plain.conv_clip.weight.copy_(-torch.eye(n).view(n, n, 1, 1))
            plain.conv_clip.bias.fill_(1.0)
        return plain.eval()


def _set(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)


def _check_plain(plain: ETDSPlain, residual: int) -> None:
    """Raise ValueError unless the body is block-triangular and conv_clip is exactly (-I, 1)."""
    feat = plain.C - residual
    for i, conv in enumerate(plain.backbone_convs):
        if torch.any(conv.weight[feat:, :feat] != 0):
            raise ValueError(f"backbone_convs.{i}: residual rows read backbone channels; not an ETDS network")
    n = plain.conv_clip.weight.shape[0]
    clip_w = plain.conv_clip.weight.view(n, n)
    if not (torch.equal(clip_w, -torch.eye(n, dtype=clip_w.dtype)) and torch.all(plain.conv_clip.bias == 1)):
        raise ValueError("conv_clip is not the 1x1 (-I, 1) of clip(y, 0, 1) = relu(1 - relu(1 - y))")
