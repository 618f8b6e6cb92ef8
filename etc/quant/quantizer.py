"""``etc.quantize``: FP32-exact equalization, calibration, error-compensating rounding, bias correction, QDQ.

Steps, each on the float model unless said otherwise:

0. PReLU/LeakyReLU become ReLU on doubled channels (the ``prelu`` pass, exact: prelu(z) = relu(z) -
   α·relu(-z), checked in onnxruntime like every pass), so every Conv fuses with a ReLU into one int8 kernel
   whose output is non-negative and spends the whole uint8 range, instead of a float PReLU between two
   quantized tensors (a signed tensor before the PReLU, the layer quantized twice; ECBSR_ET figures in
   bench/RESULTS.md); ``prelu_to_relu=False`` keeps them;
1. calibration patches from DIV2K-style folders or the bundled photos (:mod:`etc.quant.calib`);
2. clip structures: a ReLU output read only by a 1x1 Conv whose rows are ``relu(b_o - w_o·t_c)`` (the clamp of
   ETDS/ABPN_ET/ECBSR_ET, Conv1x1(-I, 1)+ReLU) cannot tell values above ``b_o / w_o`` apart, so its range is
   capped there exactly, and that Conv's output range is exactly [0, max b_o];
3. equalization (:mod:`etc.quant.equalize`), run as the ``equalize`` pass under the pipeline's NumericCheck
   instrument, so a transform that changed the FP32 function stops the run; opt-in (``split`` > 1, more MACs):
   channel copies first, rescaled 1, 1 - s, 1 - 2s, ... afterwards (:mod:`etc.quant.stagger`, same check) so
   that their uint8 roundings differ and average out;
4. per-tensor ranges (``--method``; ``auto`` picks per tensor, each channel's error weighted by how strongly
   the next layer reads it, :func:`etc.quant.observe.consumer_weights`; a kept PReLU's input by the error after its slopes,
   :mod:`etc.quant.prelu_ranges`), QDQ placement (:mod:`etc.quant.qdq`);
5. weights: by default each Conv, in order, refitted to the FP32 output from the quantized input it reads and
   rounded with GPTQ (:mod:`etc.quant.refit`); ``rounding="gptq"`` rounds the FP32 weights with GPTQ only
   (:mod:`etc.quant.rounding`); ``rounding="reconstruct"`` refits, then learns each block's rounding against the
   FP32 block output (:mod:`etc.quant.reconstruct`); the ``target`` decides whether the int8 weights must respect the x86 AVX2 pair
   limit (:mod:`etc.quant.kernels`);
6. bias correction: Conv by Conv in topological order, the mean output error of the QDQ model against the float
   model on the calibration patches is added back to the bias;
7. opt-in: ranges rescaled by the output error (:mod:`etc.quant.search`), bounded fine-tuning of the int8
   weights and biases (:mod:`etc.quant.finetune`). The target is written to the model's metadata_props.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from etc import proto
from etc.cost import conv_macs_per_pixel
from etc.errors import BadModelError
from etc.quant import observe, qdq


@dataclass
class QuantReport:
    """What quantization decided, for the CLI and the benchmarks."""

    scale: int
    calib: str
    patches: int
    method: str
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    capped: dict[str, float] = field(default_factory=dict)
    equalized: list = field(default_factory=list)
    split: list = field(default_factory=list)
    staggered: list = field(default_factory=list)
    equalize_max_abs: float = 0.0
    bias_corrected: int = 0
    rounding: str = "refit"
    finetune: str = ""  # what the fine-tuning did (etc.quant.finetune), empty when off
    search_before: float = 0.0  # output MSE against FP32 before / after the range search
    search_after: float = 0.0
    target: str = "int32"  # resolved deployment target (etc.quant.kernels)
    prelu_to_relu: int = 0  # PReLU/LeakyReLU nodes rewritten as ReLU before quantizing
    ops: dict[str, int] = field(default_factory=dict)
    blocks: list = field(default_factory=list)  # etc.quant.reconstruct.BlockResult per block (reconstruct)
    sensitivity: list = field(default_factory=list)  # etc.quant.sensitivity.LayerSensitivity, when asked
    sensitivity_base: float = 0.0  # all-INT8 output PSNR (dB against FP32) the sensitivity gains start from

    def as_dict(self) -> dict:
        return {
            "scale": self.scale,
            "calib": self.calib,
            "patches": self.patches,
            "method": self.method,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "methods": self.methods,
            "capped": self.capped,
            "equalized": [vars(r) for r in self.equalized],
            "split": [vars(r) for r in self.split],
            "staggered": [vars(r) for r in self.staggered],
            "equalize_max_abs": self.equalize_max_abs,
            "bias_corrected": self.bias_corrected,
            "rounding": self.rounding,
            "target": self.target,
            "finetune": self.finetune,
            "prelu_to_relu": self.prelu_to_relu,
            "ops": self.ops,
            "sensitivity": {
                "all_int8_psnr": self.sensitivity_base,
                "layers": [r.as_dict() for r in self.sensitivity],
            }
            if self.sensitivity
            else None,
        }


# ---------------------------------------------------------------- helpers


def infer_scale(model: onnx.ModelProto) -> int:
    """Upscaling factor: output H / input H on a 16x16 probe."""
    from etc import runtime

    specs = runtime.input_specs(model)
    if len(specs) != 1:
        raise BadModelError("quantize/eval need a model with one image input")
    feed = runtime.make_inputs(specs, size=(16, 16))
    out = next(iter(runtime.run(model, feed).values()))
    inp = next(iter(feed.values()))
    if out.ndim != 4 or out.shape[2] % inp.shape[2] or out.shape[3] % inp.shape[3]:
        raise BadModelError(
            f"output {out.shape} is not an integer upscaling of input {inp.shape}; pass --scale"
        )
    return int(out.shape[2] // inp.shape[2])


def clip_structures(model: onnx.ModelProto) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """({tensor: exact cap}, {conv output tensor: exact range}) for the clip structures (module doc, step 2)."""
    consts = qdq.constants(model)
    readers = proto.readers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    caps: dict[str, float] = {}
    exact: dict[str, tuple[float, float]] = {}
    for node in model.graph.node:
        if not qdq.is_quantizable_conv(node, consts):
            continue
        t = node.input[0]
        src = producers.get(t)
        users = readers.get(node.output[0], [])
        if src is None or src.op_type != "Relu" or len(readers.get(t, [])) != 1 or t in outputs:
            continue
        if len(users) != 1 or users[0].op_type != "Relu" or node.output[0] in outputs:
            continue
        w = consts[node.input[1]].astype(np.float64)
        if w.shape[2:] != (1, 1) or proto.conv_attrs(node).group != 1:
            continue
        b = (
            consts[node.input[2]].astype(np.float64)
            if len(node.input) > 2 and node.input[2]
            else np.zeros(len(w))
        )
        m = w[:, :, 0, 0]
        if np.any(m > 0) or np.any((m != 0).sum(1) > 1):
            continue
        rows = (m != 0).any(1)
        if not rows.any():
            continue
        bounds = np.maximum(b[rows], 0.0) / np.abs(m[rows]).sum(1)
        caps[t] = float(bounds.max())
        exact[users[0].output[0]] = (0.0, float(max(np.maximum(b, 0.0).max(), 0.0)))
    return caps, exact


def _ensure_named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy with every node named and every Conv bias present (zeros), so passes can address them."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {n.name for n in out.graph.node if n.name}
    inits = {i.name: i for i in out.graph.initializer}
    for k, node in enumerate(out.graph.node):
        if not node.name:
            name = f"{node.op_type}_{k}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
        is_conv = node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in inits
        if is_conv and (len(node.input) < 3 or not node.input[2]):
            out_ch = inits[node.input[1]].dims[0]
            bname = f"{node.name}_zero_bias"
            out.graph.initializer.append(numpy_helper.from_array(np.zeros(out_ch, np.float32), bname))
            if len(node.input) < 3:
                node.input.append(bname)
            else:
                node.input[2] = bname
    return out


def named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every node named as quantization names it (``Op_index`` for an unnamed node), so that names
    in its reports (e.g. the sensitivity table) can be given back as ``exclude``."""
    return _ensure_named(_constant_nodes_to_initializers(model))


def _constant_nodes_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = []
    for node in out.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            out.graph.initializer.append(t)
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


# ---------------------------------------------------------------- main entry


def quantize_with_report(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    calib: str | os.PathLike | Sequence[np.ndarray] = "samples",
    *,
    scale: int | None = None,
    method: str = "auto",
    num: int = 32,
    patch: int = 64,
    per_channel: bool = True,
    equalize: bool = True,
    split: int = 1,
    split_budget: float | None = None,
    stagger: float = 0.03,
    rounding: str = "refit",
    bias_correction: bool = True,
    range_search: bool = False,
    finetune_steps: int = 0,
    target: str = "int32",
    safe_u8s8: bool | str | None = None,
    prelu_to_relu: bool = True,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    exclude: Sequence[str] = (),
    sensitivity: Sequence[np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, QuantReport]:
    """The INT8 QDQ model and what was decided. ``calib`` is a dataset spec or a list of (1, 3, h, w) arrays.

    ``split`` is the most copies of a dominant channel (1 = off), ``stagger`` the scale step between copies
    (0 = identical copies). ``split_budget`` (e.g. 1.05) instead buys copies by estimated benefit per added MAC
    until the conv MACs reach that multiple of the FP32 model's (:mod:`etc.quant.split_budget`; at most ``split``
    copies when ``split`` > 1, else 2). ``target`` is the kernel the model is made for (:mod:`etc.quant.kernels`: ``int32``
    exact accumulation, ``x86-avx2`` pair limit, ``native`` probes this CPU); ``safe_u8s8`` overrides the
    weight-grid constraint the target implies. Nodes named in ``exclude`` (node names or output tensors of
    the given model) stay float (:func:`etc.quant.qdq.plan_qdq`). ``sensitivity`` (held-out (1, 3, h, w)
    arrays, e.g. :func:`etc.quant.summary.heldout_pairs` LR patches) asks for the per-layer table of
    :mod:`etc.quant.sensitivity` in ``report.sensitivity``. ``progress`` is called with the number of steps done; when it
    also has a ``stage(name, total)`` method it is told when each stage starts and how many steps it has
    (etc.commands.progress.StageProgress)."""
    from etc.frontends.onnx_io import as_model
    from etc.quant import kernels as targets
    from etc.quant.calib import calibration_patches

    resolved = targets.resolve(target)
    if safe_u8s8 is None:
        safe_u8s8 = targets.safe_mode(resolved)
    if method not in observe.METHODS:
        raise BadModelError(
            f"unknown calibration method '{method}'; choose from {', '.join(observe.METHODS)}"
        )
    most_copies = (split if split > 1 else BUDGET_MAX_COPIES) if split_budget is not None else split
    if stagger < 0 or (most_copies - 1) * stagger >= 1:
        raise BadModelError(
            f"stagger {stagger} with split {most_copies}: need 0 <= stagger < 1 / (split - 1)"
        )
    if split_budget is not None and split_budget < 1:
        raise BadModelError(f"split budget {split_budget}: need a MAC multiple >= 1")
    if rounding not in ROUNDINGS:
        raise BadModelError(f"unknown rounding '{rounding}'; choose from {', '.join(ROUNDINGS)}")
    model = as_model(model_or_path)
    base_macs = conv_macs_per_pixel(model)
    rewritten = 0
    if prelu_to_relu:
        model, rewritten = relu_form(model, input_ranges)
    model = _ensure_named(_constant_nodes_to_initializers(model))
    scale = scale or infer_scale(model)
    _stage(progress, "reading calibration images", None)
    if isinstance(calib, (str, os.PathLike)):
        patches = calibration_patches(calib, scale, num=num, patch=patch, seed=seed)
        calib_name = str(calib)
    else:
        patches, calib_name = [np.asarray(p, dtype=np.float32) for p in calib], "arrays"
    from etc.runtime import input_specs

    in_name = input_specs(model)[0].name
    feeds = [{in_name: p} for p in patches]
    report = QuantReport(
        scale, calib_name, len(feeds), method, rounding=rounding, target=resolved, prelu_to_relu=rewritten
    )

    caps, exact = clip_structures(model)
    if split_budget is not None:
        model, report.split = _split_budget(
            model, feeds, caps, base_macs, split_budget, most_copies, input_ranges
        )
        caps, exact = clip_structures(model)
    elif split > 1:
        model, report.split = _split(model, caps, split, input_ranges)
        caps, exact = clip_structures(model)
    copied = split > 1 or bool(report.split)
    if equalize:  # a budget buys few copies: weigh activation noise as without them (measured better)
        act_weight = ACT_WEIGHT_WITH_COPIES if split > 1 and split_budget is None else ACT_WEIGHT_NO_COPIES
        _stage(progress, "equalizing", 2 * len(feeds))
        model, report.equalized, report.equalize_max_abs = _equalize(
            model, feeds, caps, input_ranges, progress, act_weight
        )
        caps, exact = clip_structures(model)
    if copied and stagger > 0:
        model, report.staggered = _stagger(model, caps, stagger, input_ranges)
        caps, exact = clip_structures(model)
    plan = qdq.plan_qdq(model, frozenset(exclude))
    _stage(progress, "calibrating ranges", 2 * len(feeds))
    stats = observe.collect(model, feeds, plan.own, progress, observe.consumer_weights(model, plan.own))
    ranges: dict[str, tuple[float, float]] = {}
    for name in plan.own:
        if name in exact:
            ranges[name], report.methods[name] = exact[name], "exact"
            continue
        lo, hi = observe.choose_range(stats[name], method)
        report.methods[name] = method if method != "auto" else _which(stats[name], (lo, hi))
        if name in caps and caps[name] < hi:
            hi, report.methods[name] = caps[name], "cap"
            report.capped[name] = hi
        ranges[name] = (lo, hi)
    for name in plan.inputs:
        ranges[name] = tuple((input_ranges or {}).get(name, (0.0, 1.0)))  # type: ignore[assignment]
    if method == "auto":
        from etc.quant.prelu_ranges import prelu_input_ranges

        for name, chosen in prelu_input_ranges(model, plan, feeds).items():
            ranges[name], report.methods[name] = chosen, "prelu"
    report.ranges = ranges
    float_model = model
    grids: dict[str, np.ndarray] = {}
    if rounding == "gptq":
        _stage(progress, "rounding weights (gptq)", None)
        model, grids = _gptq(model, plan, feeds, per_channel, safe_u8s8)
    elif rounding in ("refit", "reconstruct"):
        from etc.quant.reconstruct import reconstruct
        from etc.quant.refit import FitProblem, refit

        problem = FitProblem(
            model, model, plan, ranges, feeds, per_channel, safe_u8s8, skip_inputs=frozenset(caps)
        )
        _stage(progress, f"rounding weights ({rounding})", _rounding_steps(rounding, len(problem.fittable())))
        fitted = refit(problem, progress) if rounding == "refit" else reconstruct(problem, progress=progress)
        model, grids = fitted[0], fitted[1]
        if rounding == "reconstruct":
            report.blocks = fitted[2]
    build = dict(per_channel=per_channel, safe_u8s8=safe_u8s8, grids=grids)
    if bias_correction:
        model, report.bias_corrected = _bias_correct(model, plan, ranges, feeds, caps, build, progress)
    if range_search:
        from etc.quant.search import search_ranges

        out_name = model.graph.output[0].name
        reference = [v[out_name] for v in observe.run_tensors(float_model, feeds, [out_name])]
        movable = [n for n in plan.own if report.methods.get(n) not in ("exact", "cap")]
        _stage(progress, "searching ranges", len(movable))
        ranges, report.search_before, report.search_after = search_ranges(
            model, plan, ranges, feeds, reference, movable, build, progress=progress
        )
        report.ranges = ranges
    if finetune_steps > 0 and grids:
        from etc.quant.finetune import finetune

        _stage(progress, f"fine-tuning (up to {finetune_steps} steps)", None)
        train, held = _finetune_sets(calib, scale, num, patch, seed, feeds, in_name)
        tuned, report.finetune = finetune(
            model, plan, ranges, grids, train, held, float_model, build, steps=finetune_steps, seed=seed
        )
        model = tuned if tuned is not None else model
    if sensitivity is not None and plan.convs:
        from etc.quant.sensitivity import layer_sensitivity

        _stage(progress, "per-layer sensitivity", len(plan.convs))
        held = [{in_name: np.asarray(p, np.float32)} for p in sensitivity] or feeds
        report.sensitivity_base, report.sensitivity = layer_sensitivity(
            float_model, model, plan, ranges, build, held, exclude=frozenset(exclude), progress=progress
        )
    _stage(progress, "building the QDQ model", None)
    qmodel = qdq.build_qdq(model, plan, ranges, **build)
    targets.record(qmodel, resolved, target)
    report.ops = {}
    for node in qmodel.graph.node:
        report.ops[node.op_type] = report.ops.get(node.op_type, 0) + 1
    return qmodel, report


def quantize(model_or_path, calib="samples", **kwargs) -> onnx.ModelProto:
    """INT8 QDQ model of ``model_or_path`` calibrated on ``calib`` (see :func:`quantize_with_report`)."""
    return quantize_with_report(model_or_path, calib, **kwargs)[0]


PRELU_OPS = ("PRelu", "LeakyRelu")
# Equalization's weight of activation noise against weight noise (etc.quant.equalize.estimated_noise): with
# channel copies the weight side is cheap (16); without them 6 (the comparison on the trained models is in
# bench/RESULTS.md, "Quantizer design measurements").
ACT_WEIGHT_WITH_COPIES = 16.0
ACT_WEIGHT_NO_COPIES = 6.0
BUDGET_MAX_COPIES = (
    2  # copies per channel under split_budget when split is not given (etc.quant.split_budget)
)
ROUNDINGS = ("refit", "gptq", "nearest", "reconstruct")


def relu_form(
    model: onnx.ModelProto, input_ranges: Mapping[str, tuple[float, float]] | None = None
) -> tuple[onnx.ModelProto, int]:
    """(model with its PReLU/LeakyReLU rewritten by the exact ``prelu`` pass, how many disappeared).

    The pass runs under the pipeline's per-pass numeric check, then the result is verified (odd sizes), so a
    rewrite that changed the FP32 function raises EquivalenceError. A model without them is returned unchanged."""
    before = sum(n.op_type in PRELU_OPS for n in model.graph.node)
    if not before:
        return model, 0
    from etc.errors import EquivalenceError
    from etc.frontends.onnx_io import validate
    from etc.pipeline import NumericCheck, Options, run_pipeline
    from etc.verification import verify

    validate(model)
    check = NumericCheck(atol=1e-5, rtol=1e-5)
    out = run_pipeline(model, "prelu", options=Options(dict(input_ranges or {})), instruments=[check]).model
    if not verify(model, out, input_ranges=input_ranges).equivalent:
        raise EquivalenceError("the prelu pass changed the FP32 outputs before quantization", "prelu")
    return out, before - sum(n.op_type in PRELU_OPS for n in out.graph.node)


def _finetune_sets(calib, scale, num, patch, seed, feeds, in_name) -> tuple[list, list]:
    """(training feeds, held-out feeds) for the fine-tuning: the calibration feeds and other crops of the
    calibration images (a dataset spec), or the given arrays split 3:1."""
    if isinstance(calib, (str, os.PathLike)):
        from etc.quant.calib import calibration_patches

        held = calibration_patches(calib, scale, num=max(num // 4, 4), patch=patch, seed=seed + 1000)
        return list(feeds), [{in_name: p} for p in held]
    k = max(len(feeds) // 4, 1)
    return list(feeds[:-k]) or list(feeds), list(feeds[-k:])


def _which(stats: observe.TensorStats, chosen: tuple[float, float]) -> str:
    for name in ("minmax", "percentile", "entropy"):
        if np.allclose(observe.choose_range(stats, name), chosen):
            return f"auto:{name}"
    return "auto:percentile"


def _checked(model, pass_, input_ranges) -> tuple[onnx.ModelProto, float]:
    """One run of an exact pre-quantization pass under NumericCheck: (model, worst max abs difference)."""
    from etc.pipeline import NumericCheck, Options, run_pipeline

    check = NumericCheck(atol=1e-5, rtol=1e-5)
    options = Options(input_ranges=dict(input_ranges or {}))
    result = run_pipeline(model, [pass_], options=options, instruments=[check], max_rounds=1)
    return result.model, max(check.worst.values(), default=0.0)


def _split(model, caps, max_copies, input_ranges):
    from etc.quant.split import SplitPass

    sp = SplitPass(skip=frozenset(caps), max_copies=max_copies)
    out, _ = _checked(model, sp, input_ranges)
    return out, list(sp.records)


def _split_budget(model, feeds, caps, base_macs, budget, max_copies, input_ranges):
    from etc.quant.split_budget import BudgetSplitPass

    sp = BudgetSplitPass(feeds, base_macs, budget, skip=frozenset(caps), max_copies=max_copies)
    out, _ = _checked(model, sp, input_ranges)
    return out, list(sp.records)


def _stagger(model, caps, spread, input_ranges):
    from etc.quant.stagger import StaggerPass

    sp = StaggerPass(skip=frozenset(caps), spread=spread)
    out, _ = _checked(model, sp, input_ranges)
    return out, list(sp.records)


def _equalize(model, feeds, caps, input_ranges, progress, act_weight=None):
    from etc.quant.equalize import EqualizePass

    eq = EqualizePass(feeds=feeds, skip=frozenset(caps), progress=progress, act_weight=act_weight)
    out, worst = _checked(model, eq, input_ranges)
    return out, list(eq.records), worst


def _gptq(model, plan, feeds, per_channel, safe_u8s8):
    """Each quantized Conv's float weights replaced by their GPTQ-rounded dequantized values, and the grids."""
    from etc.quant import rounding
    from etc.quant.refit import conv_geometry

    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = qdq.constants(out)
    convs = proto.nodes_named(out, plan.convs)
    grids: dict[str, np.ndarray] = {}
    inputs = [n.input[0] for n in convs]
    values = list(observe.run_tensors(out, feeds, inputs))
    for node in convs:
        pads = conv_geometry(node)
        if pads is None:
            continue
        w = consts[node.input[1]]
        scales = qdq.weight_scales(w, per_channel, safe_u8s8)
        h = rounding.hessian([v[node.input[0]] for v in values], tuple(w.shape[2:]), pads)  # type: ignore[arg-type]
        q = rounding.gptq_round(w, scales, h)
        if safe_u8s8 and safe_u8s8 != "any":
            q = qdq.clamp_pairs(q)
        if safe_u8s8 and not qdq.u8s8_safe(q, safe_u8s8):
            continue
        proto.set_initializer(out, node.input[1], q.astype(np.float64) * scales.reshape(-1, 1, 1, 1))
        grids[node.name] = scales
    return out, grids


def _rounding_steps(rounding: str, convs: int) -> int | None:
    """Progress steps of the weight rounding of ``convs`` Convs: one per Conv (refit), one per learning step
    (reconstruct)."""
    if rounding == "reconstruct":
        from etc.quant.reconstruct import DEFAULT

        return convs * DEFAULT.iters
    return convs


def _stage(progress, name: str, total: int | None) -> None:
    """Tells a stage-aware ``progress`` (one with a ``stage(name, total)`` method) that a stage starts."""
    start = getattr(progress, "stage", None)
    if start is not None:
        start(name, total)


def _bias_correct(model, plan, ranges, feeds, caps, build, progress=None):
    """Adds the mean float-minus-QDQ error of every Conv's output (before its activation) to its bias."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    convs = [n for n in proto.nodes_named(out, plan.convs) if n.input[0] not in caps and len(n.input) > 2]
    names = [n.output[0] for n in convs]
    _stage(progress, "bias correction", len(convs))
    want = {n: np.zeros(0) for n in names}
    for values in observe.run_tensors(out, feeds, names):
        for name, v in values.items():
            m = observe.channel_rows(v).mean(1)
            want[name] = m if want[name].size == 0 else want[name] + m
    corrected = 0
    for node in convs:
        name = node.output[0]
        q = qdq.build_qdq(out, plan, ranges, **build)
        got = np.zeros(0)
        for values in observe.run_tensors(q, feeds, [name]):
            m = observe.channel_rows(values[name]).mean(1)
            got = m if got.size == 0 else got + m
        delta = (want[name] - got) / len(feeds)
        bias = qdq.constants(out)[node.input[2]].astype(np.float64)
        proto.set_initializer(out, node.input[2], bias + delta)
        corrected += 1
        if progress:
            progress(1)
    return out, corrected
