"""Constant folding: nodes whose inputs are all known become initializers.

    Constant() ─► X                         X (initializer)
    Shape(x) with x of static shape   ─►    [1, 3, 32, 32] (initializer)
    Slice(Shape(x), 0, 2) of static dims ─► [1, 3]          (even when H/W are dynamic)
    Add(c1, c2), Reshape(c, s), ...   ─►    its value

Values are computed with onnx's reference evaluator on a one-node model. Exact by construction: the result is
what the node computes. Random ops, ops with subgraphs and results over 16 MB are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from etc.graph import const_value, input_at, is_empty_input, is_graph_output, producer, replace_uses
from etc.rules import ANY_OP, Decline, Match, RewriteContext, Rule, RuleSet

MAX_FOLDED_BYTES = 16 * 2**20
NEVER_FOLD = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "If",
        "Loop",
        "Scan",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)


def _to_initializer(ctx: RewriteContext, node: gs.Node, values: list[np.ndarray]) -> bool:
    """Replaces every output of ``node`` with a constant; False if an output is a graph output."""
    if any(is_graph_output(ctx.graph, out) for out in node.outputs):
        return False
    for out, value in zip(node.outputs, values):
        replace_uses(ctx.graph, out, gs.Constant(ctx.namer(out.name or "folded"), np.asarray(value)))
    return True


def evaluate_node(node: gs.Node, inputs: list[np.ndarray | None], opset: int = 18) -> list[np.ndarray]:
    """Runs one node on constant inputs with onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    outs = [f"o{k}" for k in range(len(node.outputs))]
    proto = onnx.helper.make_node(node.op, names, outs, domain=node.domain or "", **_plain_attrs(node))
    graph = onnx.helper.make_graph(
        [proto],
        "fold",
        [],
        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs],
        initializer=[
            onnx.numpy_helper.from_array(np.asarray(v), n) for v, n in zip(inputs, names) if v is not None
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, {})]


def _plain_attrs(node: gs.Node) -> dict:
    attrs = {}
    for key, value in node.attrs.items():
        if isinstance(value, gs.Constant):
            value = onnx.numpy_helper.from_array(np.asarray(value.values), key)
        elif isinstance(value, gs.Tensor):
            raise ValueError("tensor attribute")
        attrs[key] = value
    return attrs


@dataclass(frozen=True)
class FoldedValues:
    """The value of each output of the matched node."""

    values: list[np.ndarray]


class ConstantNodeToInitializer(Rule):
    """Replaces a Constant node with an initializer."""

    name = "constant_node"
    ops = ("Constant",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        value = const_value(node.outputs[0])
        if value is None or is_graph_output(ctx.graph, node.outputs[0]):
            return None
        return Match([node], FoldedValues([value]))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        _to_initializer(ctx, match.nodes[0], match.data.values)


class FoldConstantNode(Rule):
    """Replaces a node whose inputs are all constants with its value."""

    name = "constant_fold"
    ops = (ANY_OP,)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if node.op in NEVER_FOLD or node.op == "Constant" or not node.inputs:
            return None
        values = []
        for tensor in node.inputs:
            if is_empty_input(tensor):
                values.append(None)
                continue
            value = const_value(tensor)
            if value is None:
                return None
            values.append(value)
        if any(is_graph_output(ctx.graph, out) for out in node.outputs):
            return None
        try:
            results = evaluate_node(node, values, int(ctx.graph.opset or 18))
        except Exception as exc:  # the evaluator lacks the op or the attrs are unusual: leave it
            raise Decline(
                f"could not evaluate {node.op}: {str(exc).splitlines()[0][:120] if str(exc) else exc}"
            ) from None
        if sum(r.nbytes for r in results) > MAX_FOLDED_BYTES:
            raise Decline("folded value would exceed 16 MB")
        return Match([node], FoldedValues(results))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        _to_initializer(ctx, match.nodes[0], match.data.values)


def _static_dims(tensor: gs.Tensor) -> list[int | None] | None:
    shape = tensor.shape
    if shape is None:
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None for d in shape]


def _shape_slice(rank: int, start: int, end: int | None) -> range:
    start = start + rank if start < 0 else start
    end = rank if end is None else (end + rank if end < 0 else end)
    return range(max(0, min(start, rank)), max(0, min(end, rank)))


class StaticShape(Rule):
    """Replaces Shape(x) with a constant when the requested dims of x are static."""

    name = "static_shape"
    ops = ("Shape",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        dims = _static_dims(node.inputs[0])
        if dims is None or is_graph_output(ctx.graph, node.outputs[0]):
            return None
        picked = [
            dims[i] for i in _shape_slice(len(dims), int(node.attrs.get("start", 0)), node.attrs.get("end"))
        ]
        if any(d is None for d in picked):
            return None
        return Match([node], FoldedValues([np.asarray(picked, dtype=np.int64)]))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        _to_initializer(ctx, match.nodes[0], match.data.values)


class StaticPartOfShape(Rule):
    """Replaces Slice(Shape(x), a, b) or Gather(Shape(x), i) with a constant when those dims of x are static."""

    name = "static_part_of_shape"
    ops = ("Slice", "Gather")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        shape_node = producer(node.inputs[0])
        if shape_node is None or shape_node.op != "Shape" or is_graph_output(ctx.graph, node.outputs[0]):
            return None
        dims = _static_dims(shape_node.inputs[0])
        if dims is None:
            return None
        dims = [
            dims[i]
            for i in _shape_slice(
                len(dims), int(shape_node.attrs.get("start", 0)), shape_node.attrs.get("end")
            )
        ]
        index = np.arange(len(dims))
        if node.op == "Gather":
            which = const_value(input_at(node, 1))
            if which is None:
                return None
            picked_idx = np.asarray(index[np.asarray(which)])
        else:
            starts, ends = const_value(input_at(node, 1)), const_value(input_at(node, 2))
            axes, steps = const_value(input_at(node, 3)), const_value(input_at(node, 4))
            if starts is None or ends is None or (axes is not None and list(axes) not in ([0], [-1])):
                return None
            step = int(steps[0]) if steps is not None else 1
            picked_idx = index[slice(int(starts[0]), int(ends[0]), step)]
        picked = np.asarray([dims[int(i)] for i in picked_idx.reshape(-1)], dtype=object).reshape(
            picked_idx.shape
        )
        if any(d is None for d in picked.reshape(-1)):
            return None
        return Match([node], FoldedValues([picked.astype(np.int64)]))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        _to_initializer(ctx, match.nodes[0], match.data.values)


rules = RuleSet([ConstantNodeToInitializer(), StaticShape(), StaticPartOfShape(), FoldConstantNode()])
