"""PRelu / LeakyRelu as ReLU: exact identities, and the doubled-channel form (only with ``--prelu``).

    prelu(z) = relu(z) - alpha·relu(-z)          (per channel, any alpha: exact)

    x ── Conv(W, b) ── z ── PRelu(alpha) ── y ──► Conv(V, c) ──► ...
becomes
    x ── Conv([W; -W], [b; -b]) ── Relu ── [relu(z); relu(-z)] ──► Conv([V, -alpha·V], c) ──► ...

Weight algebra: the producer's rows are stacked with their negation, so the ReLU sees z and -z; every consumer
Conv reads the two halves with columns V and -alpha·V (alpha scales the input channel). Zero padding in a
consumer stays exact at the border: the padded value 0 gives relu(0) - alpha·relu(-0) = 0 = prelu(0).
When z does not come from a Conv that only feeds this PRelu, a 1x1 Conv [I; -I] (no bias) makes the two
halves instead. Grouped convs keep their groups: channels are ordered group by group, [+ half; - half] per
group; a consumer with another grouping is made dense (exact, costs weights). A consumer ConvTranspose reads
rows [Wt; -alpha·Wt].

Cost: the C channels between the convs become 2C (producer rows and consumer columns double), so the rewrite
runs only with ``Options.prelu_to_relu`` (``etc optimize --prelu``); otherwise the rule reports the cost.

Exact identities, always on:
    PRelu(z) with z >= 0 (proved by interval analysis)  ->  z
    slope all 1  ->  z;   slope all 0  ->  Relu(z)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import grouped_to_dense
from etc.cost import prelu_widening
from etc.graph import (
    ConvSpec,
    bypass,
    can_bypass,
    const_value,
    constant,
    consumers,
    conv_spec,
    conv_weights,
    input_at,
    is_graph_output,
    make_conv,
    make_conv_rows,
    make_node,
    only_consumer,
    per_channel_constant,
    producer,
    retire,
    static_channels,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def slope_of(node: gs.Node) -> np.ndarray | None:
    """The per-channel (C,) or scalar (1,) slope; None if it is not constant; raises Decline if it varies in
    space."""
    if node.op == "LeakyRelu":
        return np.array([float(node.attrs.get("alpha", 0.01))])
    value = const_value(input_at(node, 1))
    if value is None:
        return None
    flat = per_channel_constant(value)
    if flat is None:
        raise Decline(f"slope of shape {list(value.shape)} varies along a spatial or batch axis")
    return flat.astype(np.float64)


class PReluOnNonnegative(Rule):
    """Replaces PRelu/LeakyRelu of a tensor proved >= 0 with that tensor."""

    name = "prelu_nonnegative"
    ops = ("PRelu", "LeakyRelu")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        if not ctx.ranges[node.inputs[0]].nonnegative:
            return None
        if not can_bypass(ctx.graph, node.inputs[0], node.outputs[0]):
            raise Decline("input is proved >= 0 but the node maps a graph input straight to a graph output")
        return Match([node])

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        bypass(ctx.graph, match.nodes[0])


@dataclass(frozen=True)
class TrivialSlope:
    """Slope 0 (the node becomes a Relu) or slope 1 (the node is bypassed)."""

    relu: bool


class PReluTrivialSlope(Rule):
    """Replaces PRelu/LeakyRelu with slope 1 by its input and with slope 0 by Relu."""

    name = "prelu_trivial_slope"
    ops = ("PRelu", "LeakyRelu")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        try:
            slope = slope_of(node)
        except Decline:
            return None  # PReluToRelu reports it
        if slope is None:
            return None
        if np.all(slope == 0):
            return Match([node], TrivialSlope(relu=True))
        if np.all(slope == 1) and can_bypass(ctx.graph, node.inputs[0], node.outputs[0]):
            return Match([node], TrivialSlope(relu=False))
        return None

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        (node,) = match.nodes
        if not match.data.relu:
            bypass(ctx.graph, node)
            return
        x, y = node.inputs[0], node.outputs[0]
        retire([node])
        make_node(ctx.graph, ctx.namer, "Relu", [x], output=y, name=node.name or "Relu")


def _sign_order(count: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Doubled channel n is (source channel, sign): per group, the + half then the - half."""
    per = count // group
    source, sign = [], []
    for g in range(group):
        members = list(range(g * per, (g + 1) * per))
        source += members + members
        sign += [1.0] * per + [-1.0] * per
    return np.array(source, dtype=np.int64), np.array(sign)


def _owned_conv(ctx: RewriteContext, z: gs.Tensor, node: gs.Node) -> gs.Node | None:
    """The Conv producing ``z`` when ``node`` is its only reader and its weights are constant."""
    conv = producer(z)
    if conv is None or conv.op != "Conv" or conv_spec(conv) is None:
        return None
    if input_at(conv, 2) is not None and const_value(input_at(conv, 2)) is None:
        return None
    return conv if only_consumer(ctx.graph, z, node) else None


def _check_consumer(y: gs.Tensor, user: gs.Node) -> None:
    """Raises Decline unless ``user`` is a Conv/ConvTranspose with constant weights reading ``y`` as its data."""
    if user.op not in ("Conv", "ConvTranspose"):
        raise Decline(f"consumer {user.name} is {user.op}, not a Conv; it needs prelu(z) itself")
    if any(t is y for t in user.inputs[1:]) or user.inputs[0] is not y:
        raise Decline(f"consumer {user.name} reads the PRelu output as weights or bias")
    if const_value(input_at(user, 1)) is None or (
        input_at(user, 2) is not None and const_value(input_at(user, 2)) is None
    ):
        raise Decline(f"consumer {user.name} has non-constant weights")
    if user.op == "Conv" and conv_spec(user) is None:
        raise Decline(f"consumer {user.name} is not a 2-D Conv with explicit padding")
    if user.op == "ConvTranspose" and const_value(input_at(user, 1)).ndim != 4:
        raise Decline(f"consumer {user.name} is not a 2-D ConvTranspose")


@dataclass(frozen=True)
class Doubling:
    """The producer Conv (or None: a 1x1 [I; -I] makes the halves), the slopes per channel, the channel count,
    the grouping of the doubled channels and the consumer Convs that read them."""

    conv: gs.Node | None
    alpha: np.ndarray
    count: int
    group: int
    users: list[gs.Node]


class PReluToRelu(Rule):
    """Replaces Conv -> PRelu/LeakyRelu -> Conv(s) with Conv [W; -W] -> Relu -> Conv(s) [V, -alpha V]."""

    name = "prelu_to_relu"
    ops = ("PRelu", "LeakyRelu")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        slope = slope_of(node)
        if slope is None:
            raise Decline("slope is not constant")
        z, y = node.inputs[0], node.outputs[0]
        if is_graph_output(ctx.graph, y):
            raise Decline("the PRelu output is a graph output; the ReLU form has no single tensor for it")
        users = consumers(y)
        if not users:
            return None
        for user in users:
            _check_consumer(y, user)
        conv = _owned_conv(ctx, z, node)
        count = self._channels(z, conv, slope, users)
        if count is None:
            raise Decline("channel count of the PRelu input is unknown")
        if slope.size not in (1, count):
            raise Decline(f"slope has {slope.size} values for {count} channels")
        group = self._group(conv, users, count)
        groups = {int(u.attrs.get("group", 1)) for u in users if u.op == "ConvTranspose"}
        if any(g not in (1, group) for g in groups):
            raise Decline("a grouped ConvTranspose consumer does not share the producer's grouping")
        if not ctx.options.prelu_to_relu:
            raise Decline(self._cost(count, conv, users))
        alpha = np.broadcast_to(slope, (count,)).astype(np.float64)
        widening = prelu_widening(conv, users, count)  # cost declaration (etc.cost)
        return Match([node], Doubling(conv, alpha, count, group, users), widening)

    @staticmethod
    def _channels(z, conv, slope, users) -> int | None:
        if conv is not None:
            return int(const_value(input_at(conv, 1)).shape[0])
        if slope.size > 1:
            return int(slope.size)
        known = static_channels(z)
        if known is not None:
            return known
        user = users[0]
        weight = const_value(input_at(user, 1))
        if user.op == "ConvTranspose":
            return int(weight.shape[0])
        return int(weight.shape[1]) * int(user.attrs.get("group", 1))

    @staticmethod
    def _group(conv, users, count: int) -> int:
        """How the doubled channels are grouped: the producer's groups, else the consumers' common groups."""
        if conv is not None:
            return conv_spec(conv).group
        groups = {int(u.attrs.get("group", 1)) for u in users}
        return groups.pop() if len(groups) == 1 else 1

    @staticmethod
    def _cost(count: int, conv, users) -> str:
        added = sum(int(const_value(input_at(u, 1)).size) for u in users)
        if conv is not None:
            added += int(const_value(input_at(conv, 1)).size) + count
        else:
            added += 2 * count * count
        return (
            f"PRelu -> ReLU is exact but doubles {count} channels to {2 * count} (+{added} weights, about as "
            "many more MACs per pixel); enable it with --prelu (Options.prelu_to_relu)"
        )

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        (node,) = match.nodes
        plan: Doubling = match.data
        conv, alpha, count, group = plan.conv, plan.alpha, plan.count, plan.group
        source, sign = _sign_order(count, group)
        z, base = node.inputs[0], node.name or "prelu"
        if conv is not None:
            pos = make_conv_rows(ctx.graph, ctx.namer, conv, source, sign, name=f"{conv.name or 'conv'}_pm")
            retire([conv])
        else:
            per = count // group
            eye = np.zeros((2 * count, per, 1, 1))
            eye[np.arange(2 * count), source % per, 0, 0] = sign
            spec = ConvSpec(kernel=(1, 1), pads=(0, 0, 0, 0), group=group)
            pos = make_conv(ctx.graph, ctx.namer, z, eye, None, spec, name=f"{base}_pm")
        relu = make_node(ctx.graph, ctx.namer, "Relu", pos.outputs, name=f"{base}_relu")
        factor = np.where(sign > 0, 1.0, -alpha[source])
        for user in plan.users:
            _rewire_consumer(ctx, user, relu.outputs[0], source, factor, group)
        retire([node])


def _rewire_consumer(
    ctx: RewriteContext, user: gs.Node, doubled: gs.Tensor, source: np.ndarray, factor: np.ndarray, group: int
) -> None:
    """Rebuilds a consumer Conv/ConvTranspose to read the doubled channels (columns scaled by ``factor``)."""
    weight, bias = conv_weights(user)
    has_bias = input_at(user, 2) is not None
    out = user.outputs[0]
    if user.op == "ConvTranspose":
        new_weight = weight[source] * factor[:, None, None, None]
        attrs = dict(user.attrs)
        inputs = [doubled, constant(ctx.namer, f"{user.name}.weight", new_weight)]
        if has_bias:
            inputs.append(constant(ctx.namer, f"{user.name}.bias", bias))
        retire([user])
        make_node(ctx.graph, ctx.namer, "ConvTranspose", inputs, attrs=attrs, output=out, name=user.name)
        return
    spec = conv_spec(user)
    dense = grouped_to_dense(weight, spec.group)[:, source] * factor[None, :, None, None]
    if spec.group == group and group > 1:
        rows_per, cols_per = dense.shape[0] // group, dense.shape[1] // group
        new_weight = np.concatenate(
            [
                dense[g * rows_per : (g + 1) * rows_per, g * cols_per : (g + 1) * cols_per]
                for g in range(group)
            ]
        )
        new_spec = spec
    else:
        new_weight = dense
        new_spec = ConvSpec(spec.kernel, spec.pads, spec.strides, spec.dilations, 1)
    retire([user])
    make_conv(
        ctx.graph,
        ctx.namer,
        doubled,
        new_weight,
        bias if has_bias else None,
        new_spec,
        output=out,
        name=user.name or "Conv",
    )


rules = RuleSet([PReluOnNonnegative(), PReluTrivialSlope(), PReluToRelu()])
