"""Helpers shared by the zoo and torch-frontend tests: small configs, images, pretrained lookup, ORT runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from etc import zoo
from etc.testing import run_first

NAMES = zoo.available()
UNSIZED = ("espcn", "fsrcnn")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Limit torch's intra-op threads (tiny tensors run far faster single-threaded on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def small_kw(name: str) -> dict[str, int]:
    """Small sizes for fast tests (ETDS needs C > 3 for its residual stream)."""
    return {} if name in UNSIZED else {"M": 2, "C": 8}


def require_pretrained() -> Path:
    """The shared weights folder, or skip the test with the reason."""
    root = zoo.pretrained_dir()
    if root is None:
        pytest.skip("pretrained weights not found: set ETC_PRETRAINED or provide ../shared/pretrained")
    return root


WITH_WEIGHTS = frozenset(
    {"plain", "espcn", "fsrcnn", "abpn", "abpn_et", "ecbsr", "ecbsr_train", "ecbsr_et", "etds", "etds_dual"}
)


def has_weights(name: str, scale: int) -> bool:
    """Whether the default pretrained file of a zoo name exists (seed families only; Plain ships x4 only)."""
    return name in WITH_WEIGHTS and not (name == "plain" and scale != 4)


def rand_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A deterministic 1x3xhxw tensor uniform in [0, 1]."""
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def astronaut(h: int, w: int, top: int = 100, left: int = 180) -> torch.Tensor:
    """A crop of scikit-image's astronaut photo as 1x3xhxw float32 in [0, 1]."""
    from skimage import data

    img = data.astronaut()[top : top + h, left : left + w].astype(np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic antialiased downscale, clamped to [0, 1] (the usual SR degradation)."""
    lr = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp(0.0, 1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def ort_run(model: onnx.ModelProto, x: torch.Tensor, input_name: str = "input") -> np.ndarray:
    """The first output in onnxruntime, graph optimizations disabled (so ORT fusions hide nothing)."""
    return run_first(model, {input_name: x.numpy()})
