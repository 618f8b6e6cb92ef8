"""ConvTranspose as a Conv computing every sub-pixel phase, then DepthToSpace.

    x ── ConvTranspose(Wt, b; stride s, kernel k, pads, output_padding) ──► y      (s·H + c rows)
becomes
    x ── Conv(K, b repeated s²; kernel T, pads lo/hi) ──► DepthToSpace(s, CRD) ──► y

Weight algebra, per spatial axis (the two axes are independent). Output row Y' of the ConvTranspose is row
Y = Y' + pad_begin of the unpadded result y_full[Y] = sum_{h·s + κ = Y} x[h]·Wt[κ]. Write Y' = s·q + r with
phase r in [0, s) and r + pad_begin = s·a_r + b_r (0 <= b_r < s). The taps with κ ≡ b_r (mod s) are
κ = s·j + b_r, j = 0 .. J_r - 1, and they read x[q + a_r - j]:

    y[s·q + r] = sum_j x[q + t]·Wt[s·j + b_r],   t = a_r - j

so phase r is a correlation of x with offsets t. One Conv serves every phase with the window
t in [t_lo, t_hi] (the union of the phases' offsets, widened with zero taps to contain 0 and -m); its pads are
pad_lo = -t_lo >= 0 and pad_hi = m + t_hi >= 0, where c = k - s - pad_begin - pad_end + output_padding = s·m.
Rows of x outside [0, H) are zeros in both forms (ConvTranspose scatters nothing from them; Conv pads with 0),
so the result is exact at every pixel, border and output_padding rows included. Channel (o, r_h, r_w) of the
Conv is o·s² + r_h·s + r_w, the CRD order, so DepthToSpace(s, CRD) interleaves the phases. Groups carry over
(channels of one group stay contiguous). With s = 1 no DepthToSpace is needed. Below opset 11 DepthToSpace
has no mode attribute and is DCR; the channels are then ordered r·Cout + o (and groups made dense).

Exact when: 2-D, constant weights, equal strides on both axes, dilation 1, auto_pad NOTSET/VALID, no
output_shape attribute, and c divisible by s on both axes (otherwise the output is not s times any conv
output and would need a crop, which a Conv cannot express; the rule declines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import grouped_to_dense
from etc.graph import (
    ConvSpec,
    auto_pad,
    const_value,
    conv_weights,
    explicit_pads,
    input_at,
    make_conv,
    make_node,
    retire,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


@dataclass(frozen=True)
class PhasePlan:
    """One axis of the phase decomposition: per phase r, the kernel tap read at each window offset."""

    taps: np.ndarray  # (s, T) int; taps[r, u] = ConvTranspose kernel index read at window position u, or -1
    pad_lo: int
    pad_hi: int


def phase_plan(stride: int, kernel: int, pad_begin: int, pad_end: int, output_padding: int) -> PhasePlan:
    """The phase decomposition of one axis; raises Decline when the output needs a crop."""
    c = kernel - stride - pad_begin - pad_end + output_padding
    if c % stride:
        raise Decline(
            f"output size is {stride}*H{c:+d}, not a multiple of the stride; "
            "DepthToSpace would need a crop a Conv cannot express"
        )
    m = c // stride
    phases = []
    for r in range(stride):
        a, b = divmod(r + pad_begin, stride)
        count = max(0, -(-(kernel - b) // stride))
        phases.append((a, b, count))
    offsets = [a - j for a, _, count in phases for j in range(count)]
    t_lo = min([0, *offsets])
    t_hi = max([-m, *offsets])
    taps = np.full((stride, t_hi - t_lo + 1), -1, dtype=np.int64)
    for r, (a, b, count) in enumerate(phases):
        for j in range(count):
            taps[r, a - j - t_lo] = stride * j + b
    return PhasePlan(taps, -t_lo, m + t_hi)


@dataclass(frozen=True)
class PhaseDecomposition:
    """The ConvTranspose's stride s, the phase plans of its rows and columns, and its groups."""

    stride: int
    rows: PhasePlan
    cols: PhasePlan
    group: int


def phase_kernel(weight: np.ndarray, group: int, plan_h: PhasePlan, plan_w: PhasePlan) -> np.ndarray:
    """Conv kernel (Cout·s², Cin/group, T_h, T_w) in CRD channel order from a ConvTranspose kernel."""
    cin, cout_g, kh, kw = weight.shape
    s = plan_h.taps.shape[0]
    padded = np.zeros((cin, cout_g, kh + 1, kw + 1), dtype=np.float64)  # index kh / kw is a zero tap
    padded[:, :, :kh, :kw] = weight
    th = np.where(plan_h.taps < 0, kh, plan_h.taps)
    tw = np.where(plan_w.taps < 0, kw, plan_w.taps)
    # gathered[i, o, rh, rw, u, v] = Wt[i, o, th[rh, u], tw[rw, v]]
    gathered = padded[:, :, th[:, None, :, None], tw[None, :, None, :]]
    gathered = gathered.reshape(group, cin // group, cout_g, s, s, th.shape[1], tw.shape[1])
    kernel = gathered.transpose(0, 2, 3, 4, 1, 5, 6)
    return kernel.reshape(group * cout_g * s * s, cin // group, th.shape[1], tw.shape[1])


def _to_dcr(kernel: np.ndarray, bias: np.ndarray | None, spec: ConvSpec, s: int):
    """Reorders a CRD phase conv (channel o·s² + r) to DCR (channel r·Cout + o); groups become dense."""
    dense = grouped_to_dense(kernel, spec.group)
    cout = dense.shape[0] // (s * s)
    order = np.arange(cout * s * s).reshape(cout, s * s).T.reshape(-1)
    dcr_spec = ConvSpec(spec.kernel, spec.pads, spec.strides, spec.dilations, 1)
    return dense[order], None if bias is None else bias[order], dcr_spec


def _ints(node: gs.Node, key: str, default: list[int]) -> list[int]:
    return [int(v) for v in node.attrs.get(key, default)]


class ConvTransposeToConvD2S(Rule):
    """Replaces a strided ConvTranspose with a Conv over all sub-pixel phases followed by DepthToSpace."""

    name = "convtranspose_to_conv_d2s"
    ops = ("ConvTranspose",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        weight = const_value(input_at(node, 1))
        if weight is None:
            raise Decline("weights are not constant")
        if weight.ndim != 4:
            raise Decline(f"only 2-D ConvTranspose is handled (kernel rank {weight.ndim - 2})")
        if input_at(node, 2) is not None and const_value(input_at(node, 2)) is None:
            raise Decline("bias is not constant")
        pads = explicit_pads(node)
        if pads is None:
            raise Decline(f"auto_pad={auto_pad(node)} is not handled; export with explicit pads")
        if "output_shape" in node.attrs:
            raise Decline("output_shape attribute is not handled; export with explicit pads")
        if _ints(node, "dilations", [1, 1]) != [1, 1]:
            raise Decline(f"dilations {_ints(node, 'dilations', [1, 1])} are not 1")
        sh, sw = _ints(node, "strides", [1, 1])
        if sh != sw:
            raise Decline(f"strides ({sh}, {sw}) differ; DepthToSpace has one block size")
        out_pad = _ints(node, "output_padding", [0, 0])
        plans = []
        for axis in range(2):
            try:
                plans.append(
                    phase_plan(sh, weight.shape[2 + axis], pads[axis], pads[axis + 2], out_pad[axis])
                )
            except Decline as why:
                raise Decline(f"{'HW'[axis]} axis: {why.reason}") from None
        return Match([node], PhaseDecomposition(sh, plans[0], plans[1], int(node.attrs.get("group", 1))))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        (node,) = match.nodes
        phases: PhaseDecomposition = match.data
        s, plan_h, plan_w, group = phases.stride, phases.rows, phases.cols, phases.group
        weight, bias = conv_weights(node)
        kernel = phase_kernel(weight, group, plan_h, plan_w)
        has_bias = input_at(node, 2) is not None
        spec = ConvSpec(
            kernel=(kernel.shape[2], kernel.shape[3]),
            pads=(plan_h.pad_lo, plan_w.pad_lo, plan_h.pad_hi, plan_w.pad_hi),
            group=group,
        )
        out = node.outputs[0]
        x = node.inputs[0]
        base = node.name or "convtranspose"
        conv_bias = np.repeat(bias, s * s) if has_bias else None
        if s == 1:
            retire([node])
            make_conv(ctx.graph, ctx.namer, x, kernel, conv_bias, spec, output=out, name=f"{base}_conv")
            return
        crd = int(getattr(ctx.graph, "opset", None) or 11) >= 11
        if not crd:  # DepthToSpace-1 has no mode attribute and is DCR: channel r·Cout + o
            kernel, conv_bias, spec = _to_dcr(kernel, conv_bias, spec, s)
        conv = make_conv(ctx.graph, ctx.namer, x, kernel, conv_bias, spec, name=f"{base}_phases")
        retire([node])
        attrs = {"blocksize": s, "mode": "CRD"} if crd else {"blocksize": s}
        make_node(
            ctx.graph, ctx.namer, "DepthToSpace", conv.outputs, attrs=attrs, output=out, name=f"{base}_d2s"
        )


rules = RuleSet([ConvTransposeToConvD2S()])
