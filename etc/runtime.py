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


_default_threads = 0  # intra-op threads of sessions that do not choose (0 = onnxruntime's default)


def use_threads(threads: int) -> None:
    """Sets the intra-op thread count of every later session that does not pass ``threads`` (CLI --threads)."""
    global _default_threads
    _default_threads = max(int(threads), 0)


def session(
    model: onnx.ModelProto | bytes | str, *, optimize: bool = False, threads: int = 0, quiet: bool = False
):
    """An onnxruntime CPU session; graph optimizations disabled unless ``optimize`` (so ORT fusions hide nothing).

    ``threads`` 0 takes the count set by :func:`use_threads` (onnxruntime's default when unset). ``quiet``
    silences onnxruntime's own error log (for probes whose failures are expected and reported).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 4 if quiet else 3
    threads = threads or _default_threads
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


# ---------------------------------------------------------------- float64 arbiter


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float64: float initializers, Constants, Casts and declared types widened."""
    from onnx import numpy_helper

    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    f32, f64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE

    def widen(tensor: onnx.TensorProto) -> None:
        if tensor.data_type == f32:
            tensor.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)
            )

    for init in wide.graph.initializer:
        widen(init)
    for value in [*wide.graph.input, *wide.graph.output, *wide.graph.value_info]:
        if value.type.tensor_type.elem_type == f32:
            value.type.tensor_type.elem_type = f64
    for node in wide.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                widen(attr.t)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == f32:
                attr.i = f64
    return wide


def float64_outputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The model's outputs computed in float64 by onnx's reference evaluator (with the vectorized kernels of
    :mod:`etc.float64`), or None if it cannot run it."""
    from onnx.reference import ReferenceEvaluator

    from etc.float64 import FAST_OPS

    try:
        evaluator = ReferenceEvaluator(to_float64(model), new_ops=FAST_OPS)
        wide_feed = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feed.items()}
        names = [o.name for o in model.graph.output]
        return dict(zip(names, evaluator.run(None, wide_feed)))
    except Exception:
        return None


def within_rounding(
    reference_model: onnx.ModelProto,
    feed: Mapping[str, np.ndarray],
    reference: np.ndarray,
    candidate: np.ndarray,
    name: str,
    tolerance: float,
    truth_cache: dict | None = None,
) -> bool:
    """Second opinion for a float32 mismatch: is the candidate as close to the float64 truth as the original is?

    Some trained or randomly split networks cancel large activations, so the float32 original itself is off its
    float64 value by more than the tolerance; a rewrite that sums in another order then differs from it by as much.
    Accepted when the candidate's error against float64 is within the tolerance plus twice the original's own.
    """
    key = id(feed)
    truth = truth_cache.get(key) if truth_cache is not None else None
    if truth is None:
        truth = float64_outputs(reference_model, feed)
        if truth_cache is not None and truth is not None:
            truth_cache[key] = truth
    if truth is None or name not in truth or truth[name].shape != candidate.shape:
        return False
    exact = truth[name]
    own = float(np.abs(reference.astype(np.float64) - exact).max())
    err = float(np.abs(candidate.astype(np.float64) - exact).max())
    return err <= tolerance + 2.0 * own


# ---------------------------------------------------------------- models that run only at some sizes


@dataclass(frozen=True)
class RunFailure:
    """onnxruntime could not run a model at ``size``: the node it names (if any) and its message."""

    size: tuple[int, int]
    node: str
    op: str
    message: str

    @property
    def where(self) -> str:
        """'node 'name' (Op)', or 'the model' when onnxruntime named no node."""
        if not self.node:
            return "the model"
        return f"node '{self.node}'" + (f" ({self.op})" if self.op else "")


def run_failure(model: onnx.ModelProto, sizes: Sequence[tuple[int, int]]) -> RunFailure | None:
    """The first size (of ``sizes``, or the static one) at which onnxruntime fails to run ``model``, or None."""
    import re

    specs = input_specs(model)
    if not any(s.dynamic_hw for s in specs):
        sizes = sizes[:1]
    try:
        sess = session(model, quiet=True)
    except Exception as exc:
        return RunFailure((0, 0), "", "", _first_line(exc))
    for size in sizes:
        try:
            sess.run(None, make_inputs(specs, size=size))
        except Exception as exc:
            message = _first_line(exc)
            found = re.search(r"Name:'([^']*)'", str(exc))
            name = found.group(1) if found else ""
            op = next((n.op_type for n in model.graph.node if name and n.name == name), "")
            return RunFailure(size, name, op, message)
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    status = text.split("Status Message:")[-1].strip() if "Status Message:" in text else text
    return status.splitlines()[0][:200] if status else type(exc).__name__


def baked_size_candidates(model: onnx.ModelProto, limit: int = 12) -> list[int]:
    """Spatial sizes the exporter may have baked into shape constants (most frequent first).

    Shape vectors (small int64 constants) hold the traced H or W plus the padding around it; each value v
    proposes v, v-1, ..., v-4.
    """
    from collections import Counter

    from onnx import numpy_helper

    tensors = list(model.graph.initializer)
    tensors += [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    votes: Counter[int] = Counter()
    for tensor in tensors:
        if tensor.data_type != onnx.TensorProto.INT64 or not 1 <= np.prod(tensor.dims or [1]) <= 8:
            continue
        for v in numpy_helper.to_array(tensor).reshape(-1).tolist():
            if 5 <= v <= 4096:
                for k in range(5):
                    votes[v - k] += 5 - k
    return [v for v, _ in votes.most_common(limit)]


def pin_hw(model: onnx.ModelProto, size: tuple[int, int]) -> onnx.ModelProto:
    """A copy whose 4-D inputs have static H/W ``size`` (dynamic batch becomes 1)."""
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    inits = {i.name for i in pinned.graph.initializer}
    for value in pinned.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in inits or len(dims) != 4:
            continue
        for dim, fixed in zip(dims, (1, None, *size)):
            if fixed is not None and not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.Clear()
                dim.dim_value = fixed
    return pinned


def runnable_size(model: onnx.ModelProto, max_tries: int = 150) -> tuple[int, int] | None:
    """A spatial size (from the sizes baked in the graph) at which onnxruntime runs ``model``, or None."""
    specs = input_specs(model)
    candidates = baked_size_candidates(model)
    if not candidates or not any(s.dynamic_hw for s in specs):
        return None
    try:
        sess = session(model, quiet=True)
    except Exception:
        return None
    pairs = [(h, w) for h in candidates for w in candidates][:max_tries]
    for size in pairs:
        try:
            sess.run(None, make_inputs(specs, size=size))
        except Exception:
            continue
        return size
    return None


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the float tensors ``names`` (to read intermediate values)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            have.add(name)
    return out
