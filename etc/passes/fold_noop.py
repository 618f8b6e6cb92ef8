"""No-op elimination: nodes that compute y = x disappear, their readers read x.

    x ─► Identity / Dropout(inference) / Clip(-inf, inf) / Pad(0) / Slice(full) / Reshape(same shape)
         / Expand(same shape) / Cast(same type) / Transpose(identity) / Mul(1) / Div(1) / Add(0) / Sub(0) ─► y
    becomes
    x ─► (readers of y)

Exact when the node really is the identity on every input it can receive: the conditions are checked per op
(e.g. a constant operand must not broadcast x to a larger shape). When y is a graph output and x a graph input,
the node stays (ONNX needs a node between them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from etc.graph import bypass, can_bypass, const_value, input_at, static_shape
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

INT64_BIG = 2**31 - 1


class NoOpRule(Rule):
    """Base: ``is_noop`` decides (or raises Decline), ``rewrite`` bypasses the data input."""

    data_input = 0

    def is_noop(self, ctx: RewriteContext, node: gs.Node) -> bool:
        raise NotImplementedError

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if len(node.inputs) <= self.data_input:
            return None
        data = node.inputs[self.data_input]
        if not self.is_noop(ctx, node) or not can_bypass(ctx.graph, data, node.outputs[0]):
            return None
        return Match([node])

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        bypass(ctx.graph, match.nodes[0], self.data_input)


class RemoveIdentity(NoOpRule):
    """Replaces Identity(x) with x."""

    name = "identity"
    ops = ("Identity",)

    def is_noop(self, ctx, node):
        return True


class RemoveDropout(NoOpRule):
    """Replaces inference-mode Dropout(x) with x (its mask output unused)."""

    name = "dropout"
    ops = ("Dropout",)

    def is_noop(self, ctx, node):
        training = input_at(node, 2)
        if training is not None:
            value = const_value(training)
            if value is None or bool(np.asarray(value).reshape(-1)[0]):
                raise Decline("Dropout may run in training mode")
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            raise Decline("the dropout mask is used")
        return True


class RemoveInfiniteClip(NoOpRule):
    """Replaces Clip(x) with no finite bound with x."""

    name = "clip_unbounded"
    ops = ("Clip",)

    def is_noop(self, ctx, node):
        for index, attr in ((1, "min"), (2, "max")):
            tensor = input_at(node, index)
            if tensor is not None:
                value = const_value(tensor)
                if value is None or np.isfinite(np.asarray(value, dtype=np.float64)).any():
                    return False
            elif attr in node.attrs and np.isfinite(node.attrs[attr]) and abs(node.attrs[attr]) < 3e38:
                return False
        return True


class RemoveZeroPad(NoOpRule):
    """Replaces Pad(x, 0) with x."""

    name = "pad_zero"
    ops = ("Pad",)

    def is_noop(self, ctx, node):
        pads = const_value(input_at(node, 1)) if input_at(node, 1) is not None else node.attrs.get("pads")
        return pads is not None and not np.any(np.asarray(pads))


class RemoveFullSlice(NoOpRule):
    """Replaces a Slice that keeps every element (starts 0, ends past the end, steps 1) with x."""

    name = "slice_full"
    ops = ("Slice",)

    def is_noop(self, ctx, node):
        starts, ends = const_value(input_at(node, 1)), const_value(input_at(node, 2))
        axes, steps = const_value(input_at(node, 3)), const_value(input_at(node, 4))
        if starts is None or ends is None:
            return False
        if (input_at(node, 3) is not None and axes is None) or (
            input_at(node, 4) is not None and steps is None
        ):
            return False
        if steps is not None and np.any(np.asarray(steps) != 1):
            return False
        if np.any(np.asarray(starts) != 0):
            return False
        shape = node.inputs[0].shape
        axes_list = list(range(len(starts))) if axes is None else [int(a) for a in axes]
        for axis, end in zip(axes_list, np.asarray(ends).reshape(-1)):
            if end >= INT64_BIG:
                continue
            dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
            if not isinstance(dim, (int, np.integer)) or end < dim:
                return False
        return True


def _same_static_shape(node: gs.Node) -> bool:
    before = static_shape(node.inputs[0])
    after = static_shape(node.outputs[0])
    return before is not None and before == after


class RemoveSameShapeReshape(NoOpRule):
    """Replaces Reshape/Flatten/Squeeze/Unsqueeze whose output shape equals its static input shape with x."""

    name = "reshape_same"
    ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

    def is_noop(self, ctx, node):
        return _same_static_shape(node)


class RemoveSameShapeExpand(NoOpRule):
    """Replaces Expand(x, shape) that cannot enlarge x (all-ones shape of lower rank, or same static shape)."""

    name = "expand_same"
    ops = ("Expand",)

    def is_noop(self, ctx, node):
        target = const_value(input_at(node, 1))
        shape = node.inputs[0].shape
        if (
            target is not None
            and shape is not None
            and len(target) <= len(shape)
            and np.all(np.asarray(target) == 1)
        ):
            return True
        return _same_static_shape(node)


class RemoveSameTypeCast(NoOpRule):
    """Replaces Cast to the type x already has with x."""

    name = "cast_same"
    ops = ("Cast",)

    def is_noop(self, ctx, node):
        import onnx

        dtype = node.inputs[0].dtype
        if dtype is None:
            return False
        try:
            target = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
        except Exception:
            return False
        return np.dtype(dtype) == np.dtype(target)


class RemoveIdentityTranspose(NoOpRule):
    """Replaces Transpose with the identity permutation with x."""

    name = "transpose_identity"
    ops = ("Transpose",)

    def is_noop(self, ctx, node):
        perm = node.attrs.get("perm")
        return perm is not None and list(perm) == list(range(len(perm)))


@dataclass(frozen=True)
class DataOperand:
    """Which operand of the arithmetic node is the data (the other is the neutral constant)."""

    index: int


class RemoveNeutralArithmetic(NoOpRule):
    """Replaces x*1, 1*x, x/1, x+0, 0+x, x-0 with x when the constant cannot broadcast x to a larger shape."""

    name = "neutral_arithmetic"
    ops = ("Mul", "Div", "Add", "Sub")
    neutral: ClassVar[dict[str, float]] = {"Mul": 1.0, "Div": 1.0, "Add": 0.0, "Sub": 0.0}
    commutative = ("Mul", "Add")

    def match(self, ctx, node):
        if len(node.inputs) != 2:
            return None
        sides = (0, 1) if node.op in self.commutative else (0,)
        for data in sides:
            value = const_value(node.inputs[1 - data])
            if value is None or const_value(node.inputs[data]) is not None:
                continue
            if value.size == 0 or not np.all(np.asarray(value, dtype=np.float64) == self.neutral[node.op]):
                continue
            if not _cannot_enlarge(node.inputs[data], value, node.outputs[0]):
                raise Decline(f"the constant {node.op} operand may broadcast the input to a larger shape")
            if not can_bypass(ctx.graph, node.inputs[data], node.outputs[0]):
                return None
            return Match([node], DataOperand(data))
        return None

    def rewrite(self, ctx, match):
        bypass(ctx.graph, match.nodes[0], match.data.index)


def _cannot_enlarge(x: gs.Tensor, value: np.ndarray, out: gs.Tensor) -> bool:
    shape = x.shape
    if shape is None:
        return value.size == 1 and value.ndim == 0
    if value.ndim > len(shape):
        return False
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    for want, have in zip(padded, shape):
        if want != 1 and not (isinstance(have, (int, np.integer)) and have == want):
            return False
    return not (x.dtype is not None and out.dtype is not None and np.dtype(x.dtype) != np.dtype(out.dtype))


rules = RuleSet(
    [
        RemoveIdentity(),
        RemoveDropout(),
        RemoveInfiniteClip(),
        RemoveZeroPad(),
        RemoveFullSlice(),
        RemoveSameShapeReshape(),
        RemoveSameShapeExpand(),
        RemoveSameTypeCast(),
        RemoveIdentityTranspose(),
        RemoveNeutralArithmetic(),
    ]
)
