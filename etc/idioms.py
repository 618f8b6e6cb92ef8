"""Activation and normalization idioms as exporters emit them, recognized as units.

onnxruntime fuses some of these chains into one kernel (the erf GELU into ``Gelu``, LayerNorm chains into
``LayerNormalization``) and an NPU compiler pattern-matches the others; a fold that moves one constant of such a
chain into a neighbouring conv (GELU's ``* 0.5``, HardSwish's ``/ 6``, LayerNorm's gamma) is exact and still
breaks the unit. The rules driver declines any match that takes some but not all nodes of an idiom
(:func:`split_idiom`).

Recognized (``x`` is the idiom's input; constants may sit on either side of a commutative op):

* gated activations ``x * f(x)`` (optionally ``* c`` or ``/ c`` after): an anchor op (Erf, Tanh, Sigmoid,
  HardSigmoid, Clip, Softplus) computed elementwise from ``x`` alone, followed by elementwise steps with constants
  up to a Mul that multiplies by ``x`` (or by ``c * x``). This covers GELU (erf: ``x/sqrt2 -> Erf -> +1 -> *x ->
  *0.5`` in any order; tanh: ``x + 0.044715 x^3 -> *sqrt(2/pi) -> Tanh -> +1 -> *x -> *0.5``), SiLU/Swish
  (``x * Sigmoid(b x)``), Mish (``x * Tanh(Softplus(x))``) and HardSwish (``x * Clip(x + 3, 0, 6) / 6``);
* HardSigmoid decomposed: ``Clip(x + 3, 0, 6) / 6`` (or ``* 1/6``);
* LayerNorm decomposed: ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps)`` with its ``* gamma`` and
  ``+ beta`` tail;
* GroupNorm as the legacy exporter writes it: ``Reshape -> InstanceNormalization -> Reshape -> * gamma + beta``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from etc.graph import const_value, consumers, producer

ANCHORS = ("Erf", "Tanh", "Sigmoid", "HardSigmoid", "Clip", "Softplus")
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow")
MEMBERS = frozenset(
    (*ANCHORS, *ELEMENTWISE, "Sqrt", "Reciprocal", "ReduceMean", "InstanceNormalization", "Reshape")
)
GATE_REACH = 4  # elementwise steps between an anchor and its gate Mul (GELU's +1 and *0.5 need 2)
INPUT_REACH = 6  # elementwise steps between x and the anchor (tanh GELU's polynomial needs 4)


@dataclass(frozen=True)
class Idiom:
    """A recognized unit: its kind (e.g. "GELU (erf)") and its nodes."""

    kind: str
    nodes: tuple[gs.Node, ...]

    def contains(self, node: gs.Node) -> bool:
        return any(node is n for n in self.nodes)


def _variable_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs if const_value(t) is None and t.name != ""]


def _single_reader(tensor: gs.Tensor) -> gs.Node | None:
    readers = consumers(tensor)
    return readers[0] if len(readers) == 1 else None


def _upstream_from(tensor: gs.Tensor, x: gs.Tensor) -> list[gs.Node] | None:
    """The elementwise nodes computing ``tensor`` from ``x`` and constants only, or None."""
    found: list[gs.Node] = []
    stack, depth = [tensor], 0
    while stack:
        t = stack.pop()
        if t is x:
            continue
        node = producer(t)
        if node is None or node.op not in (*ELEMENTWISE, "Softplus") or depth > INPUT_REACH:
            return None
        depth += 1
        if not any(node is n for n in found):
            found.append(node)
        stack.extend(_variable_inputs(node))
    return found


def _scaled_source(tensor: gs.Tensor) -> tuple[gs.Tensor, gs.Node | None]:
    """``x`` and the node when ``tensor`` is ``x * c`` or ``x / c``; else ``tensor`` itself."""
    node = producer(tensor)
    if node is None or node.op not in ("Mul", "Div") or len(_variable_inputs(node)) != 1:
        return tensor, None
    if node.op == "Div" and const_value(node.inputs[1]) is None:
        return tensor, None  # c / x
    return _variable_inputs(node)[0], node


def _constant_step(node: gs.Node) -> bool:
    return node.op in ("Add", "Sub", "Mul", "Div") and len(_variable_inputs(node)) == 1


def _scalar_step(node: gs.Node) -> bool:
    """A constant step whose constant is one number."""
    values = [const_value(t) for t in node.inputs]
    return _constant_step(node) and any(v is not None and v.size == 1 for v in values)


def gated_activation(anchor: gs.Node) -> Idiom | None:
    """``x * f(x)`` around ``anchor`` (see the module docstring), or None: from the anchor, steps with one
    constant operand down to a Mul whose other operand is ``x`` (or ``c * x``)."""
    chain = [anchor]
    tensor = anchor.outputs[0]
    for _ in range(GATE_REACH):
        reader = _single_reader(tensor)
        if reader is None:
            return None
        others = [t for t in _variable_inputs(reader) if t is not tensor]
        if reader.op == "Mul" and len(others) == 1:
            return _close_gate(anchor, chain, reader, others[0])
        if not _constant_step(reader):
            return None
        chain.append(reader)
        tensor = reader.outputs[0]
    return None


def _close_gate(anchor: gs.Node, chain: list[gs.Node], gate: gs.Node, other: gs.Tensor) -> Idiom | None:
    """The idiom when the gate's other operand is ``x`` (or ``c * x``) and the anchor is a function of ``x``."""
    x, scale = _scaled_source(other)
    candidates = [(x, scale), (other, None)] if scale is not None else [(other, None)]
    for source, scaling in candidates:
        upstream = _upstream_from(anchor.inputs[0], source)
        if upstream is None:
            continue
        nodes = [*upstream, *chain, gate, *([scaling] if scaling is not None else [])]
        reader = _single_reader(gate.outputs[0])
        if reader is not None and reader.op in ("Mul", "Div") and _scalar_step(reader):
            nodes.append(reader)  # GELU's * 0.5, HardSwish's / 6; a per-channel scale after it is no part
        return Idiom(_gated_kind(anchor, nodes), tuple(nodes))
    return None


def _gated_kind(anchor: gs.Node, nodes: list[gs.Node]) -> str:
    ops = {n.op for n in nodes}
    if anchor.op == "Erf":
        return "GELU (erf)"
    if anchor.op == "Tanh":
        return "Mish" if "Softplus" in ops else "GELU (tanh)"
    if anchor.op == "Sigmoid":
        return "SiLU/Swish"
    return "HardSwish"


def hard_sigmoid(clip: gs.Node) -> Idiom | None:
    """``Clip(x + 3, 0, 6) / 6`` (or ``* (1/6)``)."""
    pre = producer(clip.inputs[0])
    post = _single_reader(clip.outputs[0])
    if pre is None or post is None or pre.op != "Add" or not _constant_step(pre):
        return None
    if post.op not in ("Mul", "Div") or not _constant_step(post):
        return None
    return Idiom("HardSigmoid", (pre, clip, post))


def layer_norm(div: gs.Node) -> Idiom | None:
    """``(x - mean) / sqrt(var + eps)`` with its gamma/beta tail, from the Div."""
    if div.op != "Div" or len(_variable_inputs(div)) != 2:
        return None
    centred, std = div.inputs[0], div.inputs[1]
    sub, sqrt = producer(centred), producer(std)
    if sub is None or sqrt is None or sub.op != "Sub" or sqrt.op != "Sqrt":
        return None
    mean = producer(sub.inputs[1])
    add_eps = producer(sqrt.inputs[0])
    if mean is None or mean.op != "ReduceMean" or add_eps is None or add_eps.op != "Add":
        return None
    var = producer(_variable_inputs(add_eps)[0]) if _variable_inputs(add_eps) else None
    if var is None or var.op != "ReduceMean":
        return None
    square = producer(var.inputs[0])
    if square is None or square.op not in ("Pow", "Mul"):
        return None
    nodes = [mean, sub, square, var, add_eps, sqrt, div, *_affine_tail(div.outputs[0])]
    return Idiom("LayerNorm", tuple(nodes))


def group_norm(norm: gs.Node) -> Idiom | None:
    """``Reshape -> InstanceNormalization -> Reshape -> * gamma (+ beta)``, from the InstanceNormalization."""
    before, after = producer(norm.inputs[0]), _single_reader(norm.outputs[0])
    if before is None or after is None or before.op != "Reshape" or after.op != "Reshape":
        return None
    tail = _affine_tail(after.outputs[0])
    if not tail:
        return None
    return Idiom("GroupNorm", (before, norm, after, *tail))


def _affine_tail(tensor: gs.Tensor) -> list[gs.Node]:
    """The ``* gamma`` and ``+ beta`` steps with constants reading ``tensor`` (those present)."""
    tail: list[gs.Node] = []
    for op in ("Mul", "Add"):
        reader = _single_reader(tensor)
        if reader is None or reader.op != op or not _constant_step(reader):
            break
        tail.append(reader)
        tensor = reader.outputs[0]
    return tail


def _match_anchor(node: gs.Node) -> Idiom | None:
    if node.op == "Clip":
        found = gated_activation(node)
        return found if found is not None else hard_sigmoid(node)
    if node.op in ANCHORS:
        return gated_activation(node)
    if node.op == "Div":
        return layer_norm(node)
    if node.op == "InstanceNormalization":
        return group_norm(node)
    return None


def _nearby(node: gs.Node, reach: int) -> list[gs.Node]:
    """Nodes within ``reach`` producer/consumer steps of ``node`` (node included)."""
    seen, frontier = [node], [node]
    for _ in range(reach):
        step = []
        for n in frontier:
            neighbours = [producer(t) for t in n.inputs] + [c for t in n.outputs for c in consumers(t)]
            for m in neighbours:
                if m is not None and m.op in MEMBERS and not any(m is s for s in seen):
                    seen.append(m)
                    step.append(m)
        frontier = step
    return seen


def idiom_of(node: gs.Node) -> Idiom | None:
    """The idiom ``node`` belongs to, or None."""
    if node.op not in MEMBERS:
        return None
    for candidate in _nearby(node, INPUT_REACH + 2):
        if candidate.op in (*ANCHORS, "Div", "InstanceNormalization"):
            found = _match_anchor(candidate)
            if found is not None and found.contains(node):
                return found
    return None


def split_idiom(nodes: Iterable[gs.Node]) -> Idiom | None:
    """An idiom of which ``nodes`` (a rule's match) holds some but not all nodes, or None."""
    nodes = list(nodes)
    for node in nodes:
        found = idiom_of(node)
        if found is not None and not all(any(n is m for m in nodes) for n in found.nodes):
            return found
    return None
