"""QDQ placement for plain super-resolution nets, and the weight/bias quantizers.

Placement (one QuantizeLinear -> DequantizeLinear pair per quantized tensor, shared by all its readers)::

    x ─Q─DQ─> Conv ─> Relu ─Q─DQ─> Conv ─> Relu ─Q─DQ─> ... ─> DepthToSpace ─Q─DQ─> y
              ^ W: int8 per output channel (DQ axis 0), bias: int32 with scale s_x·s_w

* Conv followed by its only reader Relu is fused: only the Relu output is quantized (uint8, zero point 0),
  which onnxruntime turns into one QLinearConv.
* Data-movement ops (DepthToSpace, Slice, Reshape, Transpose, ...) reuse their input's scale and zero point,
  so the pair around them is exact and onnxruntime runs them on uint8.
* Other float ops on the whitelist (Add, PRelu, Clip, Concat, ...) get their own output range; anything else
  stays float. Graph inputs use their declared range (default [0, 1], i.e. scale 1/255: exact on 8-bit images).

u8s8 safety (only for the ``x86-avx2`` target of :mod:`etc.quant.kernels`; the default ``int32`` target puts no
limit on the weights): x86 CPUs without VNNI multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds
two products in saturating int16. Which two: onnxruntime's QLinearConv runs on NHWC im2col rows, so the reduction
index of weight (o, c, ky, kx) is k = (ky·kw + kx)·C + c, and the kernel adds the products of k = 2j and 2j + 1
(checked for every pair of 3x3 Convs with 3 and 4 input channels, 1x1 Convs and sampled pairs with 32 channels
in tests/test_quant_qdq.py). ``safe_u8s8=True`` (``"pairs"``) picks each output channel's weight scale so that
the two same-signed weights of each such pair sum to at most 128 in magnitude (255·128 < 32767), so the fused
kernel computes exactly what the QDQ graph says; ``"any"`` asks it of any two weights of the row (layout-free,
costs up to one bit; the figures are in bench/RESULTS.md, "Quantizer design measurements"); grouped Convs always
use ``"any"``. A single dominant weight (e.g. the -I of a clip conv) keeps full 8 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from etc import proto
from etc.errors import BadModelError
from etc.proto import constants  # also read as qdq.constants by the quant modules

TIED_OPS = frozenset(
    {
        "DepthToSpace",
        "SpaceToDepth",
        "Slice",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Expand",
        "Tile",
        "Identity",
        "MaxPool",
    }
)
OWN_OPS = frozenset(
    {
        "Conv",
        "Relu",
        "PRelu",
        "LeakyRelu",
        "Clip",
        "Add",
        "Sub",
        "Mul",
        "Concat",
        "Sigmoid",
        "Resize",
        "AveragePool",
        "GlobalAveragePool",
    }
)
QMAX = 255  # uint8 activations
WIDE_QMAX = 65535  # uint16 activations (A16W8)
WIDE_OPSET = 21  # the first opset whose QuantizeLinear/DequantizeLinear take uint16


@dataclass
class Plan:
    """Which tensors get a Q/DQ pair and how the parameters are shared."""

    own: list[str] = field(default_factory=list)  # tensors with their own calibrated range, topological
    tied: dict[str, str] = field(
        default_factory=dict
    )  # data-movement output -> tensor whose params it reuses
    inputs: list[str] = field(default_factory=list)  # graph inputs quantized with their declared range
    fused: dict[str, str] = field(default_factory=dict)  # Conv output -> the Relu output quantized instead
    convs: list[str] = field(default_factory=list)  # Conv node names whose weights are quantized

    @property
    def tensors(self) -> list[str]:
        return [*self.inputs, *self.own, *self.tied]

    def root(self, tensor: str) -> str:
        while tensor in self.tied:
            tensor = self.tied[tensor]
        return tensor


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of float tensors (graph inputs, outputs and inferred value infos)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    out = set()
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            out.add(vi.name)
    return out


def is_quantizable_conv(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> bool:
    """A Conv with constant 4-D weights (and constant bias when present)."""
    return proto.is_const_conv(node, consts) and consts[node.input[1]].ndim == 4


def plan_qdq(model: onnx.ModelProto, exclude: frozenset[str] = frozenset()) -> Plan:
    """Decides the Q/DQ placement described in the module docstring (model nodes in topological order).

    Nodes named in ``exclude`` (by node name or output tensor) stay float: their weights are not quantized and
    their outputs get no Q/DQ pair (a Conv whose Relu is excluded quantizes its own output instead)."""
    consts = constants(model)
    floats = float_tensors(model)
    readers = proto.readers(model)
    outputs = {o.name for o in model.graph.output}
    plan = Plan()
    init_names = {i.name for i in model.graph.initializer}
    quantized: set[str] = set()
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if (
            value.name not in init_names
            and value.type.tensor_type.elem_type == TensorProto.FLOAT
            and len(dims) == 4
        ):
            plan.inputs.append(value.name)
            quantized.add(value.name)
    skip: set[str] = set()
    for node in model.graph.node:
        if id(node) in skip or not node.output or _excluded(node, exclude):
            continue
        out = node.output[0]
        if node.op_type == "Conv":
            if not is_quantizable_conv(node, consts):
                continue
            plan.convs.append(node.name)
            users = readers.get(out, [])
            fusable = len(users) == 1 and users[0].op_type == "Relu" and not _excluded(users[0], exclude)
            if fusable and out not in outputs:
                relu = users[0]
                plan.fused[out] = relu.output[0]
                skip.add(id(relu))
                out = relu.output[0]
            plan.own.append(out)
            quantized.add(out)
        elif node.op_type in TIED_OPS and node.input and node.input[0] in quantized and len(node.output) == 1:
            plan.tied[out] = node.input[0]
            quantized.add(out)
        elif node.op_type in OWN_OPS and out in floats | outputs and len(node.output) == 1:
            plan.own.append(out)
            quantized.add(out)
    return plan


def _excluded(node: onnx.NodeProto, exclude: frozenset[str]) -> bool:
    return bool(exclude) and (node.name in exclude or any(o in exclude for o in node.output))


# ---------------------------------------------------------------- parameters


def act_params(lo: float, hi: float, bits: int = 8) -> tuple[np.float32, np.uint8 | np.uint16]:
    """uint8 (``bits`` 16: uint16) scale and zero point covering [lo, hi] (lo <= 0 <= hi enforced); zero is
    exact. On [0, 1] the uint16 grid (scale 1/65535) holds every uint8 value exactly (q16 = 257 q8)."""
    qmax, kind = (WIDE_QMAX, np.uint16) if bits == 16 else (QMAX, np.uint8)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return np.float32(1.0), kind(0)
    scale = np.float32((hi - lo) / qmax)
    zp = int(np.clip(np.round(-lo / float(scale)), 0, qmax))
    return scale, kind(zp)


@dataclass
class Widths:
    """Bit widths of a QDQ plan with some tensors carried in 16 bits (:func:`plan_widths`).

    ``stored``: every quantized tensor's width (the width of the node that writes it; a data-movement output
    keeps its input's); ``reads``: the width each quantizing node (a Conv, with its fused Relu, or an op with
    its own range) computes at, which is the width it writes and the width it reads every quantized input at;
    ``converts``: (tensor, width) pairs read at a width other than the stored one, each one DequantizeLinear ->
    QuantizeLinear pair in the graph (QNN's Convert op)."""

    stored: dict[str, int] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    converts: list[tuple[str, int]] = field(default_factory=list)

    @property
    def wide(self) -> list[str]:
        """Tensors stored in 16 bits, in plan order."""
        return [t for t, b in self.stored.items() if b == 16]


def quantizing_output(node: onnx.NodeProto, plan: Plan) -> str | None:
    """The quantized tensor ``node`` writes with its own range (a Conv's fused Relu output counts), or None for
    data-movement, fused and float nodes."""
    if not node.output:
        return None
    out = node.output[0]
    if node.op_type == "Conv" and node.name in plan.convs:
        out = plan.fused.get(out, out)
        return out if out in plan.own else None
    if node.op_type in TIED_OPS and out in plan.tied:
        return None
    if node.input and node.input[0] in plan.fused:  # the Relu fused into its Conv
        return None
    return out if out in plan.own else None


def plan_widths(model: onnx.ModelProto, plan: Plan, wide: frozenset[str] | set[str] = frozenset()) -> Widths:
    """Which width every tensor and node of ``plan`` gets when the tensors ``wide`` are carried in 16 bits.

    On HTP a conv's input and output have one width, so a node runs in 16 bits when it writes a tensor of
    ``wide`` or reads one; what it writes is stored in 16 bits, and a reader at the other width gets a Convert.
    ``wide`` holds graph inputs or tensors with their own range (not data-movement outputs)."""
    out = Widths()
    for name in plan.inputs:
        out.stored[name] = 16 if name in wide else 8
    seen: set[tuple[str, int]] = set()
    for node in model.graph.node:
        q_out = quantizing_output(node, plan)
        if q_out is None:
            if node.output and node.output[0] in plan.tied:
                out.stored[node.output[0]] = out.stored.get(plan.root(node.output[0]), 8)
            continue
        ins = [t for t in node.input if t in out.stored]
        bits = 16 if q_out in wide or any(plan.root(t) in wide for t in ins) else 8
        out.reads[node.name] = bits
        out.stored[q_out] = bits
        for t in ins:
            if out.stored[t] != bits and (t, bits) not in seen:
                seen.add((t, bits))
                out.converts.append((t, bits))
    return out


SAFE_MODES = (True, False, "pairs", "any")


def kernel_pairs(shape: tuple[int, ...]) -> np.ndarray:
    """(P, 2) indices into ``W.reshape(O, -1)`` of the weights the u8s8 kernel adds in int16 (module doc)."""
    _, c, kh, kw = shape
    k = kh * kw * c
    nchw = np.arange(k).reshape(c, kh * kw).T.reshape(-1)  # NCHW flat index of NHWC reduction index k
    if k % 2:
        nchw = nchw[:-1]
    return nchw.reshape(-1, 2)


def _pair_sums(w: np.ndarray, mode: bool | str) -> np.ndarray:
    """Per row, the largest same-signed sum of two weights the kernel may add (``mode`` "pairs" or "any")."""
    rows = w.reshape(w.shape[0], -1)
    need = np.zeros(len(rows))
    for sign in (1.0, -1.0):
        part = np.maximum(sign * rows, 0)
        if mode == "any":
            part = np.sort(part, axis=1)
            top2 = part[:, -1] + (part[:, -2] if part.shape[1] > 1 else 0.0)
        else:
            pairs = kernel_pairs(w.shape) if w.ndim == 4 else np.zeros((0, 2), int)
            top2 = part[:, pairs].sum(2).max(1) if len(pairs) else np.zeros(len(rows))
        need = np.maximum(need, top2)
    return need


def _check_mode(safe_u8s8: bool | str) -> bool | str:
    if safe_u8s8 not in SAFE_MODES:
        raise BadModelError(f"safe_u8s8 must be one of {SAFE_MODES}, got {safe_u8s8!r}")
    return "pairs" if safe_u8s8 is True else safe_u8s8


def weight_scales(weight: np.ndarray, per_channel: bool = True, safe_u8s8: bool | str = True) -> np.ndarray:
    """Symmetric int8 scales, one per output channel (or one shared), see the module docstring."""
    mode = _check_mode(safe_u8s8)
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    need = np.abs(w).max(1) / 127.0
    if mode:
        need = np.maximum(need, _pair_sums(weight.astype(np.float64), mode) / 127.0)
    if not per_channel:
        need = np.full(len(need), need.max())
    need = np.where(need > 0, need, 1.0)
    return need.astype(np.float32)


def u8s8_safe(q: np.ndarray, safe_u8s8: bool | str = True) -> bool:
    """True when the same-signed int8 weights the kernel may add (``"pairs"`` or ``"any"``) sum to <= 128."""
    mode = _check_mode(safe_u8s8) or "pairs"
    return bool(np.all(_pair_sums(q.astype(np.int32), mode) <= 128))


def clamp_pairs(q: np.ndarray) -> np.ndarray:
    """``q`` (int8, e.g. after error-compensating rounding) with each same-signed kernel pair whose magnitudes
    sum above 128 pulled back to 128, the smaller member losing the excess."""
    out = q.astype(np.int32).reshape(q.shape[0], -1).copy()
    pairs = kernel_pairs(q.shape)
    a, b = out[:, pairs[:, 0]], out[:, pairs[:, 1]]
    excess = np.maximum(np.abs(a) + np.abs(b) - 128, 0) * (np.sign(a) == np.sign(b))
    small_a = np.abs(a) <= np.abs(b)
    a = a - np.sign(a) * np.where(small_a, excess, 0)
    b = b - np.sign(b) * np.where(small_a, 0, excess)
    out[:, pairs[:, 0]], out[:, pairs[:, 1]] = a, b
    return out.reshape(q.shape).astype(np.int8)


def quantize_weight(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = np.round(weight.astype(np.float64) / scales.astype(np.float64).reshape(-1, 1, 1, 1))
    return np.clip(q, -127, 127).astype(np.int8)


def quantize_bias(bias: np.ndarray, act_scale: float, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bscale = (np.float64(act_scale) * scales.astype(np.float64)).astype(np.float32)
    q = np.round(bias.astype(np.float64) / bscale.astype(np.float64))
    return np.clip(q, -(2**31) + 1, 2**31 - 1).astype(np.int32), bscale


# ---------------------------------------------------------------- graph construction


def build_qdq(
    model: onnx.ModelProto,
    plan: Plan,
    ranges: Mapping[str, tuple[float, float]],
    *,
    per_channel: bool = True,
    safe_u8s8: bool | str = True,
    grids: Mapping[str, np.ndarray] | None = None,
    wide: frozenset[str] | set[str] = frozenset(),
    float_weights: bool = False,
    htp: bool = False,
    rounding_shift: float = 0.0,
) -> onnx.ModelProto:
    """The QDQ model: ``ranges`` gives (lo, hi) for every tensor of ``plan.inputs`` and ``plan.own``.

    ``grids`` fixes the weight scales of some Convs (by node name), e.g. after error-compensating rounding put
    their float weights on that grid already. ``wide`` carries those tensors in 16 bits (uint16 Q/DQ, opset 21;
    the widths and Converts of :func:`plan_widths`). ``float_weights`` quantizes the activations only: the
    weights and biases stay float (the floor that activation rounding alone sets). ``htp`` writes the form
    HTP computes as the graph says (:mod:`etc.quant.htp_form`): PReLU slopes as uint8 per-tensor
    DequantizeLinear (their values must already be on that grid: :func:`etc.quant.htp_form.snap_slopes`) and
    16-bit Convs with weight scales whose requantization multipliers are float16 numbers;
    ``rounding_shift`` adds that many output steps to the int32 bias of every Conv writing an 8-bit tensor."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise BadModelError(
            f"opset {opset}: per-channel QDQ needs opset 13 or later; re-export with opset 17"
        )
    widths = plan_widths(model, plan, frozenset(wide))
    if wide and opset < WIDE_OPSET:
        model = at_opset(model, WIDE_OPSET)
    consts = constants(model)
    params: dict[str, tuple[np.float32, np.uint8 | np.uint16]] = {}
    for name in [*plan.inputs, *plan.own]:
        if name not in ranges:
            raise KeyError(f"no calibrated range for tensor '{name}'")
        params[name] = act_params(*ranges[name], bits=widths.stored.get(name, 8))
    for name in plan.tied:
        params[name] = params[plan.root(name)]
    graph_outputs = {o.name for o in model.graph.output}
    conv_names = set(plan.convs)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    dq_of: dict[str, str] = {}  # float tensor -> the DQ output readers use
    used = {n for node in model.graph.node for n in [*node.input, *node.output]} | {
        i.name for i in model.graph.initializer
    }

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    def add_init(base: str, value: np.ndarray) -> str:
        name = fresh(base)
        inits.append(numpy_helper.from_array(value, name))
        return name

    def add_pair(src: str, dst: str, name: str, pair=None) -> None:
        scale, zp = params[name] if pair is None else pair
        s = add_init(f"{name}_scale", np.asarray(scale, dtype=np.float32))
        z = add_init(f"{name}_zero_point", np.asarray(zp))
        q = fresh(f"{name}_quantized")
        nodes.append(helper.make_node("QuantizeLinear", [src, s, z], [q], name=fresh(f"{name}_Q")))
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dst], name=fresh(f"{name}_DQ")))

    converted: dict[tuple[str, int], str] = {}  # (tensor, width) -> the DQ output of its Convert

    def read_at(name: str, bits: int) -> tuple[str, tuple]:
        """(tensor a reader at ``bits`` uses, its (scale, zero point)): the stored DQ, or a Convert of it."""
        if widths.stored.get(name, bits) == bits:
            return dq_of[name], params[name]
        pair = act_params(*ranges[plan.root(name)], bits=bits)
        if (name, bits) not in converted:
            dst = fresh(f"{name}_dq{bits}")
            add_pair(dq_of[name], dst, f"{name}_to{bits}", pair)
            converted[(name, bits)] = dst
        return converted[(name, bits)], pair

    quantized = set(plan.tensors)
    for name in plan.inputs:
        dq = fresh(f"{name}_dq")
        add_pair(name, dq, name)
        dq_of[name] = dq
    for node in model.graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        bits = widths.reads.get(node.name)
        read_params = {}
        for i, name in enumerate(new.input):
            if name in dq_of:
                if bits is None:
                    new.input[i] = dq_of[name]
                else:
                    new.input[i], read_params[name] = read_at(name, bits)
        if htp and node.op_type == "PRelu" and len(node.input) > 1 and node.input[1] in consts:
            new.input[1] = _slope_dq(node.input[1], consts[node.input[1]], add_init, fresh, nodes)
        if node.name in conv_names and node.input[0] in params and not float_weights:
            written = quantizing_output(node, plan)
            out_params = params.get(written) if written else None
            out_bits = widths.stored.get(written, 8) if written else 8
            _quantize_conv_inputs(
                new,
                node,
                consts,
                read_params.get(node.input[0], params[node.input[0]])[0],
                per_channel,
                safe_u8s8,
                add_init,
                fresh,
                nodes,
                (grids or {}).get(node.name),
                _conv_htp(out_params, out_bits, htp, rounding_shift),
            )
        renamed = {}
        for i, name in enumerate(new.output):
            if name in quantized and name in graph_outputs:
                renamed[name] = fresh(f"{name}_float")
                new.output[i] = renamed[name]
        nodes.append(new)
        for name in node.output:
            if name not in quantized:
                continue
            if name in renamed:
                add_pair(renamed[name], name, name)
            else:
                dq = fresh(f"{name}_dq")
                add_pair(name, dq, name)
                dq_of[name] = dq
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    del out.graph.value_info[:]
    _drop_unused_initializers(out)
    return out


def at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``model`` converted to ONNX opset ``version`` (IR version raised to one that allows it)."""
    from onnx import version_converter

    try:
        out = version_converter.convert_version(model, version)
    except Exception as exc:
        raise BadModelError(
            f"16-bit activations need opset {version} (uint16 QuantizeLinear/DequantizeLinear) and the model "
            f"did not convert: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        ) from exc
    out.ir_version = max(out.ir_version, 10)
    return out


def conv_width_errors(qmodel: onnx.ModelProto) -> list[str]:
    """One line per Conv of a QDQ model whose activation input and output have different widths (the
    DequantizeLinear feeding it and the QuantizeLinear after it, or after its only Relu): HTP runs a conv at one
    width, and a change of width must be a DequantizeLinear -> QuantizeLinear pair (a Convert) between nodes."""
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    readers = proto.readers(qmodel)
    inits = {i.name: i.data_type for i in qmodel.graph.initializer}

    def zp_type(node: onnx.NodeProto | None) -> int | None:
        if node is None or len(node.input) < 3:
            return None
        return inits.get(node.input[2])

    errors = []
    for node in qmodel.graph.node:
        if node.op_type != "Conv":
            continue
        src = producers.get(node.input[0])
        out = node.output[0]
        users = readers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Relu":
            out = users[0].output[0]
            users = readers.get(out, [])
        q = next((u for u in users if u.op_type == "QuantizeLinear"), None)
        a = zp_type(src) if src is not None and src.op_type == "DequantizeLinear" else None
        b = zp_type(q)
        if a is not None and b is not None and a != b:
            names = {TensorProto.UINT8: "8-bit", TensorProto.UINT16: "16-bit"}
            errors.append(
                f"Conv '{node.name}' would read '{node.input[0]}' in {names.get(a, a)} and write '{out}' in "
                f"{names.get(b, b)}: on HTP a conv's input and output have the same width (a change of width "
                "is a DequantizeLinear -> QuantizeLinear pair, QNN's Convert, between two convs)"
            )
    return errors


@dataclass(frozen=True)
class ConvHtp:
    """What the HTP form changes in one Conv: its output scale, whether its weight scales are chosen so that
    the requantization multipliers are float16 numbers (16-bit Convs), and the bias shift in output steps."""

    out_scale: float
    fp16_multipliers: bool
    shift: float


def _conv_htp(out_params, out_bits: int, htp: bool, shift: float) -> ConvHtp | None:
    """The HTP adjustments of a Conv writing a tensor quantized with ``out_params`` at ``out_bits``."""
    if out_params is None or not (htp or shift):
        return None
    wide = out_bits == 16
    return ConvHtp(float(out_params[0]), htp and wide, 0.0 if wide else shift)


def _slope_dq(name: str, alpha: np.ndarray, add_init, fresh, nodes) -> str:
    """A uint8 per-tensor DequantizeLinear of a PReLU slope (the form QNN runs as one quantized PReLU)."""
    from etc.quant.htp_form import slope_grid

    codes, scale, zero = slope_grid(alpha)
    q, s, z = (
        add_init(f"{name}_{k}", v) for k, v in (("quantized", codes), ("scale", scale), ("zero_point", zero))
    )
    out = fresh(f"{name}_dq")
    nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out], name=fresh(f"{name}_DQ")))
    return out


def _quantize_conv_inputs(
    new, node, consts, act_scale, per_channel, safe_u8s8, add_init, fresh, nodes, grid=None, htp=None
) -> None:
    """Rewires a Conv's weight and bias through int8/int32 DequantizeLinear nodes (``htp``: a ConvHtp)."""
    from etc.quant import htp_form

    weight = consts[node.input[1]]
    if safe_u8s8 and proto.conv_attrs(node).group != 1:
        safe_u8s8 = "any"
    scales = weight_scales(weight, per_channel, safe_u8s8) if grid is None else np.asarray(grid, np.float32)
    if htp is not None and htp.fp16_multipliers:
        scales = htp_form.fp16_exact_scales(scales, float(act_scale), htp.out_scale)
    qw = quantize_weight(weight, scales)
    wq = add_init(f"{node.name}_weight_quantized", qw)
    ws = add_init(f"{node.name}_weight_scale", scales)
    wz = add_init(f"{node.name}_weight_zero_point", np.zeros(len(scales), dtype=np.int8))
    wd = fresh(f"{node.name}_weight_dq")
    nodes.append(
        helper.make_node("DequantizeLinear", [wq, ws, wz], [wd], axis=0, name=fresh(f"{node.name}_weight_DQ"))
    )
    new.input[1] = wd
    if len(node.input) > 2 and node.input[2]:
        bias = consts[node.input[2]]
        qb, bscale = quantize_bias(bias, float(act_scale), scales)
        if htp is not None and htp.shift:
            qb = htp_form.shifted_bias(qb, bscale, htp.out_scale, htp.shift)
        bq = add_init(f"{node.name}_bias_quantized", qb)
        bs = add_init(f"{node.name}_bias_scale", bscale)
        bz = add_init(f"{node.name}_bias_zero_point", np.zeros(len(bscale), dtype=np.int32))
        bd = fresh(f"{node.name}_bias_dq")
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [bq, bs, bz], [bd], axis=0, name=fresh(f"{node.name}_bias_DQ")
            )
        )
        new.input[2] = bd


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    read = proto.drop_unused_initializers(model)
    dead = [n for n in model.graph.node if n.op_type == "Constant" and not (set(n.output) & read)]
    for n in dead:
        model.graph.node.remove(n)
