"""What a model costs and whether a widening rewrite is worth it.

Exact is necessary, not sufficient: a rewrite is worth doing only if the model gets cheaper. This module

* counts a model's cost at a concrete input size: MACs, parameters, bytes moved, op count, and an estimated time
  on a mobile NPU (:func:`model_cost`);
* keeps the budget that every widening rewrite answers to (:class:`CostBudget`): a rule that adds work (carrying a
  skip, carrying a signed skip as relu(s)/relu(-s), doubling channels for PReLU, concatenating different inputs,
  aligning channels, turning a grouped conv dense) puts a :class:`Widening` in its match, and the rule driver
  (etc.rules.apply_rules) asks :meth:`CostBudget.admit` before rewriting.

Budget: the final model's MACs are at most ``Options.max_growth`` (default 1.25) times those of the model as the
first widening pass sees it, i.e. after the cleanup and merge phases (fold, rep): the best merged form. A widening
beyond that is accepted only when the NPU model says it pays for itself: the Add or Concat it removes moves bytes
worth more MACs than it adds (see :class:`CostBudget`). A grouped or depthwise conv never becomes dense unless
``Options.allow_dense``. Rewrites the user asked for by an option (``--align-channels``, ``--prelu``) are counted
and, if they overrun the budget, accepted with a warning.

NPU time model (``npu``): time = MACs / NPU_MACS_PER_S + bytes moved by non-plain ops / NPU_SLOW_BYTES_PER_S
+ ops x NPU_OP_OVERHEAD_S. Plain ops (Conv, Relu, DepthToSpace) run fused on the MAC array; anything else
(Add, Concat, Tile, Clip, Resize, ...) leaves it and moves its inputs and output through memory. The constants
are fitted to the figures the ETDS paper (CVPR 2023, its tables of mobile latency) reports for a Dimensity 8100
NPU, INT8, 360x640 input: ABPN-M4C28 x3 runs 13.7 ms after ET (10.6 GMACs, plain) -> ~0.8 TMAC/s, and 20.5 ms as
trained (9.2 GMACs plus ~38 MB moved by its anchor Concat, Add and Clip) -> ~4.5 GB/s for the slow path. The
per-op overhead (20 us) is an assumed dispatch cost of the order NPU runtimes document, not a measurement. The
model ranks forms; it does not predict another device's milliseconds. Qualcomm's HTP (etc.htp) prices an Add's
byte far lower (bench/RESULTS.md, "htp: what an Add or Concat byte is worth"), and its INT8 convs cost by output
channels rounded up to 32-channel slices ("htp: what a conv costs"), so a MAC count misjudges a carry there in
both directions: three channels carried through a 16x16 conv add 41% of its MACs but 19% of its HTP cycles (only
its inputs grow), through a 32x32 conv 20% of its MACs but about 120% of its cycles (its outputs spill into a
second slice). With HTP's byte price alone the budget becomes a hard MAC cap, which declines carries HTP runs
cheaply; the paper price stays the default until the budget counts padded MACs. ``--target htp`` measures the
candidate forms on HTP itself.

Chains are judged whole: a carry's first step is judged with the cost of every later step (``Widening.steps``
rewrites are then admitted without a new decision, one more is judged again), and an Add merge whose Concat a
dual-stream merge will dissolve (ETDS's cross-stream Adds, an Add of two streams) is judged together with that
merge, which then continues the decision (``Widening.continues``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from etc.graph import (
    channels_of,
    concat_leaves,
    const_value,
    input_at,
    is_graph_output,
    op_histogram,
    producer,
)
from etc.shapes import static_shapes

PLAIN_OPS = frozenset({"Conv", "Relu", "DepthToSpace"})
MERGE_ACTIVATIONS = (
    "Relu",
    "PRelu",
    "LeakyRelu",
)  # what a merge absorbs after a conv, and a carry rides through
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
NPU_MACS_PER_S = 0.8e12  # INT8 MAC throughput, fitted to ABPN_ET x3 (10.6 GMACs in 13.7 ms)
NPU_SLOW_BYTES_PER_S = 4.5e9  # non-plain ops' memory traffic, fitted to ABPN x3 as trained (20.5 ms)
NPU_OP_OVERHEAD_S = 20e-6  # per-op dispatch (assumed)
NPU_BYTES_PER_ELEMENT = 1  # INT8 activations
REFERENCE_SIZE = (64, 64)  # H x W of dynamic inputs when the budget counts MACs (ratios do not depend on it)


# ---------------------------------------------------------------- counting a model


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    """Multiply-accumulates of a Conv, ConvTranspose, MatMul or Gemm (0 for other ops; None when unknown)."""
    if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
        return 0
    w = shapes.get(node.input[1])
    if not w:
        return None
    if node.op_type == "ConvTranspose":
        x = shapes.get(node.input[0])
        return None if not x or 0 in x else int(np.prod(x)) * int(np.prod(w[1:]))
    out = shapes.get(node.output[0])
    if not out or 0 in out:
        return None
    return int(np.prod(out)) * (int(np.prod(w[1:])) if node.op_type == "Conv" else int(w[0]))


def _elements(shape: list[int] | None) -> int:
    return int(np.prod(shape)) if shape and 0 not in shape else 0


def count_params(model: onnx.ModelProto) -> int:
    """Elements of float initializers and Constant tensors (weights, biases)."""
    total = 0
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
    }
    for init in model.graph.initializer:
        if init.data_type in floats:
            total += int(np.prod(init.dims)) if init.dims else 1
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in floats:
                    total += int(np.prod(attr.t.dims)) if attr.t.dims else 1
    return total


def integer_view(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A QDQ model as the integer model it stands for, and the Q/DQ nodes that were left out.

    QuantizeLinear/DequantizeLinear only mark where tensors are int8 (a runtime fuses them into the integer
    kernels), so counting them as ops would make an INT8 model look less plain and slower than its FP32 source.
    Here a DequantizeLinear of a constant becomes that constant's dequantized float value (same shape, so the
    MACs and parameters stay), and a QuantizeLinear -> DequantizeLinear pair becomes a plain connection. A model
    without Q/DQ nodes is returned as is.
    """
    qdq = {op: n for op, n in op_histogram(model).items() if op in QDQ_OPS}
    if not qdq:
        return model, {}
    inits = {i.name: i for i in model.graph.initializer}
    alias: dict[str, str] = {}
    values: list[onnx.TensorProto] = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            alias[node.output[0]] = node.input[0]
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:
            values.append(onnx.numpy_helper.from_array(_dequantized(node, inits), node.output[0]))
        elif node.op_type == "DequantizeLinear":
            alias[node.output[0]] = node.input[0]

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        kept = out.graph.node.add()
        kept.CopyFrom(node)
        for i, name in enumerate(kept.input):
            kept.input[i] = source(name)
    used = {t for n in out.graph.node for t in n.input}
    for value in out.graph.output:
        value.name = source(value.name)
    keep = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend([*keep, *(v for v in values if v.name in used)])
    del out.graph.value_info[:]
    return out, qdq


def _dequantized(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """(q - zero point) * scale of a DequantizeLinear of constants, per tensor or along its ``axis``."""
    q = onnx.numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zero = (
        onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        if len(node.input) > 2 and node.input[2] in inits
        else np.zeros_like(scale)
    )
    if scale.ndim == 1 and scale.size > 1 and q.ndim > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


@dataclass
class ModelCost:
    """A model's cost at one input size (``bytes_moved``: activations read and written by every op, in the
    target's element size, plus weights once)."""

    size: tuple[int, int]
    macs: int | None
    params: int
    bytes_moved: int | None
    ops: int
    npu_ms: float | None
    cpu_ms: float | None = None  # measured (etc optimize --target cpu), not estimated
    htp_cycles: float | None = None  # estimated INT8 cycles on Qualcomm's HTP (:func:`htp_int8_cycles`)

    def as_dict(self) -> dict:
        return asdict(self)


def model_cost(model: onnx.ModelProto, size: tuple[int, int] = (360, 640)) -> ModelCost:
    """MACs, params, bytes moved and the estimated NPU time of ``model`` for an H x W = ``size`` input; a QDQ
    model is costed as the integer model it is (:func:`integer_view`: its Q/DQ nodes are not ops)."""
    integer_prelus = htp_integer_prelus(model)
    model, _ = integer_view(model)
    params = count_params(model)
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    shapes = static_shapes(model, size)
    if shapes is None:
        return ModelCost(size, None, params, None, len(nodes), None)
    macs: int | None = 0
    moved, slow = 0, 0
    weights = {i.name for i in model.graph.initializer}
    for node in nodes:
        m = node_macs(node, shapes)
        macs = None if m is None or macs is None else macs + m
        acts = sum(_elements(shapes.get(t)) for t in [*node.input[:1], *node.output] if t)
        if node.op_type not in PLAIN_OPS:
            acts += sum(_elements(shapes.get(t)) for t in node.input[1:] if t and t not in weights)
            slow += acts
        moved += acts
    moved = moved * NPU_BYTES_PER_ELEMENT + params * NPU_BYTES_PER_ELEMENT
    npu = None
    if macs is not None:
        seconds = macs / NPU_MACS_PER_S + slow * NPU_BYTES_PER_ELEMENT / NPU_SLOW_BYTES_PER_S
        npu = 1000 * (seconds + len(nodes) * NPU_OP_OVERHEAD_S)
    htp = htp_int8_cycles(htp_features(model, shapes, integer_prelus)) if macs is not None else None
    return ModelCost(size, macs, params, moved, len(nodes), npu, htp_cycles=htp)


# ---------------------------------------------------------------- HTP's INT8 cycles, estimated

HTP_LANES = 32  # HTP keeps INT8 activations in 32-channel depth slices: a conv costs by its padded outputs
HTP_FLOAT_OPS = frozenset({"PRelu", "Tanh", "Sigmoid", "Erf", "Softmax", "HardSigmoid", "HardSwish", "Gelu"})
# Cycles per unit, fitted by bench.bench_htp_conv (section "htp: an INT8 estimate" of bench/RESULTS.md) on the
# INT8 forms of ETDS M4C32 x2, ABPN M4C28 x3 and FSRCNN x3, the other seed models held out.
HTP_CYCLES = {
    "padded_macs": 0.39,  # a conv with a fused ReLU (or none), per MAC with C_out rounded up to HTP_LANES
    "unfused_macs": 1.0,  # a conv whose output goes to an op HTP runs in float
    "io": 76.0,  # per element of the graph's inputs and outputs (quantize, layout change)
    "depth_to_space": 116.0,  # per output element
    "float_op": 1630.0,  # per output element of PReLU/Tanh/...: DequantizeLinear -> float op -> QuantizeLinear
}


def htp_integer_prelus(model: onnx.ModelProto) -> frozenset[str]:
    """Outputs of the PReLUs HTP runs in its integer path: a slope that is the DequantizeLinear of a uint8
    initializer on one per-tensor grid (the form ``etc quantize --target htp`` writes); any other slope leaves
    the PReLU in float between a DequantizeLinear and a QuantizeLinear."""
    inits = {i.name: i for i in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    found = set()
    for node in model.graph.node:
        dq = made.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        scale = inits.get(dq.input[1]) if len(dq.input) > 1 else None
        if inits[dq.input[0]].data_type == onnx.TensorProto.UINT8 and scale is not None and not scale.dims:
            found.add(node.output[0])
    return frozenset(found)


def htp_features(
    model: onnx.ModelProto, shapes: dict[str, list[int]], integer_prelus: frozenset[str] = frozenset()
) -> dict[str, float]:
    """What the HTP estimate counts in ``model`` (the integer view of a QDQ model) at the sizes ``shapes``;
    ``integer_prelus`` (:func:`htp_integer_prelus` of the QDQ model) run fused, not in float."""
    floating = {
        n.output[0]
        for n in model.graph.node
        if n.op_type in HTP_FLOAT_OPS and n.output[0] not in integer_prelus
    }
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.output[0] if node.output else "")
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    out = dict.fromkeys(HTP_CYCLES, 0.0)
    for node in model.graph.node:
        elements = _elements(shapes.get(node.output[0])) if node.output else 0
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = inits.get(node.input[1]) or shapes.get(node.input[1])  # computed weights have shapes too
            shape = shapes.get(node.output[0] if node.op_type == "Conv" else node.input[0])
            if not weight or len(weight) != 4 or not shape:
                continue
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if node.op_type == "Conv":  # (C_out, C_in / group, kh, kw), per output pixel
                cin, cout = weight[1] * group, weight[0]
            else:  # (C_in, C_out / group, kh, kw), per input pixel
                cin, cout = weight[0], weight[1] * group
            taps = math.prod(weight[2:])
            padded = math.prod(shape[2:]) * taps * cin * HTP_LANES * math.ceil(cout / HTP_LANES) // group
            fused = not any(r in floating for r in readers.get(node.output[0], []))
            out["padded_macs" if fused else "unfused_macs"] += padded
        elif node.op_type == "DepthToSpace":
            out["depth_to_space"] += elements
        elif node.output and node.output[0] in floating:
            out["float_op"] += elements
    ends = [*model.graph.input, *model.graph.output]
    out["io"] = float(sum(_elements(shapes.get(v.name)) for v in ends))
    return out


def htp_int8_cycles(features: dict[str, float]) -> float:
    """Estimated HTP cycles of the INT8 model with these :func:`htp_features`."""
    return float(sum(HTP_CYCLES[k] * v for k, v in features.items()))


def conv_macs(model: onnx.ModelProto, size: tuple[int, int]) -> tuple[int, dict[str, int]]:
    """(MACs, output pixels per tensor) at ``size``; convs of unknown shape count at the input's pixels."""
    shapes = static_shapes(model, size) or {}
    pixels = {name: int(np.prod(s[2:])) for name, s in shapes.items() if len(s) == 4 and 0 not in s[2:]}
    default = size[0] * size[1]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        m = node_macs(node, shapes)
        if m is None and node.op_type == "Conv" and node.input[1] in weights:
            m = int(np.prod(weights[node.input[1]][1:])) * weights[node.input[1]][0] * default
        macs += m or 0
    return macs, pixels


def conv_macs_per_pixel(model: onnx.ModelProto) -> int:
    """Multiply-accumulates per output pixel of all Convs (stride-1 nets): their weights' elements, read through
    a DequantizeLinear in a QDQ model. Needs no shapes, so it compares a float model with its INT8 form."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    inferred: dict[str, list[int]] | None = None
    total = 0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        name = node.input[1]
        source = producers.get(name)
        if name not in inits and source is not None and source.op_type == "DequantizeLinear":
            name = source.input[0]
        elif name not in inits and source is not None and source.op_type == "Constant":
            inits[name] = next((list(a.t.dims) for a in source.attribute if a.name == "value"), [])
        if name not in inits:  # a weight the graph computes (a training-time re-parameterized block)
            if inferred is None:
                inferred = static_shapes(model, REFERENCE_SIZE) or {}
            inits[name] = list(inferred.get(name, []))
        if inits[name] and 0 not in inits[name]:
            total += int(np.prod(inits[name]))
    return total


MACS_PER_SLOW_BYTE = NPU_MACS_PER_S / NPU_SLOW_BYTES_PER_S  # what one byte through the NPU's slow path costs


# ---------------------------------------------------------------- the budget

BASELINE_KEY = "etc.cost.merged_macs"


def recorded_baseline(model: onnx.ModelProto, size: tuple[int, int]) -> int | None:
    """The merged form's MACs an earlier run recorded in ``model`` (see :meth:`CostBudget.record`), if any."""
    for prop in model.metadata_props:
        if prop.key == BASELINE_KEY:
            macs, _, where = prop.value.partition("@")
            if where == f"{size[0]}x{size[1]}" and macs.isdigit():
                return int(macs)
    return None


@dataclass
class Widening:
    """What a widening rewrite adds, declared by the rule in ``Match.widening``.

    ``terms`` are (weight elements added, a tensor at the resolution those weights run at); ``removes`` are
    (activation elements per pixel that a non-plain op the rewrite removes reads and writes, a tensor at its
    resolution), its NPU credit; ``seeds`` name the tensors a carry chain rides on (a chain is judged once, at its
    first step, with its whole estimated cost, which ``chain`` computes on demand); ``asked`` marks rewrites the user asked for by an option, which
    are never declined for MACs.
    """

    what: str
    terms: list[tuple[int, object]] = field(default_factory=list)
    densifies: bool = False
    seeds: tuple[str, ...] = ()
    asked: bool = False
    removes: list[tuple[int, object]] = field(default_factory=list)
    chain: Callable[[], Widening] | None = field(default=None, repr=False, compare=False)
    # later rewrites of the chain this decision covers (carry steps, or the merge that ends it)
    steps: int = 0
    continues: tuple[str, ...] = ()  # seeds of an admitted chain whose last step this rewrite can be

    def judged(self) -> Widening:
        """This widening with its whole carry chain's cost (``chain``, walked only when a budget judges a chain
        it has not judged yet: each later step of an admitted chain skips the walk)."""
        return self.chain() if self.chain is not None else self


@dataclass
class Decision:
    """One cost decision, for --explain and the reports."""

    rule: str
    node: str
    what: str
    added: float  # added MACs / the merged form's MACs
    total: float  # the model's MACs after the rewrite / the merged form's
    accepted: bool
    reason: str  # why it was declined, or why it was accepted over the budget (empty: within the budget)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BudgetReport:
    """The cost budget of one run, as ``OptimizeReport.budget`` gives it: the limit, the merged form's MACs and
    the result's (counted at ``size``; the ratios are MAC ratios), and every widening decision in order."""

    max_growth: float
    size: tuple[int, int]
    merged_macs: int
    final_macs: int | None
    growth: float | None  # final_macs / merged_macs
    decisions: list[Decision]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["size"] = list(self.size)
        return out


class CostBudget:
    """Tracks the model's MACs against ``max_growth`` x the merged form's and admits widening rewrites.

    A widening within the MAC budget is accepted. One beyond it is accepted only when it pays for itself on the
    NPU model: the non-plain ops it removes (an Add or Concat it merges away, priced at MACS_PER_SLOW_BYTE per
    byte moved) cost at least the MACs it adds. That keeps ETDS/ABPN/ECBSR's image carry (ECBSR_M4C16's official
    plain form has 1.37x the MACs of its merged form and is faster on the NPU model) and declines a signed skip
    carried as relu(s)/relu(-s) through wide layers, whose doubled rows cost far more than the Add they remove.
    """

    def __init__(self, model: onnx.ModelProto, options) -> None:
        from etc.runtime import input_specs

        self.options = options
        self.max_growth = float(options.max_growth)
        specs = input_specs(model)
        dims = specs[0].shape if specs else []
        static = len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:])
        self.size = (int(dims[2]), int(dims[3])) if static else REFERENCE_SIZE
        self.baseline, self.pixels = conv_macs(model, self.size)
        self.current = self.baseline
        self.start = self.current  # the MACs this run began widening from
        recorded = recorded_baseline(model, self.size)
        if recorded is not None:  # the model is an earlier result: judge against the form it was merged from
            self.baseline = recorded
        self.steps_left: dict[str, int] = {}  # seed of an admitted chain -> later steps it may still take
        self.decisions: list[Decision] = []
        self.final: int | None = None
        self.asked_over: set[str] = set()  # rules asked for by an option that went over the budget

    def refresh(self, model: onnx.ModelProto) -> None:
        """Recounts the model as a widening pass is about to see it (undeclared rewrites are counted here)."""
        self.current, self.pixels = conv_macs(model, self.size)

    def pixels_of(self, tensor) -> int:
        """Output pixels of a tensor at the reference size, walking up to a tensor of known size."""
        for _ in range(64):
            if tensor.name in self.pixels:
                return self.pixels[tensor.name]
            node = producer(tensor)
            if node is None or not node.inputs or node.op in ("DepthToSpace", "Resize", "SpaceToDepth"):
                break
            tensor = node.inputs[0]
        return self.size[0] * self.size[1]

    def added_macs(self, widening: Widening) -> int:
        return int(sum(count * self.pixels_of(t) for count, t in widening.terms))

    def credit_macs(self, widening: Widening) -> int:
        moved = sum(count * self.pixels_of(t) for count, t in widening.removes)
        return int(moved * NPU_BYTES_PER_ELEMENT * MACS_PER_SLOW_BYTE)

    def ratio(self, macs: float) -> float:
        return macs / self.baseline if self.baseline else 0.0

    def admit(self, widening: Widening, rule: str, node: str) -> str | None:
        """None when the rewrite may go ahead, else the reason it is declined (with the figure)."""
        if self._continues_chain(widening):
            return None  # the next step of a chain already judged as a whole
        widening = widening.judged()
        added = self.added_macs(widening)
        after = self.current + added
        over = added > 0 and after > self.max_growth * self.baseline
        credit = self.credit_macs(widening)
        figure = f"{widening.what} would add {self.ratio(added):.2f}x MACs (to {self.ratio(after):.2f}x the merged form)"
        reason = ""
        if widening.densifies and not self.options.allow_dense:
            reason = f"{figure} and make grouped/depthwise convs dense; --allow-dense permits it"
        elif added > 0 and not widening.asked and not getattr(self.options, "widen", True):
            reason = f"{figure}; widening is off"
        elif over and not widening.asked and credit < added:
            saves = f"; the ops it removes save only {self.ratio(credit):.2f}x on the NPU" if credit else ""
            reason = f"{figure}, over the {self.max_growth:g}x budget (--max-growth){saves}"
        accepted = not reason
        if accepted:
            self.current = after
            self.steps_left.update(dict.fromkeys(widening.seeds, widening.steps))
            if over and widening.asked:
                self.asked_over.add(rule)
            if over:
                reason = self._why_over(figure, widening.asked, credit)
        self._record(
            Decision(rule, node, widening.what, self.ratio(added), self.ratio(after), accepted, reason)
        )
        return None if accepted else reason

    def _continues_chain(self, widening: Widening) -> bool:
        """Whether ``widening`` is a later step of a chain admitted as a whole that has steps left (one is used)."""
        seeds = widening.seeds if widening.seeds and all(s in self.steps_left for s in widening.seeds) else ()
        seeds = seeds or tuple(s for s in widening.continues if s in self.steps_left)
        if not seeds:
            return False
        if any(self.steps_left[s] <= 0 for s in seeds):
            return False  # the chain goes on past its estimate: the rest is judged as a chain of its own
        for s in seeds:
            self.steps_left[s] -= 1
        return True

    def _why_over(self, figure: str, asked: bool, credit: int) -> str:
        """Why a widening over the budget was accepted anyway: an option asked for it, or it pays for itself."""
        over = f"{figure}, over the {self.max_growth:g}x budget"
        if asked:
            return f"{over}; accepted because an option asked for it"
        return (
            f"{over}; accepted because the non-plain ops it removes save {self.ratio(credit):.2f}x on the NPU "
            "cost model, at least what it adds"
        )

    def _record(self, decision: Decision) -> None:
        for i, d in enumerate(self.decisions):
            if (d.rule, d.node, d.what) == (decision.rule, decision.node, decision.what):
                self.decisions[i] = decision
                return
        self.decisions.append(decision)

    def finish(self, model: onnx.ModelProto, ctx) -> None:
        """Counts the final model; warns when it ended over budget through rewrites that declare no cost."""
        self.final, _ = conv_macs(model, self.size)
        for rule in sorted(self.asked_over):
            ctx.warn(
                f"{rule} took the result over the {self.max_growth:g}x MAC budget (to "
                f"{self.ratio(self.final):.2f}x the merged form); accepted because an option asked for it"
            )
        paid = any(d.accepted and d.total > self.max_growth for d in self.decisions)
        grew = self.final > self.start  # an earlier result already over budget (and judged then) is not news
        if self.baseline and grew and self.final > self.max_growth * self.baseline * (1 + 1e-9) and not paid:
            ctx.warn(
                f"the result has {self.ratio(self.final):.2f}x the MACs of the merged form, over the {self.max_growth:g}x budget"
            )

    def record(self, model: onnx.ModelProto) -> None:
        """Writes the merged form's MACs into ``model``'s metadata, so optimizing the result again judges widening
        against the same baseline (and so changes nothing: optimizing is idempotent)."""
        if not self.decisions:
            return
        value = f"{self.baseline}@{self.size[0]}x{self.size[1]}"
        for prop in model.metadata_props:
            if prop.key == BASELINE_KEY:
                prop.value = value
                return
        model.metadata_props.add(key=BASELINE_KEY, value=value)

    def report(self) -> BudgetReport:
        growth = self.ratio(self.final) if self.final is not None else None
        return BudgetReport(
            self.max_growth, self.size, self.baseline, self.final, growth, list(self.decisions)
        )

    def as_dict(self) -> dict:
        return self.report().as_dict()


# ---------------------------------------------------------------- what the widening rules declare


def _weight_size(node) -> int:
    weight = const_value(input_at(node, 1))
    return int(weight.size) if weight is not None else 0


def _is_grouped(node) -> bool:
    return node.op == "Conv" and int(node.attrs.get("group", 1)) != 1


def _branch_convs(branches) -> list:
    return [n for b in branches for n in b.nodes if n.op == "Conv"]


def concat_merge_widening(ctx, node, merge, *, carry: bool) -> Widening:
    """What merging a Concat of (activated) convs and bare parts into one conv adds (et_dual, et_carry).

    The merged conv is dense over the union of the inputs with the largest kernel; a bare part signed
    somewhere is carried twice (relu(s), relu(-s)) and its readers get the negated columns too. For a carry the
    estimate includes every later step of the chain: the skip rides up the single-reader Conv(+act) chain above
    the conv it joins, adding its channels as rows and columns to each conv there. ``merge`` is the match's
    etc.passes._merge.ConcatMerge.
    """
    branches, doubled, sources = merge.branches, merge.plan.doubled, merge.sources
    kh = max(b.weight.shape[2] for b in branches)
    kw = max(b.weight.shape[3] for b in branches)
    rows = sum(b.out_channels * (2 if d else 1) for b, d in zip(branches, doubled))
    cols = sum(channels_of(t) or 0 for t in sources)
    convs = _branch_convs(branches)
    out = node.outputs[0]
    terms: list[tuple[int, object]] = [(rows * cols * kh * kw - sum(_weight_size(c) for c in convs), out)]
    extra = sum(b.out_channels for b, d in zip(branches, doubled) if d)
    for reader in merge.readers:
        w = _weight_size(reader)
        terms.append((w * extra // max(1, channels_of(out) or 1), reader.outputs[0]))
    densifies = any(_is_grouped(c) for c in convs)
    bare = [b for b in branches if b.bare and b.act is None]
    removes = [(sum(b.out_channels for b in branches) * 2, out)]  # the Concat reads and writes every channel
    if not carry:
        what = f"merging {len(branches)} branches over {len(sources)} input(s) into one dense conv"
        parts = tuple(b.part.name for b in branches)
        return Widening(what, terms, densifies, removes=removes, continues=parts)
    carried = sum(
        b.out_channels * (2 if d else 1) for b, d in zip(branches, doubled) if b.bare and b.act is None
    )
    convs_in = [b for b in branches if b.has_conv]
    names = ", ".join(f"'{b.part.name}'" for b in bare)
    signed = " as relu(s), relu(-s)" if any(d for b, d in zip(branches, doubled) if b.bare) else ""
    seeds = tuple(b.part.name for b in bare)

    def whole_chain() -> Widening:
        steps, chain_terms, chain_dense = (
            _carry_chain(ctx, convs_in[0].source, [b.part for b in bare], carried)
            if len(convs_in) == 1
            else (0, [], False)
        )
        what = f"carrying {names} ({carried} channels{signed}) through {steps + 1} conv(s)"
        return Widening(
            what, terms + chain_terms, densifies or chain_dense, seeds, removes=removes, steps=steps
        )

    return Widening(f"carrying {names}", terms, densifies, seeds, removes=removes, chain=whole_chain)


def _carry_chain(ctx, tensor, skips: list, carried: int) -> tuple[int, list[tuple[int, object]], bool]:
    """(steps, their terms, whether a grouped conv becomes dense) of carrying ``carried`` channels of ``skips``
    up the single-reader Conv(+act) chain that produces ``tensor``."""
    terms, dense, steps = [], False, 0
    for _ in range(256):
        if any(tensor is s for s in skips) or len(tensor.outputs) != 1 or is_graph_output(ctx.graph, tensor):
            break
        node = producer(tensor)
        if node is not None and node.op in MERGE_ACTIVATIONS and len(node.inputs[0].outputs) == 1:
            node = producer(node.inputs[0])
        if node is None or node.op != "Conv":
            break
        unified = any(node.inputs[0] is s for s in skips)  # the last step: the skip's own reader
        shape = _weight_shape(node)
        if shape is None:
            break
        outs, ins, taps = shape[0], shape[1] * int(node.attrs.get("group", 1)), math.prod(shape[2:])
        grown = (
            carried * ins * taps if unified else (outs + carried) * (ins + carried) * taps - math.prod(shape)
        )
        terms.append((grown, node.outputs[0]))
        dense = dense or _is_grouped(node)
        steps += 1
        if unified:
            break
        tensor = node.inputs[0]
    return steps, terms, dense


def _weight_shape(node) -> tuple[int, ...] | None:
    """The 4-D weight's shape of a Conv, read without loading the values of an initializer (called per step of
    every carry chain)."""
    tensor = input_at(node, 1)
    if isinstance(tensor, gs.Constant):
        shape = tuple(int(d) for d in tensor.shape)
        return shape if len(shape) == 4 else None
    weight = const_value(tensor)
    return tuple(int(d) for d in weight.shape) if weight is not None and weight.ndim == 4 else None


def add_merge_widening(ctx, node, branches: list, sources: list) -> Widening:
    """What turning Add(Conv_a(a), Conv_b(b)) into one conv over Concat(a, b) adds (et_add).

    When one input is produced by a single-reader Conv(+act) chain and the others are not, et_carry will carry
    the others up that chain next: its cost is part of this decision (seeded by those inputs), so a skip is
    never merged without being carried, or carried halfway.
    """
    kh = max(b.weight.shape[2] for b in branches)
    kw = max(b.weight.shape[3] for b in branches)
    rows = branches[0].out_channels
    cols = sum(channels_of(t) or 0 for t in sources)
    convs = _branch_convs(branches)
    terms: list[tuple[int, object]] = [
        (rows * cols * kh * kw - sum(_weight_size(c) for c in convs), node.outputs[0])
    ]
    what = f"adding {len(branches)} branches over {len(sources)} input(s) as one dense conv"
    densifies = any(_is_grouped(c) for c in convs)
    removes = [(3 * rows, node.outputs[0])]  # the Add reads two tensors and writes one
    streams = [t for t in sources if _is_stream(t)]
    riders = [t for t in sources if not _is_stream(t)]
    dual = _dual_stream_follow_up(streams, riders)
    if dual is not None:
        grown, dense, parts = dual
        names = ", ".join(f"'{t.name}'" for t in parts)
        what = f"{what}, then merging the convs producing {names} into one (dual stream)"
        concat = [(2 * sum(channels_of(t) or 0 for t in parts), parts[0])]  # the Concat that merge removes
        terms.append((grown, parts[0]))
        seeds = tuple(t.name for t in parts if t in riders or not riders)
        return Widening(what, terms, densifies or dense, seeds, removes=removes + concat, steps=1)
    if len(streams) != 1 or not riders:
        return Widening(what, terms, densifies, removes=removes)
    carried = sum((channels_of(t) or 0) * (1 if ctx.ranges[t].nonnegative else 2) for t in riders)
    terms.append((rows * (carried - sum(channels_of(t) or 0 for t in riders)) * kh * kw, node.outputs[0]))
    steps, chain, dense = _carry_chain(ctx, streams[0], riders, carried)
    names = ", ".join(f"'{t.name}'" for t in riders)
    signed = " as relu(s), relu(-s)" if any(not ctx.ranges[t].nonnegative for t in riders) else ""
    what = f"adding {names} and carrying it ({carried} channels{signed}) through {steps} conv(s)"
    seeds = tuple(t.name for t in riders)
    return Widening(what, terms + chain, densifies or dense, seeds, removes=removes, steps=steps)


def _act_conv(tensor):
    """The Conv producing ``tensor`` directly or through one merge activation, else None."""
    node = producer(tensor)
    if node is not None and node.op in MERGE_ACTIVATIONS:
        node = producer(node.inputs[0])
    return node if node is not None and node.op == "Conv" else None


def _dual_stream_follow_up(streams: list, riders: list) -> tuple[int, bool, list] | None:
    """(weight elements added, densifies, the parts) of the dual-stream merge (et_dual) that makes the Concat an
    Add merge leaves disappear, when that merge is what follows: either every input is a stream (the Concat of
    two streams merges their producers), or one is and each rider is act(Conv(s)) with ``s`` an input of the
    stream's producer (ETDS: r_i = relu(Conv_r(r_{i-1})) beside y_i = relu(Conv_y(y_{i-1}, r_{i-1}))), which a
    merge absorbs in place instead of carrying r_i up the body. None otherwise (a carry follows, or nothing)."""
    if len(streams) != 1 if riders else len(streams) < 2:
        return None
    parts = streams + riders
    convs = [_act_conv(t) for t in parts]
    if any(c is None for c in convs):
        return None
    if riders:
        inputs = concat_leaves(convs[0].inputs[0])
        if not all(any(c.inputs[0] is t for t in inputs) for c in convs[1:]):
            return None
    sources: list = []
    for conv in convs:
        sources += [t for t in concat_leaves(conv.inputs[0]) if not any(t is s for s in sources)]
    shapes = [_weight_shape(c) for c in convs]
    if any(s is None for s in shapes):
        return None
    kh, kw = max(s[2] for s in shapes), max(s[3] for s in shapes)
    rows, cols = sum(s[0] for s in shapes), sum(channels_of(t) or 0 for t in sources)
    grown = rows * cols * kh * kw - sum(math.prod(s) for s in shapes)
    return grown, any(_is_grouped(c) for c in convs), parts


def _is_stream(tensor) -> bool:
    """Produced by a single-reader Conv or act(Conv) (the activation's output single-reader too): a carry absorbs
    it instead of carrying it."""
    conv = _act_conv(tensor)
    if conv is None or len(conv.outputs[0].outputs) != 1:
        return False
    return conv.outputs[0] is tensor or len(tensor.outputs) == 1


def prelu_widening(conv, users: list, count: int) -> Widening:
    """What PReLU -> ReLU on doubled channels adds (et_prelu): the producer's rows and the readers' columns
    double. Asked for by --prelu, so counted but never declined."""
    terms = [(_weight_size(conv), conv.outputs[0])] if conv is not None else []
    terms += [(_weight_size(u), u.outputs[0]) for u in users]
    return Widening(f"doubling {count} PReLU channels as relu(z), relu(-z)", terms, asked=True)


def align_widening(node, readers: list, width: int) -> Widening:
    """What rounding a conv's outputs up to ``width`` zero channels adds (et_align, asked by --align-channels)."""
    shape = _weight_shape(node)
    if shape is None:
        return Widening("aligning channels", asked=True)
    extra = width - shape[0]
    terms = [(extra * int(np.prod(shape[1:])), node.outputs[0])]
    for reader in readers:
        rshape = _weight_shape(reader)
        if rshape is not None:
            terms.append((rshape[0] * extra * int(np.prod(rshape[2:])), reader.outputs[0]))
    return Widening(f"aligning {shape[0]} channels to {width}", terms, asked=True)


def selection_widening(node, sizes: list[int], count: int) -> Widening:
    """What a channel Slice/Split as 1x1 selection convs adds (et_slice, when no producer conv's rows can be cut):
    size x count MACs per pixel and piece. No NPU credit: a selection conv pays only if a later merge absorbs it,
    which the budget cannot see at this point."""
    terms = [(size * count, node.outputs[0]) for size in sizes]
    return Widening(f"selecting {sum(sizes)} of {count} channels with 1x1 convs", terms)


def copy_widening(output, out_channels: int, in_channels: int, follow_up: Widening | None = None) -> Widening:
    """What a channel-copying region (Tile, repeat_interleave, Expand, Concat([x]*n)) as a 1x1 conv adds
    (et_repeat): out x in MACs per pixel, no NPU credit (see :func:`selection_widening`).

    With ``follow_up``, the merge this copy is the first step of (an anchor's residual Add that et_add merges and
    et_carry carries up the body, seeded by the copied tensor): the copy is judged together with it, its cost
    being the follow-up's (the copy conv dissolves into the merged conv) and its credit the follow-up's plus the
    data movement it replaces. Declining the pair leaves the region as it was, never a lone copy conv whose
    merge is then declined."""
    what = f"copying {in_channels} channels to {out_channels} with a 1x1 conv"
    if follow_up is None:
        return Widening(what, [(out_channels * in_channels, output)])
    return Widening(
        f"{what}, then {follow_up.what}",
        follow_up.terms,
        follow_up.densifies,
        follow_up.seeds,
        removes=[*follow_up.removes, (in_channels + out_channels, output)],
        steps=follow_up.steps + 1,  # the merge itself, then its carry
    )
