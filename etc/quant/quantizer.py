"""``etc.quantize``: FP32-exact equalization, calibration, error-compensating rounding, bias correction, QDQ.

Quantization is a list of named steps over one :class:`QuantState`, run in order like the pass pipeline; each
step is timed and listed in ``QuantReport.steps``. Each works on the float model unless said otherwise:

* ``prelu``: PReLU/LeakyReLU become ReLU on doubled channels (the ``prelu`` pass, exact: prelu(z) = relu(z) -
  α·relu(-z), checked in onnxruntime like every pass), so every Conv fuses with a ReLU into one int8 kernel
  whose output is non-negative and spends the whole uint8 range, instead of a float PReLU between two
  quantized tensors (a signed tensor before the PReLU, the layer quantized twice). It doubles the channels
  around each PReLU (more MACs), so it is opt-in (``prelu_to_relu=True``): by default PReLUs are kept, and the
  report of a PReLU model names the alternatives with their measured drops and MACs (``alternatives`` step);
* ``prepare``: Constant nodes become initializers, every node gets a name and every Conv a bias; the scale is
  measured when not given; for ``target="htp"`` PReLU slopes move onto the uint8 grid HTP runs them on
  (:mod:`etc.quant.htp_form`);
* ``calibrate``: calibration patches from DIV2K-style folders or the bundled photos (:mod:`etc.quant.calib`);
* clip structures (:func:`clip_structures`, counted once per model a step produces): a ReLU output read only
  by a 1x1 Conv whose rows are ``relu(b_o - w_o·t_c)`` (the clamp of ETDS/ABPN_ET/ECBSR_ET,
  Conv1x1(-I, 1)+ReLU) cannot tell values above ``b_o / w_o`` apart, so its range is capped there exactly,
  and that Conv's output range is exactly [0, max b_o];
* ``split`` (opt-in, more MACs): channel copies (:mod:`etc.quant.split`, or bought under a MAC budget,
  :mod:`etc.quant.split_budget`); ``equalize`` (:mod:`etc.quant.equalize`) and ``stagger`` (copies rescaled 1,
  1 - s, 1 - 2s, ... so that their uint8 roundings differ, :mod:`etc.quant.stagger`): exact passes run under
  the pipeline's NumericCheck instrument, so a transform that changed the FP32 function stops the run;
* ``ranges``: per-tensor ranges (``method``; ``auto`` picks per tensor, each channel's error weighted by how
  strongly the next layer reads it, :func:`etc.quant.observe.consumer_weights`; a kept PReLU's input by the
  error after its slopes, :mod:`etc.quant.prelu_ranges`), QDQ placement (:mod:`etc.quant.qdq`);
* ``rounding``: by default each Conv, in order, refitted to the FP32 output from the quantized input it reads
  and rounded with GPTQ (:mod:`etc.quant.refit`); ``gptq`` rounds the FP32 weights with GPTQ only
  (:mod:`etc.quant.rounding`); ``reconstruct`` refits, then learns each block's rounding against the FP32
  block output (:mod:`etc.quant.reconstruct`); the ``target`` decides whether the int8 weights must respect
  the x86 AVX2 pair limit (:mod:`etc.quant.kernels`);
* ``bias correction``: Conv by Conv in topological order, the mean output error of the QDQ model against the
  float model on the calibration patches is added back to the bias;
* ``range search``, ``finetune`` (opt-in): ranges rescaled by the output error (:mod:`etc.quant.search`),
  bounded fine-tuning of the int8 weights and biases (:mod:`etc.quant.finetune`);
* ``sensitivity`` (opt-in): the per-layer table, output PSNR with each quantized Conv kept float
  (:mod:`etc.quant.sensitivity`); nodes named in ``exclude`` stay float throughout (:func:`etc.quant.qdq.plan_qdq`);
* ``write``: the QDQ model (``target="htp"``: in HTP's form, with its bias shift); the target is written to its
  metadata_props.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from etc import proto
from etc.cost import conv_macs_per_pixel
from etc.errors import BadModelError
from etc.quant import observe, qdq
from etc.quant.config import BUDGET_MAX_COPIES, ROUNDINGS, QuantConfig

__all__ = ["BUDGET_MAX_COPIES", "ROUNDINGS", "QuantConfig", "QuantReport", "quantize", "quantize_with_report"]


@dataclass
class StepTime:
    """One quantization step: its name, whether it ran (False: its option is off) and its wall time."""

    name: str
    ran: bool
    seconds: float


@dataclass
class QuantReport:
    """What quantization decided, for the CLI and the benchmarks; ``as_dict`` gives every field as plain JSON."""

    scale: int
    calib: str
    patches: int
    method: str
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    capped: dict[str, float] = field(default_factory=dict)
    equalized: list = field(default_factory=list)  # etc.quant.equalize.EqualizeRecord per equalized tensor
    split: list = field(default_factory=list)  # etc.quant.split.SplitRecord per widened tensor
    staggered: list = field(default_factory=list)  # etc.quant.stagger.StaggerRecord per staggered tensor
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
    floor_drop: float | None = None  # held-out drop of the activations alone in uint8 (weights float)
    a8_drop: float | None = None  # held-out drop of the pure 8-bit model
    heldout_drop: float | None = None  # held-out drop of the model written (mixed when a16 is on)
    heldout_patches: int = 0
    floor_error: str = ""  # why the floor was not measured, when it was asked for and could not be
    a16: object | None = None  # etc.quant.a16.A16Choice when a16 is not 'none'
    a16_cycles: dict[str, int] = field(default_factory=dict)  # HTP cycles: a8, mixed, all (a16_cost='htp')
    a16_htp_drop: dict[str, float] = field(default_factory=dict)  # held-out drop on HTP: a8, mixed
    prelus: int = 0  # PReLU/LeakyReLU nodes kept (quantized as they are)
    slopes_snapped: int = 0  # target htp: PReLU slopes moved onto their uint8 grid before calibration
    alternatives: list = field(default_factory=list)  # Alternative per other way to quantize a PReLU model
    steps: list[StepTime] = field(default_factory=list)  # every step in order, timed
    config: QuantConfig | None = None  # the options it ran with

    def as_dict(self) -> dict:
        """Every field, as values a strict JSON encoder takes (records as dicts, tuples as lists)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["config"] = self.config.as_dict() if self.config is not None else None
        return out

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


def _plain(value):
    """``value`` with dataclasses as dicts, then as JSON types (etc.text.json_safe)."""
    from etc.text import json_safe

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return json_safe(value)


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


# ---------------------------------------------------------------- the steps


@dataclass
class QuantState:
    """What the steps share: the float model as it is rewritten, the calibration feeds, the QDQ plan, the ranges,
    the weight grids and, at the end, the QDQ model. ``clips`` is counted once per float model a step produces."""

    config: QuantConfig
    calib: str | os.PathLike | Sequence[np.ndarray]
    model: onnx.ModelProto
    report: QuantReport
    target: str  # the resolved deployment target
    safe_u8s8: bool | str
    progress: Callable[[int], None] | None = None
    base_macs: int = 0  # conv MACs of the model as given (the split budget's reference)
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    in_name: str = ""
    plan: qdq.QdqPlan | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    float_model: onnx.ModelProto | None = None  # the float model the weights were rounded from
    grids: dict[str, np.ndarray] = field(default_factory=dict)
    qmodel: onnx.ModelProto | None = None
    source: onnx.ModelProto | None = None  # the model as given: the FP32 reference of the held-out drops
    heldout: list = field(default_factory=list)  # held-out (LR, HR) pairs (etc.quant.summary.heldout_pairs)
    heldout_refs: list[float] | None = None  # the FP32 model's PSNR-Y on each of them, measured once
    wide_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # min/max ranges for 16 bits
    # the 8-bit ranges (the floor)
    narrow_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    wide: frozenset[str] = frozenset()  # tensors carried in 16 bits
    _clips: tuple[dict[str, float], dict[str, tuple[float, float]]] | None = None

    def set_model(self, model: onnx.ModelProto) -> None:
        """The model a step produced. Until the ranges are chosen it is the float model being rewritten, whose
        clip structures are counted again when next asked for; after that only weights are rounded, and the
        clip structures stay those of the float model the ranges came from."""
        self.model = model
        if self.plan is None:
            self._clips = None

    @property
    def clips(self) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
        """({tensor: exact cap}, {conv output: exact range}) of the current model (:func:`clip_structures`)."""
        if self._clips is None:
            self._clips = clip_structures(self.model)
        return self._clips

    @property
    def caps(self) -> dict[str, float]:
        return self.clips[0]

    @property
    def build(self) -> dict:
        """The keyword arguments of qdq.build_qdq shared by every step that builds the QDQ model."""
        return dict(
            per_channel=self.config.per_channel,
            safe_u8s8=self.safe_u8s8,
            grids=self.grids,
            wide=self.wide,
            htp=self.target == "htp",
        )

    @property
    def rounding_shift(self) -> float:
        """Output steps added to the 8-bit Convs' biases of the written model (target htp), never seen by the
        steps that fit weights and biases to the exact arithmetic (they would take the shift back out)."""
        from etc.quant.htp_form import ROUNDING_SHIFT

        return ROUNDING_SHIFT if self.target == "htp" else 0.0


@dataclass(frozen=True)
class QuantStep:
    """A named step of the flow; ``wanted`` says from the options (and what earlier steps did) whether it runs."""

    name: str
    run: Callable[[QuantState], None]
    wanted: Callable[[QuantState], bool] = lambda state: True


def _relu_form_step(state: QuantState) -> None:
    model, state.report.prelu_to_relu = relu_form(state.model, state.config.input_ranges)
    state.set_model(model)


def _prepare_step(state: QuantState) -> None:
    state.set_model(named_nodes(state.model))
    if state.target == "htp":
        from etc.quant.htp_form import snap_slopes

        snapped, state.report.slopes_snapped = snap_slopes(state.model)
        state.set_model(snapped)
    state.report.scale = state.config.scale or infer_scale(state.model)
    from etc.quant import a16

    if a16.parse(state.config.a16)[0] == "names":  # a bad name fails before the work
        a16.resolve(state.model, qdq.plan_qdq(state.model, frozenset(state.config.exclude)), state.config.a16)


def _calibrate_step(state: QuantState) -> None:
    from etc.quant.calib import calibration_patches
    from etc.runtime import input_specs

    config, calib = state.config, state.calib
    _stage(state.progress, "reading calibration images", None)
    if isinstance(calib, (str, os.PathLike)):
        patches = calibration_patches(
            calib, state.report.scale, num=config.num, patch=config.patch, seed=config.seed
        )
        state.report.calib = str(calib)
    else:
        patches, state.report.calib = [np.asarray(p, dtype=np.float32) for p in calib], "arrays"
    state.in_name = input_specs(state.model)[0].name
    state.feeds = [{state.in_name: p} for p in patches]
    state.report.patches = len(state.feeds)


def _split_step(state: QuantState) -> None:
    config = state.config
    if config.split_budget is not None:
        model, state.report.split = _split_budget(
            state.model,
            state.feeds,
            state.caps,
            state.base_macs,
            config.split_budget,
            config.most_copies,
            config.input_ranges,
        )
    else:
        model, state.report.split = _split(state.model, state.caps, config.split, config.input_ranges)
    state.set_model(model)


def _equalize_step(state: QuantState) -> None:
    config = state.config
    # a budget buys few copies: weigh activation noise as without them (measured better)
    with_copies = config.split > 1 and config.split_budget is None
    act_weight = ACT_WEIGHT_WITH_COPIES if with_copies else ACT_WEIGHT_NO_COPIES
    _stage(state.progress, "equalizing", 2 * len(state.feeds))
    model, state.report.equalized, state.report.equalize_max_abs = _equalize(
        state.model, state.feeds, state.caps, config.input_ranges, state.progress, act_weight
    )
    state.set_model(model)


def _has_copies(state: QuantState) -> bool:
    """Whether the float model holds channel copies to stagger: ``split`` asked for them or the budget bought some."""
    return state.config.split > 1 or bool(state.report.split)


def _stagger_step(state: QuantState) -> None:
    model, state.report.staggered = _stagger(
        state.model, state.caps, state.config.stagger, state.config.input_ranges
    )
    state.set_model(model)


def _ranges_step(state: QuantState) -> None:
    """Per-tensor ranges of every quantized activation (exact, capped or observed) and of the graph inputs."""
    config, report, model = state.config, state.report, state.model
    caps, exact = state.clips
    plan = state.plan = qdq.plan_qdq(model, frozenset(config.exclude))
    _stage(state.progress, "calibrating ranges", 2 * len(state.feeds))
    stats = observe.collect(
        model, state.feeds, plan.own, state.progress, observe.consumer_weights(model, plan.own)
    )
    ranges: dict[str, tuple[float, float]] = {}
    for name in plan.own:
        if name in exact:
            ranges[name], report.methods[name] = exact[name], "exact"
            continue
        lo, hi = observe.choose_range(stats[name], config.method)
        report.methods[name] = config.method if config.method != "auto" else _which(stats[name], (lo, hi))
        if name in caps and caps[name] < hi:
            hi, report.methods[name] = caps[name], "cap"
            report.capped[name] = hi
        ranges[name] = (lo, hi)
    for name in plan.inputs:
        ranges[name] = tuple((config.input_ranges or {}).get(name, (0.0, 1.0)))  # type: ignore[assignment]
    if config.method == "auto":
        from etc.quant.prelu_ranges import prelu_input_ranges

        for name, chosen in prelu_input_ranges(model, plan, state.feeds).items():
            ranges[name], report.methods[name] = chosen, "prelu"
    state.ranges = state.narrow_ranges = report.ranges = ranges
    state.float_model = model
    state.wide_ranges = {}
    for name in plan.own:  # 16 bits: rounding is 256x finer, so clipping outliers no longer pays
        if name not in exact:
            lo, hi = observe.choose_range(stats[name], "minmax")
            state.wide_ranges[name] = (lo, min(hi, caps[name]) if name in caps else hi)
    from etc.quant import a16

    if a16.parse(config.a16)[0] in ("names", "all"):  # rounding and bias correction see these widths
        state.wide = a16.resolve(model, plan, config.a16)
        state.ranges = report.ranges = _ranges_for(state, state.wide)
        for name in qdq.plan_widths(model, plan, state.wide).wide:
            if name in state.wide_ranges:
                report.methods[name] = "minmax (16-bit)"


def _ranges_for(state: QuantState, wide: frozenset[str]) -> dict[str, tuple[float, float]]:
    """The ranges with every tensor stored in 16 bits under ``wide`` at its observed min/max."""
    assert state.plan is not None
    if not wide:  # the 8-bit model (names/all replaced state.ranges of their tensors)
        return state.narrow_ranges if state.wide and state.narrow_ranges else state.ranges
    stored = qdq.plan_widths(state.model, state.plan, wide).wide
    return {**state.ranges, **{t: state.wide_ranges[t] for t in stored if t in state.wide_ranges}}


def _rounding_step(state: QuantState) -> None:
    """The weights rounded to their int8 grids: GPTQ on the FP32 weights, or refitted (and reconstructed)."""
    config, plan = state.config, state.plan
    assert plan is not None
    if config.rounding == "gptq":
        _stage(state.progress, "rounding weights (gptq)", None)
        model, state.grids = _gptq(state.model, plan, state.feeds, config.per_channel, state.safe_u8s8)
        state.set_model(model)
        return
    from etc.quant.reconstruct import reconstruct
    from etc.quant.refit import FitProblem, refit

    problem = FitProblem(
        state.model,
        state.model,
        plan,
        state.ranges,
        state.feeds,
        config.per_channel,
        state.safe_u8s8,
        skip_inputs=frozenset(state.caps),
        wide=state.wide,
    )
    steps = _rounding_steps(config.rounding, len(problem.fittable()))
    _stage(state.progress, f"rounding weights ({config.rounding})", steps)
    if config.rounding == "refit":
        fitted = refit(problem, state.progress)
    else:
        fitted = reconstruct(problem, progress=state.progress)
        state.report.blocks = fitted[2]
    state.grids = fitted[1]
    state.set_model(fitted[0])


def _bias_correction_step(state: QuantState) -> None:
    assert state.plan is not None
    model, state.report.bias_corrected = _bias_correct(
        state.model, state.plan, state.ranges, state.feeds, state.caps, state.build, state.progress
    )
    state.set_model(model)


def _range_search_step(state: QuantState) -> None:
    from etc.quant.search import search_ranges

    report, plan = state.report, state.plan
    assert plan is not None and state.float_model is not None
    out_name = state.model.graph.output[0].name
    reference = [v[out_name] for v in observe.run_tensors(state.float_model, state.feeds, [out_name])]
    movable = [n for n in plan.own if report.methods.get(n) not in ("exact", "cap")]
    _stage(state.progress, "searching ranges", len(movable))
    state.ranges, report.search_before, report.search_after = search_ranges(
        state.model, plan, state.ranges, state.feeds, reference, movable, state.build, progress=state.progress
    )
    report.ranges = state.ranges


def _finetune_step(state: QuantState) -> None:
    from etc.quant.finetune import finetune

    config, plan = state.config, state.plan
    assert plan is not None and state.float_model is not None
    _stage(state.progress, f"fine-tuning (up to {config.finetune_steps} steps)", None)
    train, held = _finetune_sets(
        state.calib, state.report.scale, config.num, config.patch, config.seed, state.feeds, state.in_name
    )
    tuned, state.report.finetune = finetune(
        state.model,
        plan,
        state.ranges,
        state.grids,
        train,
        held,
        state.float_model,
        state.build,
        steps=config.finetune_steps,
        seed=config.seed,
    )
    if tuned is not None:
        state.set_model(tuned)


def _sensitivity_step(state: QuantState) -> None:
    """The per-layer table (:mod:`etc.quant.sensitivity`): output PSNR with each quantized Conv kept float, on
    held-out patches of the calibration images (the calibration patches when ``calib`` is arrays)."""
    from etc.quant.sensitivity import layer_sensitivity

    plan, config = state.plan, state.config
    assert plan is not None and state.float_model is not None
    _stage(state.progress, "per-layer sensitivity", len(plan.convs))
    held = [{state.in_name: p} for p in _sensitivity_patches(state)] or state.feeds
    state.report.sensitivity_base, state.report.sensitivity = layer_sensitivity(
        state.float_model,
        state.model,
        plan,
        state.ranges,
        state.build,
        held,
        exclude=frozenset(config.exclude),
        progress=state.progress,
    )


def _sensitivity_patches(state: QuantState) -> list[np.ndarray]:
    """Held-out LR patches of the calibration images (other crops than calibration's), as model inputs."""
    if not isinstance(state.calib, (str, os.PathLike)):
        return []
    from etc.quant.calib import to_nchw
    from etc.quant.summary import heldout_pairs

    config = state.config
    pairs = heldout_pairs(state.calib, state.report.scale, num=8, patch=config.patch, seed=config.seed + 2000)
    return [to_nchw(p.lr) for p in pairs]


def _heldout_step(state: QuantState) -> None:
    """Held-out (LR, HR) patches of the calibration images, the crops ``etc quantize``'s summary measures on."""
    from etc.quant.summary import heldout_pairs

    config = state.config
    state.heldout = heldout_pairs(
        state.calib, state.report.scale, num=HELDOUT, patch=config.patch, seed=config.seed + 1000
    )
    state.report.heldout_patches = len(state.heldout)


def _fp32_psnrs(state: QuantState) -> list[float]:
    """The FP32 model's PSNR-Y on each held-out patch, run once and kept for every drop measured against it."""
    from etc.quant.summary import heldout_psnrs

    assert state.source is not None
    if state.heldout_refs is None:
        state.heldout_refs = heldout_psnrs(state.source, state.heldout, state.report.scale)
    return state.heldout_refs


def _drop(state: QuantState, qmodel: onnx.ModelProto) -> float:
    """The held-out PSNR-Y drop of ``qmodel``: mean over the patches (:func:`etc.quant.summary.psnr_drop`)."""
    from etc.quant.summary import heldout_psnr

    return float(np.mean(_fp32_psnrs(state))) - heldout_psnr(qmodel, state.heldout, state.report.scale)


def _median_drop(state: QuantState, qmodel: onnx.ModelProto) -> float:
    """The median over the held-out patches of each patch's PSNR-Y drop (what a16='auto' bounds by max_drop)."""
    from etc.quant import a16
    from etc.quant.summary import heldout_psnrs

    return a16.median_drop(_fp32_psnrs(state), heldout_psnrs(qmodel, state.heldout, state.report.scale))


def _qdq(state: QuantState, wide: frozenset[str] = frozenset()) -> onnx.ModelProto:
    assert state.plan is not None
    build = {**state.build, "wide": wide, "rounding_shift": state.rounding_shift}
    return qdq.build_qdq(state.model, state.plan, _ranges_for(state, wide), **build)


def floor_model(state: QuantState) -> onnx.ModelProto:
    """The floor: uint8 activations (the state's ranges) with the float weights of the model they came from."""
    assert state.plan is not None and state.float_model is not None
    return qdq.build_qdq(
        state.float_model, state.plan, state.narrow_ranges or state.ranges, float_weights=True
    )


def _floor_step(state: QuantState) -> None:
    """The floor (:func:`floor_model`) and the pure 8-bit model, both measured on the held-out patches."""
    _stage(state.progress, "measuring the uint8 floor", None)
    floor = floor_model(state)
    try:
        state.report.floor_drop = _drop(state, floor)
        state.report.a8_drop = state.report.heldout_drop = _drop(state, _qdq(state))
    except BadModelError as exc:  # e.g. a model whose output is not an image of the patches' size
        state.report.floor_drop = state.report.a8_drop = state.report.heldout_drop = None
        state.report.floor_error = str(exc).splitlines()[0][:200]


def _a16_step(state: QuantState) -> None:
    """Which activations are carried in 16 bits (:mod:`etc.quant.a16`): named, all, or chosen by ``auto``."""
    from etc.quant import a16

    config, report, plan = state.config, state.report, state.plan
    assert plan is not None
    mode, _ = a16.parse(config.a16)
    if mode != "auto":
        report.a16 = a16.describe(state.model, plan, mode, state.wide)
    else:
        state.wide = frozenset()
        if not state.heldout:
            raise BadModelError(
                "--a16 auto measures the held-out PSNR drop: it needs calibration images with their HR "
                "(a folder, a dataset name or 'samples'), not arrays"
            )
        if report.a8_drop is None:
            report.a8_drop = _drop(state, _qdq(state))
        _auto_widths(state)
    if mode != "auto" and state.heldout and state.wide:
        report.heldout_drop = _drop(state, _qdq(state, state.wide))
    if config.a16_cost == "htp":
        _htp_figures(state)


def _auto_widths(state: QuantState) -> None:
    """a16='auto': the regions chosen by :func:`etc.quant.a16.choose` on the median held-out drop, within the
    cycle budget and the 16-bit share; the report gets the choice, its median drop and cost, and the mean
    held-out drop of the model written (``heldout_drop``, as for every other model)."""
    from etc.quant import a16

    config, report, plan = state.config, state.report, state.plan
    assert plan is not None
    if config.a16_cost == "htp":
        measured = a16.htp_cost(lambda wide: _qdq(state, wide))
    else:
        measured = lambda wide: a16.estimated_cost(state.model, plan, wide)  # noqa: E731
    cost = functools.lru_cache(maxsize=None)(measured)
    fits = a16.within(state.model, plan, cost, config.a16_budget, config.a16_max_share)
    _stage(state.progress, f"choosing 16-bit regions (median drop <= {config.max_drop} dB)", None)
    base = _median_drop(state, _qdq(state))
    chosen, steps, reached, drop = a16.choose(
        a16.candidates(plan),
        lambda wide: _median_drop(state, _qdq(state, wide)),
        cost,
        config.max_drop,
        base,
        state.progress,
        fits,
    )
    report.a16 = choice = a16.describe(state.model, plan, "auto", chosen)
    choice.steps, choice.reached, choice.cost_source, choice.drop = steps, reached, config.a16_cost, drop
    choice.budget, choice.max_share = config.a16_budget, config.a16_max_share
    choice.cost = cost(chosen) if chosen else 0.0
    report.heldout_drop = report.a8_drop
    if chosen:
        _refit_for_widths(state, chosen)
        choice.reached = choice.drop <= config.max_drop
        report.heldout_drop = _drop(state, _qdq(state, state.wide))


def _refit_for_widths(state: QuantState, chosen: frozenset[str]) -> None:
    """The weights rounded and bias-corrected again with ``chosen`` in 16 bits (auto ranked the regions with the
    8-bit model's weights, fitted to 8-bit inputs); kept when the median held-out drop is lower."""
    choice = state.report.a16
    before = (state.model, dict(state.grids), state.wide)
    state.wide, state.grids = chosen, {}
    state.set_model(state.float_model)
    if state.config.rounding != "nearest":
        _rounding_step(state)
    if state.config.bias_correction:
        _bias_correction_step(state)
    drop = _median_drop(state, _qdq(state, chosen))
    choice.refit_drop = drop
    if choice.drop is None or drop < choice.drop:
        choice.drop = drop
        choice.refit = True
    else:
        state.model, state.grids, _ = before
        state.wide = chosen


def _htp_figures(state: QuantState) -> None:
    """HTP cycles (32x32) of the pure 8-bit, the mixed and the all-16-bit models, and the held-out drop on HTP."""
    from etc import htp
    from etc.quant import a16

    assert state.plan is not None
    _stage(state.progress, "HTP cycles and drops", None)
    everything = a16.resolve(state.model, state.plan, "all")
    models = {"a8": _qdq(state), "mixed": _qdq(state, state.wide), "all": _qdq(state, everything)}
    for name, model in models.items():
        state.report.a16_cycles[name] = htp.median_cycles(model, size=(32, 32), runs=3)
    if state.heldout and state.source is not None:
        for name in ("a8", "mixed"):
            state.report.a16_htp_drop[name] = a16.htp_drop(
                state.source, models[name], state.heldout, state.report.scale
            )


@dataclass
class Alternative:
    """Another way to quantize a PReLU model: its option, held-out drop (None: not measured), MACs ratio and
    estimated HTP INT8 cycles ratio (etc.cost.htp_int8_cycles; None: not estimated) to the model quantized."""

    option: str
    drop: float | None
    macs_ratio: float
    note: str = ""
    htp_ratio: float | None = None


def _has_prelu(state: QuantState) -> bool:
    return any(n.op_type in PRELU_OPS for n in state.model.graph.node)


def _alternatives_step(state: QuantState) -> None:
    """A model whose PReLUs were kept: the doubling (``prelu_to_relu``) quantized with the same options and
    measured on the same held-out patches, and what ``a16='auto'`` did or would do."""
    config, report = state.config, state.report
    assert state.source is not None
    report.prelus = sum(n.op_type in PRELU_OPS for n in state.model.graph.node)
    _stage(state.progress, "measuring the PReLU -> ReLU alternative", None)
    other = dataclasses.replace(config, prelu_to_relu=True, a16="none", floor=False, sensitivity=False)
    doubled, _ = quantize_with_config(state.source, state.calib, other)
    base = max(conv_macs_per_pixel(state.source), 1)
    report.alternatives.append(
        Alternative(
            "--prelu-relu",
            _drop(state, doubled),
            conv_macs_per_pixel(doubled) / base,
            "PReLU -> ReLU on doubled channels, pure 8-bit",
            _htp_ratio(doubled, _qdq(state)),
        )
    )
    if config.a16.strip() == "auto":
        report.alternatives.append(
            Alternative(
                "--a16 auto", report.heldout_drop, 1.0, "this model: PReLU kept, 16-bit where it pays"
            )
        )
    else:
        report.alternatives.append(
            Alternative(
                "--a16 auto", None, 1.0, f"PReLU kept, inputs in 16 bits to reach {config.max_drop} dB"
            )
        )


def _htp_ratio(model: onnx.ModelProto, reference: onnx.ModelProto) -> float | None:
    """Estimated HTP INT8 cycles of ``model`` over ``reference``'s at 64x64 (etc.cost.htp_int8_cycles): on HTP a
    kept PReLU runs in float between a DequantizeLinear and a QuantizeLinear, which MACs do not show."""
    from etc.cost import model_cost

    ours, theirs = model_cost(model, (64, 64)).htp_cycles, model_cost(reference, (64, 64)).htp_cycles
    return ours / theirs if ours and theirs else None


def _write_step(state: QuantState) -> None:
    from etc.errors import EtcError
    from etc.quant import kernels as targets

    assert state.plan is not None
    _stage(state.progress, "building the QDQ model", None)
    qmodel = _qdq(state, state.wide)
    errors = qdq.conv_width_errors(qmodel)
    if errors:
        raise EtcError("; ".join(errors))
    targets.record(qmodel, state.target, state.config.target)
    ops: dict[str, int] = {}
    for node in qmodel.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    state.report.ops, state.qmodel = ops, qmodel


STEPS: tuple[QuantStep, ...] = (
    QuantStep("prelu", _relu_form_step, lambda s: s.config.prelu_to_relu),
    QuantStep("prepare", _prepare_step),
    QuantStep("calibrate", _calibrate_step),
    QuantStep("split", _split_step, lambda s: s.config.split_budget is not None or s.config.split > 1),
    QuantStep("equalize", _equalize_step, lambda s: s.config.equalize),
    QuantStep("stagger", _stagger_step, lambda s: s.config.stagger > 0 and _has_copies(s)),
    QuantStep("ranges", _ranges_step),
    QuantStep("rounding", _rounding_step, lambda s: s.config.rounding != "nearest"),
    QuantStep("bias correction", _bias_correction_step, lambda s: s.config.bias_correction),
    QuantStep("range search", _range_search_step, lambda s: s.config.range_search),
    QuantStep("finetune", _finetune_step, lambda s: s.config.finetune_steps > 0 and bool(s.grids)),
    QuantStep(
        "sensitivity", _sensitivity_step, lambda s: s.config.sensitivity and bool(s.plan and s.plan.convs)
    ),
    QuantStep("heldout", _heldout_step, lambda s: _wants_heldout(s)),
    QuantStep("floor", _floor_step, lambda s: s.config.floor and bool(s.heldout)),
    QuantStep("a16", _a16_step, lambda s: s.config.a16.strip() != "none"),
    QuantStep(
        "alternatives",
        _alternatives_step,
        lambda s: not s.config.prelu_to_relu and s.config.floor and bool(s.heldout) and _has_prelu(s),
    ),
    QuantStep("write", _write_step),
)
HELDOUT = 8  # held-out patches of the floor and of a16='auto' (the summary of `etc quantize` takes as many)


def _wants_heldout(state: QuantState) -> bool:
    """Held-out patches are cut when something measures on them and the calibration is a dataset spec."""
    needed = state.config.floor or state.config.a16.strip() != "none"
    return needed and isinstance(state.calib, (str, os.PathLike))


def run_steps(state: QuantState, steps: Sequence[QuantStep] = STEPS) -> QuantState:
    """Runs ``steps`` in order on ``state``, each timed into ``state.report.steps``."""
    for step in steps:
        if not step.wanted(state):
            state.report.steps.append(StepTime(step.name, False, 0.0))
            continue
        started = time.perf_counter()
        step.run(state)
        state.report.steps.append(StepTime(step.name, True, time.perf_counter() - started))
    return state


# ---------------------------------------------------------------- main entry


def quantize(
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
    prelu_to_relu: bool = False,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
    exclude: tuple[str, ...] = (),
    sensitivity: bool = False,
    a16: str = "none",
    max_drop: float = 0.05,
    a16_budget: float = 1.25,
    a16_max_share: float = 0.25,
    a16_cost: str = "estimate",
    floor: bool = True,
    config: QuantConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[onnx.ModelProto, QuantReport]:
    """Quantizes a float model to INT8 QDQ and returns ``(model, report)``, like ``etc.optimize``.

    ``model_or_path`` is an ``onnx.ModelProto`` or a path; ``calib`` a dataset spec (a folder, a name under
    $ETC_DATA, or "samples", the photos bundled with scikit-image) or a list of (1, 3, h, w) float arrays. The
    options below are the fields of :class:`etc.quant.config.QuantConfig` (the command line's options); pass
    them as keywords or as one ``config``, not both. ``progress`` is called with the number of steps done; when it
    also has a ``stage(name, total)`` method it is told when each stage starts and how many steps it has
    (etc.commands.progress.StageProgress). The report (:class:`QuantReport`) holds the ranges and how each was chosen, what equalization,
    splitting and rounding did, the ops written and every step's time. Raises BadModelError on a bad option,
    EquivalenceError when an exact rewrite changed the FP32 outputs.

    Options (name=default: meaning; generated from QuantConfig):
    """
    given = {k: v for k, v in locals().items() if k in _CONFIG_FIELDS}
    changed = sorted(k for k, v in given.items() if v != _CONFIG_DEFAULTS[k])
    if config is None:
        config = QuantConfig(**given)
    elif changed:
        raise TypeError(f"quantize: pass {', '.join(changed)} inside config, not beside it")
    return quantize_with_config(model_or_path, calib, config, progress)


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(QuantConfig)}
_CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(QuantConfig)}
quantize.__doc__ = (quantize.__doc__ or "").rstrip() + "\n" + QuantConfig.docs() + "\n"
quantize_with_report = quantize  # the earlier name of the same function


def quantize_with_config(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    calib: str | os.PathLike | Sequence[np.ndarray],
    config: QuantConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[onnx.ModelProto, QuantReport]:
    """``quantize`` with its options in one QuantConfig: checks them, then runs :data:`STEPS`."""
    state = quantize_state(model_or_path, calib, config, progress)
    assert state.qmodel is not None
    return state.qmodel, state.report


def quantize_state(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    calib: str | os.PathLike | Sequence[np.ndarray],
    config: QuantConfig,
    progress: Callable[[int], None] | None = None,
) -> QuantState:
    """:func:`quantize_with_config` returning the whole state: the plan, ranges, float model and held-out
    patches besides the written model, for callers that build variants (e.g. the floor model, other widths)."""
    from etc.frontends.onnx_io import as_model
    from etc.quant import kernels as targets

    resolved = targets.resolve(config.target)
    config.validate()
    safe_u8s8 = targets.safe_mode(resolved) if config.safe_u8s8 is None else config.safe_u8s8
    model = as_model(model_or_path)
    report = QuantReport(
        config.scale or 0, "", 0, config.method, rounding=config.rounding, target=resolved, config=config
    )
    state = QuantState(
        config,
        calib,
        model,
        report,
        resolved,
        safe_u8s8,
        progress,
        base_macs=conv_macs_per_pixel(model),
        source=model,
    )
    return run_steps(state)


PRELU_OPS = ("PRelu", "LeakyRelu")
# Equalization's weight of activation noise against weight noise (etc.quant.equalize.estimated_noise): with
# channel copies the weight side is cheap (16); without them 6 (the comparison on the trained models is in
# bench/RESULTS.md, "Quantizer design measurements").
ACT_WEIGHT_WITH_COPIES = 16.0
ACT_WEIGHT_NO_COPIES = 6.0


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
