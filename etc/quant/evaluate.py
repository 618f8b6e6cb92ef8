"""PSNR/SSIM of super-resolution models on an image set (Y channel, S-pixel border crop, BasicSR convention).

Each model runs in onnxruntime on the whole LR image (graph optimizations enabled, the deployment setting;
pass ``optimize=False`` to judge the graph as written). Outputs are rounded to uint8 like BasicSR's
``tensor2img`` before the metrics. A ``bicubic`` row upsamples LR with PIL's bicubic as the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from etc.quant.calib import ImagePair, to_nchw
from etc.quant.metrics import chw_to_hwc, psnr_y, ssim_y, to_uint8


@dataclass
class EvalRow:
    """Mean and per-image metrics of one model on one image set."""

    model: str
    psnr: float
    ssim: float
    per_image: dict[str, tuple[float, float]] = field(default_factory=dict)
    delta: float | None = None  # PSNR minus the reference row's

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "delta_psnr": self.delta,
            "images": {k: {"psnr": p, "ssim": s} for k, (p, s) in self.per_image.items()},
        }


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    from PIL import Image

    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC), dtype=np.uint8)


def sr_runner(
    model: onnx.ModelProto | str, optimize: bool, threads: int
) -> Callable[[np.ndarray], np.ndarray]:
    """LR uint8 HWC -> SR uint8 HWC through one onnxruntime session of ``model`` (outputs clipped and rounded)."""
    from etc import runtime

    sess = runtime.session(model, optimize=optimize, threads=threads)
    name = sess.get_inputs()[0].name

    def run(lr: np.ndarray) -> np.ndarray:
        out = sess.run(None, {name: to_nchw(lr)})[0]
        return to_uint8(chw_to_hwc(np.clip(out, 0.0, 1.0)))

    return run


def super_resolved(
    fn: Callable[[np.ndarray], np.ndarray], pairs: Sequence[ImagePair], name: str = ""
) -> Iterator[tuple[ImagePair, np.ndarray]]:
    """(pair, SR of its LR) for every pair, each SR checked against its HR's shape (BadModelError naming
    ``name`` and the photo when they differ: a wrong --scale)."""
    from etc.errors import BadModelError

    for pair in pairs:
        assert pair.hr is not None, f"{pair.name}: evaluation needs HR images"
        sr = fn(pair.lr)
        if sr.shape != pair.hr.shape:
            raise BadModelError(
                f"{name + ': ' if name else ''}output {sr.shape[1]}x{sr.shape[0]} for {pair.name} does not match "
                f"HR {pair.hr.shape[1]}x{pair.hr.shape[0]}; wrong --scale?"
            )
        yield pair, sr


def evaluate_fn(
    name: str, fn: Callable[[np.ndarray], np.ndarray], pairs: Sequence[ImagePair], scale: int
) -> EvalRow:
    per = {}
    for pair, sr in super_resolved(fn, pairs, name):
        per[pair.name] = (psnr_y(sr, pair.hr, scale), ssim_y(sr, pair.hr, scale))
    psnr = float(np.mean([p for p, _ in per.values()]))
    ssim = float(np.mean([s for _, s in per.values()]))
    return EvalRow(name, psnr, ssim, per)


def evaluate_models(
    models: Mapping[str, onnx.ModelProto | str],
    pairs: Sequence[ImagePair],
    scale: int,
    *,
    reference: str | None = None,
    bicubic: bool = True,
    optimize: bool = True,
    threads: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[EvalRow]:
    """One row per model (plus bicubic first); ``delta`` is PSNR minus the ``reference`` row's."""
    rows = []
    if bicubic:
        rows.append(evaluate_fn("bicubic", lambda lr: bicubic_upscale(lr, scale), pairs, scale))
    for name, model in models.items():
        rows.append(evaluate_fn(name, sr_runner(model, optimize, threads), pairs, scale))
        if progress:
            progress(1)
    if reference is not None:
        ref = next(r for r in rows if r.model == reference)
        for row in rows:
            row.delta = row.psnr - ref.psnr
    return rows
