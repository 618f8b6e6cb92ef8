"""Shared pieces of the seed zoo: seeded initialisation, the anchor, layer helpers and shape inference."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

_Fn = TypeVar("_Fn", bound=Callable[..., object])

StateDict = Mapping[str, torch.Tensor]


def keep_global_rng(init: _Fn) -> _Fn:
    """Run a constructor without disturbing torch's global random state (layer defaults draw from it)."""

    @functools.wraps(init)
    def wrapper(*args: object, **kwargs: object) -> object:
        with torch.random.fork_rng(devices=[]):
            return init(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def conv3(cin: int, cout: int) -> nn.Conv2d:
    """3x3 convolution with padding 1 (the size-preserving conv used everywhere in the zoo)."""
    return nn.Conv2d(cin, cout, 3, padding=1)


def anchor(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour anchor in PixelShuffle (CRD) channel order: channel o copies input channel o // s²."""
    return torch.repeat_interleave(x, scale * scale, dim=1)


def seeded_init_(module: nn.Module, seed: int | None) -> nn.Module:
    """Deterministically initialise every Conv/ConvTranspose/PReLU of ``module`` from a local generator.

    Weights are He-uniform (bound sqrt(6 / fan_in)), biases uniform in [-0.05, 0.05], PReLU slopes uniform in
    [0.05, 0.35]. ``seed=None`` zeroes all parameters instead (a blank model to be filled by a converter).
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                _init_conv(m, gen)
            elif isinstance(m, nn.PReLU):
                _fill_uniform(m.weight, 0.05, 0.35, gen)
    return module


def _init_conv(m: nn.Conv2d | nn.ConvTranspose2d, gen: torch.Generator | None) -> None:
    k = m.weight[0, 0].numel()
    if isinstance(m, nn.ConvTranspose2d):
        fan_in = m.in_channels * k / (m.stride[0] * m.stride[1])
    else:
        fan_in = m.in_channels // m.groups * k
    bound = math.sqrt(6.0 / fan_in)
    _fill_uniform(m.weight, -bound, bound, gen)
    if m.bias is not None:
        _fill_uniform(m.bias, -0.05, 0.05, gen)


def _fill_uniform(t: torch.Tensor, lo: float, hi: float, gen: torch.Generator | None) -> None:
    if gen is None:
        t.zero_()
    else:
        t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) * (hi - lo) + lo)


def scale_from_channels(n: int, *, allow_pad: bool = False) -> int:
    """Upscale factor s from a layer with 3·s² output channels (or 3·s²+1 when ``allow_pad``, the x3 padding)."""
    for s in range(1, 9):
        if n == 3 * s * s or (allow_pad and s == 3 and n == 3 * s * s + 1):
            return s
    raise ValueError(f"{n} output channels is not 3*s*s for an integer upscale factor s")


def count_prefix(sd: StateDict, prefix: str, suffix: str = ".weight") -> int:
    """Number of distinct indices i with a key ``{prefix}{i}...{suffix}`` in a state dict."""
    idx = set()
    for key in sd:
        if key.startswith(prefix) and key.endswith(suffix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    return len(idx)


def backbone_sizes(
    sd: StateDict, fixed: int, last: int, *, conv: str = "weight", carried: int = 0, allow_pad: bool = False
) -> tuple[int, int, int]:
    """(M, C, scale) of a ``backbone.{i}`` state dict: C is the first conv's rows less ``carried`` image channels,
    M the number of backbone entries less ``fixed``, and the scale comes from the rows of ``backbone.{M + last}``
    (``conv`` names the weight inside an entry: "weight", or "0.weight" for Sequential entries)."""
    C = sd[f"backbone.0.{conv}"].shape[0] - carried
    M = count_prefix(sd, "backbone.") - fixed
    scale = scale_from_channels(sd[f"backbone.{M + last}.{conv}"].shape[0], allow_pad=allow_pad)
    return M, C, scale


def plain_sizes(sd: StateDict, *, allow_pad: bool = False) -> tuple[int, int, int]:
    """(M, C, scale) of a ``conv_first`` / ``backbone_convs.{i}`` / ``conv_last`` state dict (Plain, ETDS)."""
    C = sd["conv_first.weight"].shape[0]
    M = count_prefix(sd, "backbone_convs.")
    scale = scale_from_channels(sd["conv_last.weight"].shape[0], allow_pad=allow_pad)
    return M, C, scale


def load_exact(module: nn.Module, sd: StateDict) -> nn.Module:
    """``load_state_dict(strict=True)`` with an error that names the model on a key/shape mismatch."""
    try:
        module.load_state_dict(dict(sd), strict=True)
    except RuntimeError as err:
        raise ValueError(f"state dict does not fit {type(module).__name__}: {err}") from err
    return module.eval()


def seeded_bn_(module: nn.Module, seed: int | None) -> nn.Module:
    """Random, deterministic BatchNorm affine parameters and running statistics (eval-mode BN is affine)."""
    gen = torch.Generator().manual_seed(10_000 + (seed or 0))
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return module


class BlockChainSR(nn.Module):
    """``body`` = the given blocks (3->C, M x C->C, C->3s²), then ``upsampler`` = PixelShuffle(s); seeded convs
    and BatchNorms, eval mode. The train-time form of the re-parameterizable nets (ACNet, DBB, RepVGG)."""

    def __init__(self, M: int, C: int, scale: int, blocks: list[nn.Module], seed: int | None) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        self.body = nn.Sequential(*blocks)
        self.upsampler = nn.PixelShuffle(scale)
        seeded_init_(self, seed)
        seeded_bn_(self, seed)
        self.eval()

    @property
    def deploy_convs(self) -> int:
        return self.M + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(self.body(x))


class DistillationSR(nn.Module):
    """The frame IMDN and RFDN share: ``fea_conv`` 3->C, M distillation ``blocks`` in a chain, a 1x1 ``fuse`` of
    all their outputs, ``act`` (LeakyReLU), ``lr_conv`` plus the ``fea_conv`` output, then ``upsampler``
    (Conv3x3 C->3s², PixelShuffle). ``block`` builds one distillation block (called M times, in order)."""

    def __init__(
        self, M: int, C: int, scale: int, block: Callable[[], nn.Module], slope: float, seed: int | None
    ) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale
        self.fea_conv = conv3(3, C)
        self.blocks = nn.ModuleList([block() for _ in range(M)])
        self.fuse = nn.Conv2d(M * C, C, 1)
        self.act = nn.LeakyReLU(slope)
        self.lr_conv = conv3(C, C)
        self.upsampler = nn.Sequential(conv3(C, 3 * scale * scale), nn.PixelShuffle(scale))
        seeded_init_(self, seed)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, y = [], fea
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        body = self.act(self.fuse(torch.cat(outs, dim=1)))
        return self.upsampler(self.lr_conv(body) + fea)


class AnchoredSR(nn.Module):
    """ABPN- and ECBSR-style nets: ``upsampler(backbone(x) + anchor(x))``, clamped to [0, 1] when ``clamp``; the
    subclass sets ``backbone`` and ``upsampler``."""

    def __init__(self, M: int, C: int, scale: int, clamp: bool) -> None:
        super().__init__()
        self.M, self.C, self.scale, self.clamp = M, C, scale, clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.upsampler(self.backbone(x) + anchor(x, self.scale))
        return y.clamp(0.0, 1.0) if self.clamp else y


class CarriedImageSR(nn.Module):
    """The official plain "ET" forms (ABPN_ET, ECBSR_ET): a ``backbone`` that carries the input image in its last
    channels and ends in clip(y, 0, 1); at x3 one pad channel is dropped before the ``upsampler``."""

    def __init__(self, M: int, C: int, scale: int) -> None:
        super().__init__()
        self.M, self.C, self.scale = M, C, scale

    def finish_(self, scale: int, convert: Callable[[], nn.Module] | None) -> None:
        """Adds the PixelShuffle and takes the weights of ``convert()`` (a seeded conversion), or blank ones."""
        self.upsampler = nn.PixelShuffle(scale)
        if convert is not None:
            self.load_state_dict(convert().state_dict())
        else:
            seeded_init_(self, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x)
        if self.scale == 3:
            y = y[:, :-1]
        return self.upsampler(y)


def embed_(dst: nn.Conv2d, src: nn.Conv2d, rows: int, cols: int) -> None:
    """Zero ``dst`` and copy ``src`` into its top-left [rows, cols] block."""
    dst.weight.zero_()
    dst.bias.zero_()
    dst.weight[:rows, :cols] = src.weight
    dst.bias[:rows] = src.bias


def clip_1x1_(conv: nn.Conv2d) -> None:
    """Set a square 1x1 conv to y = 1 - x (the second half of clip(y, 0, 1) = relu(1 - relu(1 - y)))."""
    n = conv.weight.shape[0]
    conv.weight.copy_(-torch.eye(n).view(n, n, 1, 1))
    conv.bias.fill_(1.0)


def one_minus_with_anchor_(last: nn.Conv2d, src: nn.Conv2d, first_carry: int, scale: int) -> None:
    """Set ``last`` to 1 - (src(x) + anchor): ``src`` negated in the top-left block, bias 1 - b elsewhere 1, and -1
    at the centre tap reading carried image channel ``first_carry + o // s²`` for each output o of ``src``."""
    out, cin = src.weight.shape[:2]
    last.weight.zero_()
    last.bias.fill_(1.0)
    last.weight[:out, :cin] = -src.weight
    last.bias[:out] = 1.0 - src.bias
    for o in range(out):
        last.weight[o, first_carry + o // (scale * scale), 1, 1] = -1.0
