"""Shared fixtures: the pretrained weights folder and the real photos scikit-image ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (reproducible CI); the fuzz campaign in bench/ explores.
settings.register_profile("etc", derandomize=True, database=None, deadline=None)
settings.load_profile("etc")

ROOT = Path(__file__).resolve().parents[1]


def shared_pretrained() -> Path | None:
    for candidate in (ROOT.parent / "shared" / "pretrained", ROOT / "shared" / "pretrained"):
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture
def pretrained_root() -> Path:
    root = shared_pretrained()
    if root is None:
        pytest.skip("../shared/pretrained is absent (real weights are only on developer/CI machines)")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo (scikit-image's astronaut), RGB float32 in [0, 1], NCHW, 64x64 crop."""
    from skimage import data

    img = data.astronaut()[100:164, 180:244].astype(np.float32) / 255.0
    return img.transpose(2, 0, 1)[None].copy()
