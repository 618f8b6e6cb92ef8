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


def load_exact(module: nn.Module, sd: StateDict) -> nn.Module:
    """``load_state_dict(strict=True)`` with an error that names the model on a key/shape mismatch."""
    try:
        module.load_state_dict(dict(sd), strict=True)
    except RuntimeError as err:
        raise ValueError(f"state dict does not fit {type(module).__name__}: {err}") from err
    return module.eval()
