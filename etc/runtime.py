"""onnxruntime as the judge: sessions with graph optimizations disabled, seeded inputs, output comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

DEFAULT_RANGE = (0.0, 1.0)
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((17, 23), (16, 16))


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, shape (None for symbolic dims) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    @property
    def dynamic_hw(self) -> bool:
        return len(self.shape) == 4 and (self.shape[2] is None or self.shape[3] is None)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        specs.append(InputSpec(value.name, dims, np.dtype(dtype)))
    return specs


def session(model: onnx.ModelProto | bytes | str, *, optimize: bool = False, threads: int = 0):
    """An onnxruntime CPU session; graph optimizations disabled unless ``optimize`` (so ORT fusions hide nothing)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def run(model_or_session, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = model_or_session if hasattr(model_or_session, "run") else session(model_or_session)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def concrete_shape(spec: InputSpec, size: tuple[int, int]) -> tuple[int, ...]:
    """Fills symbolic dims: batch 1, H/W from ``size``; static dims win."""
    shape = list(spec.shape)
    if len(shape) == 4:
        defaults = [1, None, size[0], size[1]]
        shape = [d if d is not None else defaults[i] for i, d in enumerate(shape)]
    shape = [d if d is not None else 1 for d in shape]
    return tuple(int(d) for d in shape)


def make_inputs(
    specs: Sequence[InputSpec],
    ranges: Mapping[str, tuple[float, float]] | None = None,
    size: tuple[int, int] = DEFAULT_SIZES[0],
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded uniform inputs inside each input's declared range (default [0, 1])."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        lo, hi = (ranges or {}).get(spec.name, DEFAULT_RANGE)
        value = rng.uniform(lo, hi, size=concrete_shape(spec, size))
        feeds[spec.name] = value.astype(spec.dtype)
    return feeds


def input_sets(
    model: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """One feed per spatial size (only one when every input has static H/W)."""
    specs = input_specs(model)
    if not any(s.dynamic_hw for s in specs):
        sizes = sizes[:1]
    return [make_inputs(specs, ranges, size, seed + i) for i, size in enumerate(sizes)]


@dataclass(frozen=True)
class Difference:
    """How far one output is from its reference."""

    output: str
    max_abs: float
    max_rel: float
    psnr: float
    ref_range: float

    def within(self, atol: float, rtol: float) -> bool:
        return self.max_abs <= atol + rtol * max(self.ref_range, 1.0)


def compare(reference: np.ndarray, candidate: np.ndarray, name: str = "output") -> Difference:
    """max abs / max rel error and PSNR (peak = reference range, at least 1) between two outputs."""
    if reference.shape != candidate.shape:
        return Difference(name, float("inf"), float("inf"), float("-inf"), 0.0)
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    err = np.abs(ref - cand)
    max_abs = float(err.max()) if err.size else 0.0
    if not np.isfinite(cand).all() and np.isfinite(ref).all():
        max_abs = float("inf")
    max_rel = float((err / np.maximum(np.abs(ref), 1e-6)).max()) if err.size else 0.0
    ref_range = float(ref.max() - ref.min()) if ref.size else 0.0
    mse = float(np.mean(err**2)) if err.size else 0.0
    peak = max(ref_range, 1.0)
    psnr = float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))
    return Difference(name, max_abs, max_rel, psnr, ref_range)
