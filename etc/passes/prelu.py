"""``prelu``: the PRelu family of ``et`` alone (see etc.passes.et_prelu for the rules and the algebra).

Naming the pass is the opt-in: it rewrites PRelu/LeakyRelu as ReLU on doubled channels whether or not
``--prelu`` (Options.prelu_to_relu) was given. Inside ``et`` the doubling stays behind that option.
"""

from __future__ import annotations

import dataclasses

import onnx

from etc.passes.et_prelu import rules as prelu_rules
from etc.pipeline import WIDEN, PassContext, PassResult
from etc.rules import RulePass


class PReluPass(RulePass):
    """Rewrites PRelu/LeakyRelu as ReLU: identities always, Conv->PRelu->Conv on doubled channels."""

    name = "prelu"
    phase = WIDEN
    rank = 0
    summary = "PRelu/LeakyRelu -> ReLU on doubled channels (exact; naming the pass opts in to the cost)"
    rules = prelu_rules

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        options = dataclasses.replace(ctx.options, prelu_to_relu=True)
        inner = dataclasses.replace(ctx, options=options)  # same declines, notes, cache and cost budget
        return super().run(model, inner)
