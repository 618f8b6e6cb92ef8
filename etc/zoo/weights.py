"""Locating and loading the shared pretrained state dicts (``shared/pretrained/<Family>/<Name>.pth``).

The weights are data kept outside the repository. ``pretrained_dir()`` looks for them in this order:

1. the ``ETC_PRETRAINED`` environment variable (if set, it is the answer: a missing directory gives ``None``);
2. ``shared/pretrained`` under the current directory or any of its ancestors;
3. ``shared/pretrained`` under the package's directory or any of its ancestors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from etc.zoo.common import StateDict

ENV_VAR = "ETC_PRETRAINED"


def _ancestors(start: Path) -> list[Path]:
    start = start.resolve()
    return [start, *start.parents]


def pretrained_dir() -> Path | None:
    """Directory holding the pretrained weights, or None when it cannot be found."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        path = Path(env).expanduser()
        return path.resolve() if path.is_dir() else None
    for start in (Path.cwd(), Path(__file__).parent):
        for base in _ancestors(start):
            cand = base / "shared" / "pretrained"
            if cand.is_dir():
                return cand
    return None


def pretrained_path(family: str, name: str) -> Path | None:
    """Path of ``<pretrained_dir>/<family>/<name>.pth`` (``.pth`` optional in ``name``), None if absent."""
    root = pretrained_dir()
    if root is None:
        return None
    file = name if name.endswith(".pth") else f"{name}.pth"
    path = root / family / file
    return path if path.is_file() else None


def load_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Load a state dict of tensors safely (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    sd = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def resolve(family: str, name_or_path: str) -> Path:
    """Resolve an existing file path, or a stem such as ``ABPN_M4C28_x4`` inside ``family``; raise if missing."""
    direct = Path(name_or_path).expanduser()
    if direct.is_file():
        return direct
    found = pretrained_path(family, name_or_path)
    if found is not None:
        return found
    root = pretrained_dir()
    where = f"{root / family}" if root is not None else f"(no pretrained directory; set {ENV_VAR})"
    raise FileNotFoundError(f"pretrained weights {name_or_path!r} not found as a file or in {where}")
