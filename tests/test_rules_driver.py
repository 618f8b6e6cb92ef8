"""The rule driver (etc.rules): family loading, value ranges across rewrites, retiring matched nodes."""

from __future__ import annotations

import gc

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from etc.errors import LimitWarning
from etc.graph import Namer, is_retired, make_node, retire
from etc.pipeline import Options
from etc.ranges import ValueRanges
from etc.rules import Match, Rule, RuleSet, apply_rules, load_families, retire_unread


def test_a_missing_family_module_is_an_error():
    assert len(load_families(["etc.passes.fold_relu"])) == 1
    with pytest.raises(ModuleNotFoundError, match=r"'etc\.passes\.fold_nothing_here' is missing"):
        load_families(["etc.passes.fold_relu", "etc.passes.fold_nothing_here"])


def test_value_ranges_stay_right_for_tensors_created_after_others_died():
    """Intervals are remembered per tensor object: a tensor created after another one died must not inherit
    the dead one's interval (CPython reuses the memory, hence the id, of freed objects)."""
    x = gs.Variable("x", dtype=np.float32, shape=[1, 2, 5, 7])
    graph = gs.Graph(inputs=[x], outputs=[])
    ranges = ValueRanges(graph, {"x": (0.0, 1.0)})
    gc.freeze()  # the collections below scan only this test's objects, not a worker's whole heap
    try:
        _recreate_tensors_after_others_died(graph, x, ranges)
    finally:
        gc.unfreeze()


def _recreate_tensors_after_others_died(graph: gs.Graph, x: gs.Variable, ranges: ValueRanges) -> None:
    for i in range(300):
        y = gs.Variable(f"relu{i}", dtype=np.float32)
        relu = gs.Node("Relu", f"Relu{i}", inputs=[x], outputs=[y])
        graph.nodes.append(relu)
        assert ranges[y].nonnegative
        retire([relu])
        graph.nodes.remove(relu)
        del relu, y
        gc.collect()
        z = gs.Variable(f"neg{i}", dtype=np.float32)
        graph.nodes.append(gs.Node("Neg", f"Neg{i}", inputs=[x], outputs=[z]))
        assert not ranges[z].nonnegative, f"step {i}: a new tensor got a dead tensor's interval"


def test_the_driver_retires_matched_nodes_nothing_reads_any_more():
    """x -> Relu -> r -> Neg -> y (graph output), r also read by Sigmoid: a rewrite that takes over y's
    production leaves Neg unread (retired); Relu is still read by Sigmoid (kept) until that goes too."""
    x = gs.Variable("x", dtype=np.float32, shape=[1, 2, 5, 7])
    r, y, s = (gs.Variable(n, dtype=np.float32) for n in ("r", "y", "s"))
    relu = gs.Node("Relu", "relu", inputs=[x], outputs=[r])
    neg = gs.Node("Neg", "neg", inputs=[r], outputs=[y])
    sigmoid = gs.Node("Sigmoid", "sigmoid", inputs=[r], outputs=[s])
    graph = gs.Graph(nodes=[relu, neg, sigmoid], inputs=[x], outputs=[y, s])
    make_node(graph, Namer.for_graph(graph), "Abs", [x], output=y)  # takes y over from neg
    retire_unread(graph, [relu, neg])
    assert is_retired(neg) and not neg.inputs and not is_retired(relu)
    retire_unread(graph, [relu, sigmoid])  # sigmoid produces a graph output: both stay
    assert not is_retired(sigmoid) and not is_retired(relu)
    graph.outputs = [y]
    retire_unread(graph, [relu, sigmoid])  # the chain goes as a whole, whatever the order given
    assert is_retired(relu) and is_retired(sigmoid) and not r.outputs


class _OncePerSweep(Rule):
    """Renews a Relu once per sweep (it recognises a sweep by the node list cleanup leaves): never settles."""

    name = "once_per_sweep"
    ops = ("Relu",)

    def __init__(self) -> None:
        self.fired_on: list | None = None

    def match(self, ctx, node):
        return None if ctx.graph.nodes is self.fired_on else Match([node])

    def rewrite(self, ctx, match):
        self.fired_on = ctx.graph.nodes
        node = match.nodes[0]
        make_node(ctx.graph, ctx.namer, "Relu", [node.inputs[0]], output=node.outputs[0], name="Relu")


def test_running_out_of_sweeps_with_rewrites_pending_warns():
    x = gs.Variable("x", dtype=np.float32, shape=[1, 2, 5, 7])
    y = gs.Variable("y", dtype=np.float32, shape=[1, 2, 5, 7])
    graph = gs.Graph(nodes=[gs.Node("Relu", "relu", inputs=[x], outputs=[y])], inputs=[x], outputs=[y])
    with pytest.warns(LimitWarning, match="pass 'test' still had rewrites to make after 3 sweeps"):
        hits = apply_rules(graph, RuleSet([_OncePerSweep()]), Options(), pass_name="test", max_sweeps=3)
    assert hits == {"once_per_sweep": 3}
