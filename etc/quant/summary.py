"""What an INT8 model costs and loses against its FP32 model: the figures ``etc quantize`` ends with.

* PSNR-Y drop on held-out calibration patches: crops of the calibration photos taken with another seed than
  the calibration crops, HR patches aligned with them, outputs rounded to 8 bits, both models run with
  onnxruntime graph optimizations off (the QDQ graph evaluated as written, i.e. exact int32 accumulation);
* conv MACs of the INT8 model over the FP32 model (weights read through DequantizeLinear);
* INT8 / FP32 latency on this CPU (fused kernels, optimizations on), paired runs, with the CPU's int8 flags.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from etc.cost import conv_macs_per_pixel
from etc.quant.calib import ImagePair


@dataclass
class Summary:
    """The closing figures of ``etc quantize`` (None when not measured)."""

    heldout_drop: float | None = None
    heldout_patches: int = 0
    macs_ratio: float = 1.0
    fp32_ms: float | None = None
    int8_ms: float | None = None
    latency_size: tuple[int, int] = (360, 640)
    cpu: str = ""
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def latency_ratio(self) -> float | None:
        if self.fp32_ms is None or self.int8_ms is None:
            return None
        return self.int8_ms / self.fp32_ms

    def as_dict(self) -> dict:
        return {**vars(self), "latency_ratio": self.latency_ratio}

    def lines(self) -> list[str]:
        out = []
        if self.heldout_drop is not None:
            out.append(
                f"PSNR-Y drop on {self.heldout_patches} held-out calibration patches: {self.heldout_drop:.3f} dB"
            )
        out.append(f"conv MACs INT8 / FP32: {self.macs_ratio:.2f}x")
        if self.latency_ratio is not None:
            h, w = self.latency_size
            flags = " ".join(self.flags) or "none of the int8 flags"
            out.append(
                f"latency at 1x3x{h}x{w}: INT8 {self.int8_ms:.1f} ms / FP32 {self.fp32_ms:.1f} ms = "
                f"{self.latency_ratio:.2f} on {self.cpu} ({flags})"
            )
        out.append(f"time spent: {self.seconds:.1f} s")
        return out


def heldout_pairs(spec: str | os.PathLike, scale: int, *, num: int, patch: int, seed: int) -> list[ImagePair]:
    """``num`` (LR, HR) patch pairs of the calibration images cropped with ``seed`` (pass another seed than
    calibration's); empty when the images have no HR."""
    from etc.quant.calib import load_pairs

    pairs = [p for p in load_pairs(spec, scale, purpose="calib", limit=num) if p.hr is not None]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num if pairs else 0):
        pair = pairs[i % len(pairs)]
        h, w = pair.lr.shape[:2]
        ph, pw = min(patch, h), min(patch, w)
        top, left = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        lr = pair.lr[top : top + ph, left : left + pw]
        hr = pair.hr[top * scale : (top + ph) * scale, left * scale : (left + pw) * scale]  # type: ignore[index]
        out.append(ImagePair(f"{pair.name}@{top},{left}", lr, hr))
    return out


def heldout_psnr(model: onnx.ModelProto, pairs: list[ImagePair], scale: int) -> float:
    """Mean PSNR-Y of ``model`` on ``pairs`` as :func:`psnr_drop` measures it (optimizations off, one thread,
    8-bit rounded outputs; no SSIM): compute the FP32 side once and subtract each quantized model's."""
    return float(np.mean(heldout_psnrs(model, pairs, scale)))


def heldout_psnrs(model: onnx.ModelProto, pairs: list[ImagePair], scale: int) -> list[float]:
    """PSNR-Y of ``model`` on each of ``pairs``, measured as :func:`heldout_psnr` does."""
    from etc.quant.evaluate import sr_runner, super_resolved
    from etc.quant.metrics import psnr_y

    run = sr_runner(model, False, 1)
    return [psnr_y(sr, pair.hr, scale) for pair, sr in super_resolved(run, pairs)]


def psnr_drop(fp32: onnx.ModelProto, int8: onnx.ModelProto, pairs: list[ImagePair], scale: int) -> float:
    """FP32 PSNR-Y minus INT8 PSNR-Y (mean over ``pairs``), optimizations off, 8-bit rounded outputs."""
    return heldout_psnr(fp32, pairs, scale) - heldout_psnr(int8, pairs, scale)


def paired_latency(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, size: tuple[int, int] = (360, 640), rounds: int = 5
) -> tuple[float, float]:
    """(FP32 ms, INT8 ms): medians of ``rounds`` alternating runs after one warm-up each, optimizations on."""
    from etc import runtime

    sessions = [runtime.session(m, optimize=True) for m in (fp32, int8)]
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, *size)).astype(np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for sess, feed in zip(sessions, feeds):
        sess.run(None, feed)
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for k, (sess, feed) in enumerate(zip(sessions, feeds)):
            t = time.perf_counter()
            sess.run(None, feed)
            times[k].append(time.perf_counter() - t)
    return float(np.median(times[0]) * 1000), float(np.median(times[1]) * 1000)


def summarize(
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    *,
    scale: int,
    calib: str | os.PathLike | None,
    patch: int,
    heldout: int = 8,
    seed: int = 0,
    latency: bool = True,
    latency_size: tuple[int, int] = (360, 640),
    seconds: float = 0.0,
    known_drop: tuple[float, int] | None = None,
) -> Summary:
    """The figures of the module docstring; ``calib`` None (arrays) skips the held-out drop. ``known_drop``
    (drop, patches) is the held-out drop the quantizer measured already on these patches (same seed, size
    and count): it is reported instead of measured again."""
    from etc.quant.kernels import cpu_name_and_flags

    out = Summary(seconds=seconds, latency_size=latency_size)
    out.cpu, out.flags = cpu_name_and_flags()
    out.macs_ratio = conv_macs_per_pixel(int8) / max(conv_macs_per_pixel(fp32), 1)
    if known_drop is not None:
        out.heldout_drop, out.heldout_patches = known_drop
    elif calib is not None and heldout > 0:
        pairs = heldout_pairs(calib, scale, num=heldout, patch=patch, seed=seed + 1000)
        if pairs:
            out.heldout_drop, out.heldout_patches = psnr_drop(fp32, int8, pairs, scale), len(pairs)
    if latency:
        out.fp32_ms, out.int8_ms = paired_latency(fp32, int8, latency_size)
    return out
