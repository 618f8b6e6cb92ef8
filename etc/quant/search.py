"""Activation ranges chosen by the error that reaches the model output.

A per-tensor uint8 range trades clipping of a tensor's rare large values against the rounding step of all
the others; which side costs more depends on how the layers after it read the tensor, which per-tensor
statistics cannot see. Here each range's upper end is scaled by the factor from :data:`FACTORS` that gives the
lowest mean squared error of the whole QDQ model's output against the FP32 model's output on the calibration
patches (coordinate descent, tensors in topological order, ``rounds`` sweeps; the other tensors keep their
current ranges). Exact ranges (clip structures, graph inputs) are never moved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from etc.quant import observe, qdq

FACTORS = (0.55, 0.7, 0.85, 1.0, 1.15)


def output_error(
    qmodel: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], reference: Sequence[np.ndarray]
) -> float:
    """Mean squared difference between the QDQ model's first output and ``reference`` (one array per feed)."""
    name = qmodel.graph.output[0].name
    total = 0.0
    for values, ref in zip(observe.run_tensors(qmodel, feeds, [name]), reference):
        total += float(np.mean((values[name].astype(np.float64) - ref) ** 2))
    return total / max(len(reference), 1)


def search_ranges(
    model: onnx.ModelProto,
    plan: qdq.Plan,
    ranges: Mapping[str, tuple[float, float]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[np.ndarray],
    movable: Sequence[str],
    build: Mapping,
    *,
    rounds: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, tuple[float, float]], float, float]:
    """(new ranges, output MSE before, after); see the module docstring. ``build`` holds build_qdq options."""
    current = dict(ranges)

    def error(candidate: Mapping[str, tuple[float, float]]) -> float:
        return output_error(qdq.build_qdq(model, plan, candidate, **build), feeds, reference)

    start = best = error(current)
    for _ in range(rounds):
        for name in movable:
            lo, hi = current[name]
            base = (lo, hi)
            for factor in FACTORS:
                if factor == 1.0:
                    continue
                trial = dict(current)
                trial[name] = (lo * factor, hi * factor)
                err = error(trial)
                if err < best:
                    best, base = err, trial[name]
            current[name] = base
            if progress:
                progress(1)
    return current, start, best
