"""Equivalence of two models, judged by onnxruntime with graph optimizations disabled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from etc import runtime
from etc.errors import BadModelError
from etc.shapes import fit_windows

VERIFY_SIZES: tuple[tuple[int, int], ...] = ((17, 23), (32, 32), (9, 40))


@dataclass
class VerifyReport:
    """Worst differences per output over all probes, and the verdict."""

    equivalent: bool
    atol: float
    rtol: float
    rows: list[dict] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "equivalent": self.equivalent,
            "atol": self.atol,
            "rtol": self.rtol,
            "outputs": self.rows,
            "probes": self.probes,
        }


def _check_interfaces(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    ia, ib = runtime.input_specs(a), runtime.input_specs(b)
    if [s.name for s in ia] != [s.name for s in ib]:
        raise BadModelError(
            f"the models take different inputs ({[s.name for s in ia]} vs {[s.name for s in ib]}); nothing to compare"
        )
    oa = [o.name for o in a.graph.output]
    ob = [o.name for o in b.graph.output]
    if len(oa) != len(ob):
        raise BadModelError(f"the models have different numbers of outputs ({len(oa)} vs {len(ob)})")


def image_feeds(model: onnx.ModelProto, folder: str | Path, limit: int = 8) -> list[dict[str, np.ndarray]]:
    """Feeds from the images in ``folder`` (RGB in [0, 1]), resized to the model's static H/W when fixed."""
    from PIL import Image

    specs = runtime.input_specs(model)
    if len(specs) != 1:
        raise BadModelError("--images needs a model with exactly one input")
    spec = specs[0]
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not paths:
        raise BadModelError(f"{folder}: no .png/.jpg/.bmp images found")
    feeds = []
    for path in paths[:limit]:
        img = Image.open(path).convert("RGB")
        if spec.shape[2] and spec.shape[3]:
            img = img.resize((spec.shape[3], spec.shape[2]), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
        feeds.append({spec.name: arr.astype(spec.dtype)})
    return feeds


def _same_feed(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def _known_feed(known: Sequence[tuple[dict, dict]], feed: dict) -> dict | None:
    """The known feed object equal to ``feed`` (same names, shapes, dtypes and values), if any."""
    return next((seen for seen, _ in known if _same_feed(seen, feed)), None)


def _known_outputs(known: Sequence[tuple[dict, dict]], feed: dict) -> dict | None:
    """The outputs already computed for an input equal to ``feed``."""
    return next((outputs for seen, outputs in known if _same_feed(seen, feed)), None)


def verify(
    model_a: onnx.ModelProto,
    model_b: onnx.ModelProto,
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    sizes: Sequence[tuple[int, int]] = VERIFY_SIZES,
    seeds: int = 2,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    images: str | Path | None = None,
    inputs: Sequence[tuple[str, Mapping[str, np.ndarray]]] | None = None,
    sessions: tuple[object | None, object | None] = (None, None),
    known: tuple[Sequence[tuple[dict, dict]], Sequence[tuple[dict, dict]]] = ((), ()),
    truth: dict | None = None,
) -> VerifyReport:
    """Runs both models on seeded inputs (several sizes, odd ones included) and optional images.

    An output passes when it is within ``atol + rtol * max(range, 1)`` of the reference, or, failing that, when
    it is no further from the float64 result (onnx reference evaluator) than the tolerance plus twice the
    reference's own float32 error (``float64_arbiter`` in the row says this second opinion was needed).
    ``inputs`` ((label, feed) pairs, e.g. from :func:`load_npz_inputs`) replace the seeded random inputs.
    ``sessions`` may hand over onnxruntime sessions already built for the two models (None: build one), and
    ``known`` (feed, outputs) pairs already computed for them: a probe equal to a known feed is not run again,
    and ``truth`` the float64 outputs already computed for those feeds (keyed as etc.runtime.within_rounding keys).
    """
    _check_interfaces(model_a, model_b)
    if sizes is VERIFY_SIZES:  # the default sizes, grown for a model whose windows are wider
        sizes = fit_windows(model_a, sizes)
    feeds: list[dict] = []
    probes: list[str] = []
    for label, feed in inputs or ():
        feeds.append(dict(feed))
        probes.append(label)
    for seed in range(seeds if inputs is None else 0):
        for feed in runtime.input_sets(model_a, input_ranges, sizes=sizes, seed=100 * seed):
            feeds.append(feed)
            probes.append("random " + "x".join(str(d) for d in next(iter(feed.values())).shape))
    if images is not None:
        for feed in image_feeds(model_a, images):
            feeds.append(feed)
            probes.append("image " + "x".join(str(d) for d in next(iter(feed.values())).shape))
    sess_a = sessions[0] or runtime.session(model_a)
    sess_b = sessions[1] or runtime.session(model_b)
    names_b = [o.name for o in sess_b.get_outputs()]
    known_a, known_b = known
    worst: dict[str, runtime.Difference] = {}
    shapes: dict[str, tuple[list[int], list[int]]] = {}
    nonfinite: set[str] = set()
    failed: set[str] = set()
    arbitrated: set[str] = set()
    truth = {} if truth is None else truth
    for index, probe in enumerate(feeds):
        feed = (
            _known_feed(known_a, probe) or _known_feed(known_b, probe) or probe
        )  # its float64 truth is kept
        try:
            out_a = _known_outputs(known_a, feed) or runtime.run(sess_a, feed)
            out_b = _known_outputs(known_b, feed) or dict(zip(names_b, sess_b.run(names_b, feed)))
        except Exception as exc:
            if index >= len(inputs or ()):
                raise
            raise BadModelError(  # the user's own input: say which one the models cannot take
                f"{probes[index]}: onnxruntime cannot run the models on it ({str(exc).splitlines()[0][:160]})"
            ) from None
        for (name, ref), cand in zip(out_a.items(), out_b.values()):
            if ref.shape != cand.shape:
                shapes.setdefault(name, (list(ref.shape), list(cand.shape)))
            elif np.isfinite(ref).all() and not np.isfinite(cand).all():
                nonfinite.add(name)
            diff = runtime.compare(ref, cand, name)
            if not diff.within(atol, rtol):
                tolerance = atol + rtol * max(diff.ref_range, 1.0)
                if runtime.within_rounding(model_a, feed, ref, cand, name, tolerance, truth):
                    arbitrated.add(name)
                else:
                    failed.add(name)
            prev = worst.get(name)
            if (
                prev is None
                or diff.max_abs > prev.max_abs
                or (diff.max_abs == prev.max_abs and diff.psnr < prev.psnr)
            ):
                worst[name] = diff
    rows = [
        {
            "output": d.output,
            "max_abs": d.max_abs,
            "max_rel": d.max_rel,
            "psnr": d.psnr,
            "range": d.ref_range,
            "ok": d.output not in failed,
            "float64_arbiter": d.output in arbitrated,
            "reason": _reason(d.output, shapes, nonfinite),
        }
        for d in worst.values()
    ]
    return VerifyReport(all(r["ok"] for r in rows), atol, rtol, rows, probes)


def _reason(
    output: str, shapes: Mapping[str, tuple[list[int], list[int]]], nonfinite: set[str]
) -> str | None:
    """Why an output could not be compared number by number (None when it could): shapes that differ ("output
    'y' has shape [1, 3, 34, 46] in the reference but [1, 3, 51, 69] in the candidate") or NaN/Inf values."""
    if output in shapes:
        ref, cand = shapes[output]
        return f"output '{output}' has shape {ref} in the reference but {cand} in the candidate"
    if output in nonfinite:
        return f"output '{output}' of the candidate holds NaN or Inf where the reference is finite"
    return None


def load_npz_inputs(model: onnx.ModelProto, path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(label, feed) from an .npz file holding one array per model input, named like the input; BadModelError
    names the file and the input when names, ranks or fixed dims disagree."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise BadModelError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0][:120]})") from None
    specs = runtime.input_specs(model)
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    if missing or extra:
        raise BadModelError(
            f"{path}: holds {sorted(arrays) or 'no arrays'}; the model's inputs are {names} "
            "(save one array per input under its name, e.g. np.savez(path, input=x))"
        )
    feed = {}
    for spec in specs:
        value = arrays[spec.name]
        fixed = all(d is None or d == v for d, v in zip(spec.shape, value.shape))
        if value.ndim != len(spec.shape) or not fixed:
            declared = ["?" if d is None else d for d in spec.shape]
            raise BadModelError(
                f"{path}: array '{spec.name}' has shape {list(value.shape)}; the input is declared {declared}"
            )
        feed[spec.name] = value.astype(spec.dtype)
    shape = "x".join(str(d) for d in feed[names[0]].shape)
    return f"file {path.name} {shape}", feed


@dataclass
class LayerDivergence:
    """Where two models with matching tensor names first part: the tensors compared, in the reference's node
    order, and the first whose difference exceeds the tolerance (None when none does)."""

    compared: int
    first: dict | None = None

    def as_dict(self) -> dict:
        return {"compared": self.compared, "first": self.first}


def first_divergence(
    model_a: onnx.ModelProto,
    model_b: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> LayerDivergence:
    """Runs both models with every float tensor both produce as an extra output (polygraphy's 'mark all') and
    names the first, in the reference's node order, that differs beyond ``atol + rtol * max(range, 1)``."""
    produced_a = _float_tensors(model_a)
    produced_b = set(_float_tensors(model_b))
    shared = [name for name in produced_a if name in produced_b]
    if not shared:
        return LayerDivergence(0)
    producer = {o: n for n in model_a.graph.node for o in n.output}
    sess_a = runtime.session(runtime.with_outputs(model_a, shared))
    sess_b = runtime.session(runtime.with_outputs(model_b, shared))
    worst: dict[str, runtime.Difference] = {}
    for feed in feeds:
        got_a = dict(zip(shared, sess_a.run(shared, dict(feed))))
        got_b = dict(zip(shared, sess_b.run(shared, dict(feed))))
        for name in shared:
            diff = runtime.compare(got_a[name], got_b[name], name)
            if name not in worst or diff.max_abs > worst[name].max_abs:
                worst[name] = diff
            if got_a[name].shape != got_b[name].shape:
                worst[name] = diff
                break
    for name in shared:
        diff = worst.get(name)
        if diff is None or diff.within(atol, rtol):
            continue
        node = producer[name]
        return LayerDivergence(
            len(shared),
            {
                "tensor": name,
                "node": node.name,
                "op": node.op_type,
                "max_abs": diff.max_abs,
                "tolerance": atol + rtol * max(diff.ref_range, 1.0),
            },
        )
    return LayerDivergence(len(shared))


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """Float32 tensors produced by nodes, in node order (types from onnx shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    }
    return [o for n in model.graph.node for o in n.output if o and types.get(o) == onnx.TensorProto.FLOAT]
