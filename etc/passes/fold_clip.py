"""Nested clamps become one Clip.

    Clip(Clip(x, a1, b1), a2, b2)   ─► Clip(x, max(a1, a2), min(b1, b2))
    Clip(Relu(x), a, b)             ─► Clip(x, max(0, a), b)          (Relu is Clip(x, 0, +inf))

PyTorch code spells one clamp as two all the time: ``x.clamp(min=0).clamp(max=1)``, ``F.relu(x).clamp(0, 1)``,
``torch.clamp(F.hardtanh(x), ...)``. One Clip is one op less, and a single [0, 1] Clip is what et's clip rules
turn into Conv/ReLU form.

Exact when the two intervals meet: with y = clip(x, a1, b1) in [a1, b1], clipping y to [a2, b2] gives x clipped
to the intersection [max(a1, a2), min(b1, b2)] provided max(a1, a2) <= min(b1, b2). When the intervals are
disjoint (b1 < a2, say) the nested form is the constant a2 while the merged bounds would cross, so the rule
declines. A missing bound is -inf / +inf. The bounds must be scalar constants (per-element bounds are not a
Clip's business), and the inner op must have no other reader (otherwise both would stay and nothing is saved).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import const_value, constant, input_at, is_graph_output, make_node, producer
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


@dataclass(frozen=True)
class NestedClip:
    """The outer clamp's input x (the inner op's input) and the merged bounds."""

    x: gs.Tensor
    low: float
    high: float


def clip_bounds(node: gs.Node) -> tuple[float, float]:
    """A Clip's (low, high) as floats (missing bounds are infinite); a Relu is (0, +inf)."""
    if node.op == "Relu":
        return 0.0, float("inf")
    return _bound(node, 1, "min", -np.inf), _bound(node, 2, "max", np.inf)


def _bound(node: gs.Node, index: int, attr: str, default: float) -> float:
    tensor = input_at(node, index)
    if tensor is None:
        return float(node.attrs.get(attr, default))  # opset 6 keeps the bounds as attributes
    value = const_value(tensor)
    if value is None:
        raise Decline(f"the Clip's {attr} bound is computed at run time", node)
    if value.size != 1:
        raise Decline(f"the Clip's {attr} bound is not a scalar", node)
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


class ClipOfClip(Rule):
    """Replaces Clip(Clip(x) or Relu(x)) with one Clip on the intersected bounds."""

    name = "clip_clip"
    ops = ("Clip",)

    def match(self, ctx, node):
        inner = producer(node.inputs[0])
        if inner is None or inner.op not in ("Clip", "Relu"):
            return None
        if len(inner.outputs[0].outputs) != 1 or is_graph_output(ctx.graph, inner.outputs[0]):
            raise Decline(f"the inner {inner.op} has other readers; merging would keep both", inner)
        a1, b1 = clip_bounds(inner)
        a2, b2 = clip_bounds(node)
        low, high = max(a1, a2), min(b1, b2)
        if low > high:
            raise Decline(
                f"the intervals [{a1}, {b1}] and [{a2}, {b2}] are disjoint: the nested form is constant"
            )
        return Match([node, inner], NestedClip(inner.inputs[0], low, high))

    def rewrite(self, ctx, match):
        outer = match.nodes[0]
        found: NestedClip = match.data
        inputs = [found.x, _scalar(ctx, "clip_min", found.low), _scalar(ctx, "clip_max", found.high)]
        make_node(ctx.graph, ctx.namer, "Clip", inputs, output=outer.outputs[0], name=f"{outer.name}_merged")


def _scalar(ctx: RewriteContext, base: str, value: float) -> gs.Constant | gs.Variable:
    """A float32 scalar bound, or the empty input when it is infinite (Clip's 'no bound')."""
    if not np.isfinite(value):
        return gs.Variable.empty()
    return constant(ctx.namer, base, np.array(value, np.float32))


rules = RuleSet([ClipOfClip()])
