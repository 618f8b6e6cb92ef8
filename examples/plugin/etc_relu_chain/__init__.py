"""An example ETC plug-in pass: chains of Relu collapse to one.

    before                    after
    x -> Relu -> Relu -> y    x -> Relu -> y      (the inner Relu goes when nothing else reads it)

relu(relu(x)) = relu(x) for every x, so the rule needs no exactness condition beyond the pattern itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from etc.graph import producer
from etc.rules import Match, RewriteContext, Rule, RulePass, RuleSet

__all__ = ["ReluChainPass", "ReluOfRelu"]


@dataclass(frozen=True)
class InnerRelu:
    """The Relu feeding the matched one."""

    node: gs.Node


class ReluOfRelu(Rule):
    """Replaces Relu(Relu(x)) with Relu(x)."""

    name = "relu_of_relu"
    ops = ("Relu",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        inner = producer(node.inputs[0])
        if inner is None or inner.op != "Relu":
            return None
        return Match([node], InnerRelu(inner))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        outer, inner = match.nodes[0], match.data.node
        outer.inputs[0] = inner.inputs[0]  # the outer Relu keeps its output tensor, so nothing is renamed


class ReluChainPass(RulePass):
    """Collapses chains of Relu into one Relu."""

    name = "relu_chain"
    summary = "collapse Relu(Relu(x)) to Relu(x) (example plug-in)"
    rules = RuleSet([ReluOfRelu()])
