"""Mixed 8/16-bit activations (A16W8 where it pays): regions, hand-picked sets and the ``auto`` choice.

NPUs such as Qualcomm's HTP run convolutions on 16-bit activations with 8-bit weights natively. Two facts of HTP
shape the choice (docs/GUIDE section 7):

* a conv's input and output have the same width: a node that writes or reads a 16-bit tensor runs in 16 bits;
* a change of width is a DequantizeLinear -> QuantizeLinear pair between two nodes, which QNN runs as a Convert.

So carrying one tensor ``t`` in 16 bits makes a *region*: the node writing ``t`` runs in 16 bits (its input is
converted up when stored in 8 bits; on [0, 1] images that is exact), the nodes reading ``t`` run in 16 bits and
write 16-bit tensors (converted down for their 8-bit readers), and data-movement nodes (DepthToSpace, Reshape, ...)
keep their input's width. :func:`regions` lists one region per candidate tensor with what it stores in 16 bits
and the Converts it needs (``etc.quant.qdq.plan_widths``); any union of regions is HTP-legal.
:func:`resolve` turns ``--a16`` into the set of tensors (``none``, ``all``, names) and refuses names that are not
a region with the reason; :func:`choose` is ``--a16 auto``: one region at a time, the one that removes the most
held-out PSNR drop per cost added next to those already chosen (re-ranked after each), until the drop is at most
``max_drop``; then each chosen region is removed again if the drop stays within ``max_drop`` without it.

Held-out measure: ``auto`` judges a set of regions by the median over the held-out crops of each crop's PSNR-Y
drop (:func:`median_drop`). The mean is what evaluation reports on photos of similar quality, but calibration sets
hold near-flat images (a retina scan at 54 dB FP32 PSNR, the moon) where a fraction of a grey level of noise costs
dB: on ETDS M4C32 x2 one such crop lost 2.7 dB, the mean of the eight 0.42 dB and the median 0.067, against a
mean of 0.076 dB on the five evaluation photos. The median follows the evaluation photos; the mean made ``auto``
buy 16 bits for the outliers.

Costs, as a fraction of the pure 8-bit model's cycles added: HTP cycles of the mixed model over the pure 8-bit one
(``a16_cost="htp"``, onnxruntime-qnn's simulator at 32x32), or this module's estimate (``"estimate"``), taken
against the conv MACs of the 8-bit model. The estimate's prices are HTP's, per node, measured on ETDS M4C32 x2 at
64x64 (onnxruntime-qnn's simulator; bench/RESULTS.md, a16): a conv on 16-bit activations costs ``A16_EXTRA`` more
per MAC (about 2.4x the 8-bit conv), a Convert ``CONVERT_COST`` MAC-equivalents per element and a graph output
stored in 16 bits ``OUTPUT_COST`` per element (HTP writes a 16-bit output through a slow path: 12e6 cycles for
one 1x3x128x128 output, as much as two of the model's convs). ``budget`` caps the estimated (or measured) cycles
over the 8-bit model and ``max_share`` the share of activation tensors stored in 16 bits; a region that would
break either is not taken, and the report says whether ``max_drop`` was reached within them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from etc.errors import BadModelError
from etc.quant import qdq

A16_EXTRA = 1.4  # extra cost per MAC of a conv on 16-bit activations (A16W8 / A8W8 - 1, HTP per node)
CONVERT_COST = 5.0  # MAC-equivalents per element of a Convert (HTP per node)
OUTPUT_COST = 1000.0  # MAC-equivalents per element of a graph output stored in 16 bits (HTP per node)
MIN_GAIN = 0.005  # dB: a region removing less held-out drop than this is not taken (below what 8 crops rank)
KEYWORDS = ("none", "all", "auto")
COSTS = ("estimate", "htp")


@dataclass
class Region:
    """What carrying ``tensor`` in 16 bits takes on HTP: the tensors stored in 16 bits (``tensor``, the outputs of
    its readers, data-movement outputs that share their quantization), the nodes run in 16 bits and the Converts
    (tensor, width) at its border."""

    tensor: str
    wide: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    converts: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class A16Step:
    """One region added by ``auto``: the drop it removed alone, its cost, and the drop before and after adding it."""

    tensor: str
    alone: float  # drop with only this region in 16 bits
    cost: float
    before: float
    after: float
    kept: bool = True  # False: the reverse pass removed it (the drop stayed within max_drop without it)


@dataclass
class A16Choice:
    """The outcome of --a16: the chosen tensors, what they store in 16 bits, the Converts and (auto) the steps."""

    mode: str
    tensors: list[str] = field(default_factory=list)
    wide: list[str] = field(default_factory=list)
    converts: list[tuple[str, int]] = field(default_factory=list)
    candidates: int = 0  # quantized activation tensors of the model
    steps: list[A16Step] = field(default_factory=list)
    cost_source: str = ""
    reached: bool = True  # auto: whether the drop got to max_drop
    refit: bool = False  # auto: weights refitted with the chosen widths (kept when it lowered the drop)
    refit_drop: float | None = None  # auto: the held-out drop after that refit
    drop: float | None = None  # auto: the median held-out drop of the chosen widths (what max_drop bounds)
    cost: float | None = None  # auto: the cycles added, a fraction of the 8-bit model's (cost_source)
    budget: float | None = None  # auto: the most cycles allowed over the 8-bit model's (ratio)
    max_share: float | None = None  # auto: the largest share of activation tensors allowed in 16 bits

    @property
    def share(self) -> float:
        """Share of the quantized activation tensors stored in 16 bits."""
        return len(self.wide) / max(self.candidates, 1)


def candidates(plan: qdq.Plan) -> list[str]:
    """Tensors ``auto`` may carry in 16 bits: those with their own range (graph inputs hold 8-bit images)."""
    return list(plan.own)


def region(model: onnx.ModelProto, plan: qdq.Plan, tensor: str) -> Region:
    widths = qdq.plan_widths(model, plan, frozenset([tensor]))
    nodes = [n for n, b in widths.reads.items() if b == 16]
    return Region(tensor, widths.wide, nodes, widths.converts)


def regions(model: onnx.ModelProto, plan: qdq.Plan) -> list[Region]:
    """One region per tensor that may be named (graph inputs and tensors with their own range)."""
    return [region(model, plan, t) for t in [*plan.inputs, *plan.own]]


def parse(spec: str) -> tuple[str, list[str]]:
    """``--a16`` as (mode, names): ('none'|'all'|'auto', []) or ('names', [NAME, ...])."""
    text = (spec or "none").strip()
    if text in KEYWORDS:
        return text, []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadModelError(f"--a16 '{spec}': give none, all, auto or tensor names separated by commas")
    return "names", names


def resolve(model: onnx.ModelProto, plan: qdq.Plan, spec: str) -> frozenset[str]:
    """The tensors ``spec`` carries in 16 bits (``auto`` is resolved by :func:`choose`, here it gives none).

    Raises BadModelError naming a tensor that is not a region, with the reason: a data-movement output keeps its
    input's width, a Conv's output fused with its Relu is never stored, an unknown name lists the candidates."""
    mode, names = parse(spec)
    if mode == "all":
        return frozenset([*plan.inputs, *plan.own])
    if mode != "names":
        return frozenset()
    allowed = set(plan.inputs) | set(plan.own)
    writers = {o: n for n in model.graph.node for o in n.output}
    chosen = []
    for name in names:
        if name in allowed:
            chosen.append(name)
            continue
        node = writers.get(name)
        if name in plan.tied:
            root = plan.root(name)
            raise BadModelError(
                f"--a16 {name}: {node.op_type if node else 'a node'} '{node.name if node else name}' writes it "
                f"and moves data: its input and output have one width, the width of '{root}'; carrying "
                f"'{name}' alone in 16 bits would give it an 8-bit input and a 16-bit output. Name '{root}' "
                f"(it carries '{name}' with it)"
            )
        if name in plan.fused:
            relu_out = plan.fused[name]
            raise BadModelError(
                f"--a16 {name}: Conv '{node.name if node else name}' and its Relu run as one op whose output "
                f"is '{relu_out}' ('{name}' is never stored); name '{relu_out}'"
            )
        shown = ", ".join([*plan.inputs, *plan.own][:8])
        more = ", ..." if len(allowed) > 8 else ""
        raise BadModelError(
            f"--a16 {name}: no quantized activation tensor is named so (the tensors that may be carried in "
            f"16 bits: {shown}{more}; the range table of `etc quantize` lists them all)"
        )
    return frozenset(chosen)


def describe(model: onnx.ModelProto, plan: qdq.Plan, mode: str, chosen: frozenset[str]) -> A16Choice:
    widths = qdq.plan_widths(model, plan, chosen)
    order = [*plan.inputs, *plan.own]
    return A16Choice(
        mode,
        [t for t in order if t in chosen],
        widths.wide,
        widths.converts,
        candidates=len(plan.inputs) + len(plan.own),
    )


# ---------------------------------------------------------------- costs


def estimated_cost(model: onnx.ModelProto, plan: qdq.Plan, chosen: frozenset[str]) -> float:
    """The cycles ``chosen`` adds as a fraction of the pure 8-bit model's, estimated (module doc: A16_EXTRA per
    16-bit conv MAC, CONVERT_COST per converted element, OUTPUT_COST per element of a 16-bit graph output,
    against one cycle per conv MAC of the 8-bit model), from the shapes at 16x16."""
    channels, macs = _shape_facts(model)
    return added_macs(model, plan, chosen, channels, macs) / max(sum(macs.values()), 1.0)


def added_macs(
    model: onnx.ModelProto,
    plan: qdq.Plan,
    chosen: frozenset[str],
    channels: dict[str, float],
    macs: dict[str, float],
) -> float:
    """MAC-equivalents per input pixel that carrying ``chosen`` in 16 bits adds (see :func:`estimated_cost`)."""
    widths = qdq.plan_widths(model, plan, chosen)
    cost = sum(A16_EXTRA * macs.get(node, 0.0) for node, bits in widths.reads.items() if bits == 16)
    cost += sum(CONVERT_COST * channels.get(tensor, 0.0) for tensor, _ in widths.converts)
    outputs = [o.name for o in model.graph.output if widths.stored.get(o.name) == 16]
    return cost + sum(OUTPUT_COST * channels.get(name, 0.0) for name in outputs)


def _shape_facts(model: onnx.ModelProto) -> tuple[dict[str, float], dict[str, float]]:
    """({tensor: elements per input pixel}, {conv node: MACs per input pixel}) from shapes at 16x16."""
    from etc import runtime

    pinned = runtime.pin_hw(model, (16, 16))
    del pinned.graph.value_info[:]
    for value in pinned.graph.output:
        value.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(pinned, strict_mode=False)
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    pixels = 16.0 * 16.0
    channels = {name: float(np.prod(dims)) / pixels for name, dims in shapes.items()}
    consts = qdq.constants(model)
    macs = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in consts:
            w = consts[node.input[1]]
            out = shapes.get(node.output[0])
            if out is not None:
                macs[node.name] = float(np.prod(out[1:])) * float(np.prod(w.shape[1:])) / pixels
    return channels, macs


def htp_cost(
    build: Callable[[frozenset[str]], onnx.ModelProto], size: tuple[int, int] = (32, 32)
) -> Callable[[frozenset[str]], float]:
    """A cost function: HTP cycles of the model ``build(chosen)`` over those of the pure 8-bit model, minus 1
    (each the per-node floor over 3 runs, the view least disturbed by load)."""
    from etc import htp

    base = max(htp.cycles(build(frozenset()), size=size, runs=3).floor, 1)

    def cost(chosen: frozenset[str]) -> float:
        return htp.cycles(build(chosen), size=size, runs=3).floor / base - 1.0

    return cost


def htp_drop(fp32: onnx.ModelProto, qmodel: onnx.ModelProto, pairs: Sequence, scale: int) -> float:
    """Held-out PSNR-Y drop with ``qmodel`` run on HTP (one session per patch size) and ``fp32`` on
    onnxruntime CPU as the reference, outputs rounded to 8 bits as in :func:`etc.quant.summary.psnr_drop`."""
    from etc import htp
    from etc.quant.calib import to_nchw
    from etc.quant.evaluate import evaluate_fn, evaluate_models
    from etc.quant.metrics import chw_to_hwc, to_uint8

    runner = htp.Runner(qmodel)
    name = qmodel.graph.input[0].name

    def on_htp(lr: np.ndarray) -> np.ndarray:
        out = next(iter(runner({name: to_nchw(lr)}).values()))
        return to_uint8(chw_to_hwc(np.clip(out, 0.0, 1.0)))

    (ref,) = evaluate_models({"fp32": fp32}, pairs, scale, bicubic=False, optimize=False, threads=1)
    got = evaluate_fn("htp", on_htp, pairs, scale)
    return ref.psnr - got.psnr


# ---------------------------------------------------------------- auto


def median_drop(reference: Sequence[float], got: Sequence[float]) -> float:
    """The median over held-out crops of the per-crop PSNR-Y drop (``reference`` minus ``got``, per crop): the
    measure ``auto`` bounds by ``max_drop`` (module doc: the mean follows near-flat outlier crops)."""
    return float(np.median(np.asarray(reference, dtype=np.float64) - np.asarray(got, dtype=np.float64)))


def within(
    model: onnx.ModelProto,
    plan: qdq.Plan,
    cost_of: Callable[[frozenset[str]], float],
    budget: float,
    max_share: float,
) -> Callable[[frozenset[str]], bool]:
    """Whether a set of regions fits: at most ``max_share`` of the quantized activation tensors stored in 16
    bits and at most ``budget`` times the 8-bit model's cycles (``cost_of`` gives the fraction added)."""
    total = max(len(plan.inputs) + len(plan.own), 1)

    def fits(wide: frozenset[str]) -> bool:
        if len(qdq.plan_widths(model, plan, wide).wide) > max_share * total + 1e-9:
            return False
        return 1.0 + cost_of(wide) <= budget + 1e-9

    return fits


def choose(
    tensors: Sequence[str],
    drop_of: Callable[[frozenset[str]], float],
    cost_of: Callable[[frozenset[str]], float],
    max_drop: float,
    base_drop: float,
    progress: Callable[[int], None] | None = None,
    fits: Callable[[frozenset[str]], bool] | None = None,
) -> tuple[frozenset[str], list[A16Step], bool, float]:
    """Greedy with re-ranking: each round measures every remaining region next to the regions chosen so far and
    adds the one that removes the most drop per cost it adds (free gains first), until the drop is at most
    ``max_drop`` or no region lowers it by ``MIN_GAIN`` or more; a region whose union with the chosen ones does
    not ``fit`` (the budget, :func:`within`) is not measured. Then a reverse pass drops every chosen region (latest first) whose
    removal keeps the drop at most ``max_drop``.

    Returns (chosen tensors, the steps taken, whether max_drop was reached, the drop of the chosen tensors); a
    region removed by the reverse pass keeps its step with ``kept`` False."""
    if base_drop <= max_drop:
        return frozenset(), [], True, base_drop
    drops: dict[frozenset[str], float] = {frozenset(): base_drop}
    costs: dict[frozenset[str], float] = {}

    def drop(wide: frozenset[str]) -> float:
        if wide not in drops:
            drops[wide] = drop_of(wide)
            if progress:
                progress(1)
        return drops[wide]

    def cost(wide: frozenset[str]) -> float:
        if wide not in costs:
            costs[wide] = cost_of(wide) if wide else 0.0
        return costs[wide]

    chosen: frozenset[str] = frozenset()
    steps: list[A16Step] = []
    remaining = list(tensors)
    while remaining and drops[chosen] > max_drop:
        now, best = drops[chosen], None
        for t in remaining:
            if fits is not None and not fits(chosen | {t}):
                continue
            gain = now - drop(chosen | {t})
            if gain < MIN_GAIN:
                continue
            added = max(cost(chosen | {t}) - cost(chosen), 1e-9)
            key = (gain / added, gain, t)
            if best is None or key[:2] > best[0][:2]:
                best = (key, t, added)
        if best is None:
            break
        _, t, added = best
        steps.append(A16Step(t, drop(frozenset([t])), added, now, drops[chosen | {t}]))
        chosen = chosen | {t}
        remaining.remove(t)
    reached = drops[chosen] <= max_drop
    if reached:
        for step in reversed(steps[:-1]):
            without = chosen - {step.tensor}
            if drop(without) <= max_drop:
                chosen, step.kept = without, False
    return chosen, steps, reached, drops[chosen]
