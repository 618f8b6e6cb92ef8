"""Seed zoo: PyTorch super-resolution nets (RGB NCHW in [0, 1]) with seeded random or real pretrained weights.

    >>> from etc import zoo
    >>> net = zoo.build("abpn", scale=3, M=2, C=8, seed=1)          # random, deterministic
    >>> net = zoo.build("ecbsr_train", scale=4, pretrained=True)     # real ECBSR_M4C16_x4, split into ECB branches

``pretrained=True`` loads ``<Family>_M{M}C{C}_x{scale}.pth`` from ``pretrained_dir()``; a string names a file (a
path, or a stem such as ``"ABPN_M6C40_x2"``) whose sizes then come from the weights themselves. Derived forms
(``ecbsr_train``, ``etds_dual``) are built from the deploy/plain weights by exact re-parameterization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from etc.zoo.abpn import ABPN, ABPN_ET
from etc.zoo.acnet import ACNetSR
from etc.zoo.dbb import DBBSR
from etc.zoo.ecbsr import ECB, ECBSR, ECBSR_ET, ECBSRTrain
from etc.zoo.eimn import EIMN
from etc.zoo.espcn import ESPCN
from etc.zoo.etds import ETDSDual, ETDSPlain
from etc.zoo.fsrcnn import FSRCNN
from etc.zoo.imdn import IMDN
from etc.zoo.plain import Plain
from etc.zoo.repvgg import RepVGGSR
from etc.zoo.rfdn import RFDN
from etc.zoo.sesr import SESR
from etc.zoo.weights import load_state_dict, pretrained_dir, pretrained_path, resolve

__all__ = [
    "ABPN",
    "ABPN_ET",
    "ECB",
    "ECBSR",
    "ECBSR_ET",
    "ESPCN",
    "FSRCNN",
    "ECBSRTrain",
    "ETDSDual",
    "ETDSPlain",
    "Plain",
    "available",
    "build",
    "load_state_dict",
    "pretrained_dir",
    "pretrained_path",
]

Loader = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    """How to build one zoo name: random constructor, state-dict loader and the weights file naming."""

    make: Loader  # (scale, seed, **sizes, **kw) -> module with random weights
    load: Loader  # (state_dict, scale, seed, **kw) -> module with those weights
    family: str  # folder under pretrained_dir()
    stem: str  # file stem template, formatted with M, C, scale
    sizes: dict[str, int] = field(default_factory=dict)  # default M, C


def _sized(cls: Any) -> Loader:
    def make(scale: int, seed: int, M: int, C: int, **kw: Any) -> nn.Module:
        return cls(M, C, scale, seed=seed, **kw)

    return make


def _loader(from_sd: Callable[..., nn.Module]) -> Loader:
    """A loader passing only the model's own options (e.g. ``clamp``) to ``from_sd``."""

    def load(sd: Any, scale: int, seed: int, **kw: Any) -> nn.Module:
        return from_sd(sd, **kw)

    return load


def _make_espcn(scale: int, seed: int) -> nn.Module:
    return ESPCN(scale, seed=seed)


def _make_fsrcnn(scale: int, seed: int, **kw: Any) -> nn.Module:
    return FSRCNN(scale, seed=seed, **kw)


def _load_fsrcnn(sd: Any, scale: int, seed: int) -> nn.Module:
    return FSRCNN.from_state_dict(sd, scale)


def _load_ecbsr_train(sd: Any, scale: int, seed: int, clamp: bool = False) -> nn.Module:
    return ECBSRTrain.from_deploy(ECBSR.from_state_dict(sd, clamp=clamp), seed=seed)


def _load_etds_dual(sd: Any, scale: int, seed: int) -> nn.Module:
    return ETDSDual.from_plain(ETDSPlain.from_state_dict(sd))


def _no_weights(sd: Any, scale: int, seed: int, **kw: Any) -> nn.Module:
    raise ValueError("no published weights for this re-parameterizable net; use pretrained=False")


_ABPN = {"M": 4, "C": 28}
_ECBSR = {"M": 4, "C": 16}
_ETDS = {"M": 5, "C": 16}
_ENTRIES: dict[str, _Entry] = {
    "plain": _Entry(
        _sized(Plain), _loader(Plain.from_state_dict), "Plain", "Plain_M{M}C{C}_x{scale}", {"M": 6, "C": 32}
    ),
    "espcn": _Entry(_make_espcn, _loader(ESPCN.from_state_dict), "ESPCN", "ESPCN_x{scale}"),
    "fsrcnn": _Entry(_make_fsrcnn, _load_fsrcnn, "FSRCNN", "FSRCNN_x{scale}"),
    "abpn": _Entry(_sized(ABPN), _loader(ABPN.from_state_dict), "ABPN", "ABPN_M{M}C{C}_x{scale}", _ABPN),
    "abpn_et": _Entry(
        _sized(ABPN_ET), _loader(ABPN_ET.from_state_dict), "ABPN", "ABPN_ET_M{M}C{C}_x{scale}", _ABPN
    ),
    "ecbsr": _Entry(
        _sized(ECBSR), _loader(ECBSR.from_state_dict), "ECBSR", "ECBSR_M{M}C{C}_x{scale}", _ECBSR
    ),
    "ecbsr_train": _Entry(_sized(ECBSRTrain), _load_ecbsr_train, "ECBSR", "ECBSR_M{M}C{C}_x{scale}", _ECBSR),
    "ecbsr_et": _Entry(
        _sized(ECBSR_ET), _loader(ECBSR_ET.from_state_dict), "ECBSR", "ECBSR_ET_M{M}C{C}_x{scale}", _ECBSR
    ),
    "etds": _Entry(
        _sized(ETDSPlain), _loader(ETDSPlain.from_state_dict), "ETDS", "ETDS_M{M}C{C}_x{scale}", _ETDS
    ),
    "etds_dual": _Entry(_sized(ETDSDual), _load_etds_dual, "ETDS", "ETDS_M{M}C{C}_x{scale}", _ETDS),
    "repvgg": _Entry(_sized(RepVGGSR), _no_weights, "RepVGG", "RepVGGSR_M{M}C{C}_x{scale}", _ECBSR),
    "acnet": _Entry(_sized(ACNetSR), _no_weights, "ACNet", "ACNetSR_M{M}C{C}_x{scale}", _ECBSR),
    "dbb": _Entry(_sized(DBBSR), _no_weights, "DBB", "DBBSR_M{M}C{C}_x{scale}", _ECBSR),
    "sesr": _Entry(_sized(SESR), _no_weights, "SESR", "SESR_M{M}C{C}_x{scale}", {"M": 5, "C": 16}),
    "imdn": _Entry(_sized(IMDN), _no_weights, "IMDN", "IMDN_M{M}C{C}_x{scale}", {"M": 3, "C": 32}),
    "rfdn": _Entry(_sized(RFDN), _no_weights, "RFDN", "RFDN_M{M}C{C}_x{scale}", {"M": 4, "C": 32}),
    "eimn": _Entry(_sized(EIMN), _no_weights, "EIMN", "EIMN_M{M}C{C}_x{scale}", {"M": 3, "C": 32}),
}


def available() -> list[str]:
    """Names accepted by ``build``."""
    return sorted(_ENTRIES)


def build(name: str, scale: int = 4, pretrained: bool | str = False, seed: int = 0, **kw: Any) -> nn.Module:
    """Build zoo model ``name`` in eval mode.

    ``kw`` takes the sizes ``M`` and ``C`` (where the family has them), ``clamp`` (abpn, ecbsr, ecbsr_train) and
    FSRCNN's ``d``, ``s``, ``m``. ``seed`` drives the random init, and for ``ecbsr_train`` also the random
    branch split of pretrained deploy weights.
    """
    entry = _ENTRIES.get(name)
    if entry is None:
        raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(available())}")
    given = {k: kw[k] for k in entry.sizes if k in kw}
    sizes = {k: kw.pop(k, v) for k, v in entry.sizes.items()}
    if pretrained is False:
        return entry.make(scale, seed, **sizes, **kw).eval()
    stem = entry.stem.format(scale=scale, **sizes) if pretrained is True else str(pretrained)
    path = resolve(entry.family, stem)
    try:
        model = entry.load(load_state_dict(path), scale, seed, **kw)
    except TypeError as err:
        raise ValueError(f"{name}: unsupported option for pretrained weights ({err})") from err
    _check_matches(model, path.name, scale, given)
    return model.eval()


def _check_matches(model: nn.Module, file: str, scale: int, sizes: dict[str, int]) -> None:
    """Raise if weights loaded from ``file`` do not have the requested scale/sizes."""
    wanted = {"scale": scale, **sizes}
    got = {k: getattr(model, k) for k in wanted if hasattr(model, k)}
    bad = {k: (wanted[k], v) for k, v in got.items() if v != wanted[k]}
    if bad:
        detail = ", ".join(f"{k}={w} requested but the weights have {g}" for k, (w, g) in bad.items())
        raise ValueError(f"{file}: {detail}")
