"""The graph layer: cleanup disconnects dead nodes, bypass keeps output names, names are unique."""

from __future__ import annotations

import numpy as np

from etc.graph import Namer, bypass, cleanup, consumers, to_gs
from tests.fold_helpers import graph


def test_cleanup_disconnects_dead_nodes_from_live_tensors():
    m = graph(
        "c = Conv (input, w, b)\nd = Relu(c)\noutput = Relu(input)",
        outputs="float[1,3,H,W] output",
        w=np.ones((4, 3, 1, 1), np.float32),
        b=np.zeros(4, np.float32),
    )
    g = to_gs(m)
    cleanup(g)
    assert [n.op for n in g.nodes] == ["Relu"]
    assert [n.op for n in consumers(g.inputs[0])] == ["Relu"]


def test_bypass_before_graph_output_hands_the_name_upstream():
    m = graph("r = Relu(input)\noutput = Identity(r)", outputs="float[1,3,H,W] output")
    g = to_gs(m)
    identity = next(n for n in g.nodes if n.op == "Identity")
    assert bypass(g, identity)
    cleanup(g)
    assert [n.op for n in g.nodes] == ["Relu"]
    assert g.nodes[0].outputs[0] is g.outputs[0]


def test_namer_never_reuses_a_name():
    m = graph("output = Relu(input)", outputs="float[1,3,H,W] output")
    namer = Namer.for_graph(to_gs(m))
    names = {namer("output"), namer("output"), namer("input"), namer("x"), namer("x")}
    assert len(names) == 5 and "output" not in names and "input" not in names


def test_adopting_one_output_of_a_split_keeps_the_other_in_its_slot():
    """Found by the fuzzer: taking Split output 0 must not shift output 1 into slot 0."""
    import onnx_graphsurgeon as gs

    from etc.graph import make_node

    m = graph(
        "a, b = Split <axis = 1> (input, sizes)\nx = Relu(a)\noutput = Relu(b)",
        outputs="float[1,2,H,W] output",
        sizes=np.array([1, 2], np.int64),
    )
    g = to_gs(m)
    split = next(n for n in g.nodes if n.op == "Split")
    first, second = split.outputs
    make_node(g, Namer.for_graph(g), "Relu", [g.inputs[0]], output=first)
    assert split.outputs[1] is second and split.outputs[0] is not first
    assert isinstance(split.outputs[0], gs.Variable) and not split.outputs[0].outputs
