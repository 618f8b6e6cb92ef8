"""Adapters: our passes inside onnx-ir/onnxscript pass managers, onnxsim's custom_rewriter and graphsurgeon.

Every test runs the real host library on a small RepVGG-style block (3x3 conv + BN, 1x1 branch, identity, ReLU,
pixel shuffle) and checks both the op list the host hands back and equivalence in onnxruntime (odd sizes too).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx_ir as ir
import onnx_ir.passes.common as ir_common
import pytest
from onnx import TensorProto, helper, numpy_helper

from etc.errors import EquivalenceError
from etc.pipeline import Pass, PassContext, PassResult
from etc.testing import assert_equivalent, op_types, random_conv_weights

PLAIN = ["Conv", "Relu", "Conv", "DepthToSpace"]


def repvgg_block(channels: int = 4, seed: int = 0) -> onnx.ModelProto:
    """x -> Relu(BN(Conv3x3 x) + Conv1x1 x + x) -> Conv3x3 (12 ch) -> DepthToSpace(2, CRD), dynamic H/W."""
    rng = np.random.default_rng(seed)
    c = channels
    w3, b3 = random_conv_weights(rng, c, c, 3, 3)
    w1, b1 = random_conv_weights(rng, c, c, 1, 1)
    wo, bo = random_conv_weights(rng, 12, c, 3, 3)
    bn = {
        "scale": rng.uniform(0.5, 1.5, c),
        "bias": rng.normal(0, 0.1, c),
        "mean": rng.normal(0, 0.1, c),
        "var": rng.uniform(0.5, 1.5, c),
    }
    inits = {"w3": w3, "b3": b3, "w1": w1, "b1": b1, "wo": wo, "bo": bo, **bn}
    nodes = [
        helper.make_node("Conv", ["input", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c3", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Add", ["bn", "c1"], ["s1"], name="add1"),
        helper.make_node("Add", ["s1", "input"], ["s2"], name="add2"),
        helper.make_node("Relu", ["s2"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wo", "bo"], ["co"], name="conv_out", pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["co"], ["output"], name="d2s", blocksize=2, mode="CRD"),
    ]
    graph = helper.make_graph(
        nodes,
        "repvgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H2", "W2"])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


class BreakingPass(Pass):
    """A deliberately wrong pass (negates the first Conv bias) to prove the numeric check runs."""

    name = "breaking"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        conv = next(n for n in out.graph.node if n.op_type == "Conv" and len(n.input) > 2)
        for init in out.graph.initializer:
            if init.name == conv.input[2]:
                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init) - 1.0, init.name))
                return PassResult(out, True, {"flip": 1})
        return PassResult(model, False)


# ---------------------------------------------------------------- onnx-ir / onnxscript


def test_onnx_ir_pass_manager_runs_our_pipeline():
    from etc.adapters.onnx_ir import EtcPass

    model = repvgg_block()
    source = ir.from_proto(model)
    before = [n.op_type for n in source.graph]
    ours = EtcPass("fold,rep")
    manager = ir.passes.PassManager([ours, ir_common.RemoveUnusedNodesPass()], steps=2)
    result = manager(source)
    assert result.modified
    assert isinstance(result.model, ir.Model)
    assert [n.op_type for n in result.model.graph] == PLAIN
    assert [n.op_type for n in source.graph] == before, "a functional pass must not touch its input"
    assert ours.last_result is not None and any(k.startswith("rep/") for k in ours.hits), ours.hits
    out = ir.to_proto(result.model)
    assert_equivalent(model, out)


def test_onnx_ir_pass_reports_unmodified_and_returns_a_new_model():
    from etc.adapters.onnx_ir import EtcPass

    plain = ir.to_proto(EtcPass("fold,rep")(ir.from_proto(repvgg_block())).model)
    source = ir.from_proto(plain)
    result = EtcPass("fold,rep")(source)
    assert not result.modified
    assert result.model is not source
    assert [n.op_type for n in result.model.graph] == PLAIN


def test_onnx_ir_pass_composes_with_onnxscript_rewriter_and_optimizer():
    import onnxscript.optimizer
    from onnxscript.rewriter import RewritePass, pattern

    from etc.adapters.onnx_ir import EtcPass

    def relu_relu(op, x):
        return op.Relu(op.Relu(x))

    def single_relu(op, x):
        return op.Relu(x)

    rule = pattern.RewriteRule(relu_relu, single_relu)
    model = repvgg_block()
    # Put a doubled Relu in for onnxscript's rule to remove, ahead of our pass.
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.output[0] = "r0"
    model.graph.node.insert(
        list(model.graph.node).index(relu) + 1, helper.make_node("Relu", ["r0"], ["r"], name="relu_again")
    )
    manager = ir.passes.PassManager([RewritePass([rule]), EtcPass("fold,rep")])
    result = manager(ir.from_proto(model))
    onnxscript.optimizer.optimize_ir(result.model)
    assert [n.op_type for n in result.model.graph] == PLAIN
    assert_equivalent(model, ir.to_proto(result.model))


def test_onnx_ir_pass_raises_through_the_manager_when_a_pass_breaks_equivalence():
    from etc.adapters.onnx_ir import EtcPass

    manager = ir.passes.PassManager([EtcPass([BreakingPass()])])
    with pytest.raises(ir.passes.PassError) as info:
        manager(ir.from_proto(repvgg_block()))
    chain = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    assert any(isinstance(e, EquivalenceError) and "breaking" in str(e) for e in chain)


# ---------------------------------------------------------------- onnxsim


def test_onnxsim_custom_rewriter_runs_inside_simplify():
    import onnxsim

    from etc.adapters.onnxsim import EtcRewriter

    model = repvgg_block()
    rewriter = EtcRewriter("fold,rep")
    simplified, ok = onnxsim.simplify(model, custom_rewriter=rewriter)
    assert ok
    assert rewriter.calls >= 1
    assert any(k.startswith("rep/") for k in rewriter.hits), rewriter.hits
    assert op_types(simplified) == PLAIN
    assert_equivalent(model, simplified)


def test_onnxsim_rewriter_returns_false_when_nothing_changes():
    from etc.adapters.onnxsim import EtcRewriter, simplify

    plain, ok = simplify(repvgg_block(), "fold,rep")
    assert ok and op_types(plain) == PLAIN
    assert EtcRewriter("fold,rep")(plain) is False


def test_onnxsim_rewriter_refuses_a_breaking_pass():
    import onnxsim

    from etc.adapters.onnxsim import EtcRewriter

    with pytest.raises(EquivalenceError, match="breaking"):
        onnxsim.simplify(repvgg_block(), custom_rewriter=EtcRewriter([BreakingPass()]))


# ---------------------------------------------------------------- onnx-graphsurgeon


def test_graphsurgeon_graph_in_graph_out():
    from etc.adapters.graphsurgeon import optimize_graph_with_result

    model = repvgg_block()
    graph = gs.import_onnx(model)
    before = [n.op for n in graph.nodes]
    out, result = optimize_graph_with_result(graph, "fold,rep")
    assert isinstance(out, gs.Graph) and out is not graph
    assert [n.op for n in out.nodes] == PLAIN
    assert [n.op for n in graph.nodes] == before, "the input graph must stay as it was"
    assert [t.name for t in out.inputs] == ["input"] and [t.name for t in out.outputs] == ["output"]
    assert out.opset == graph.opset
    assert "fold/bn_into_conv" in result.hits or any(k.startswith("fold/") for k in result.hits)
    assert_equivalent(model, gs.export_onnx(out))


def test_graphsurgeon_graph_built_with_the_gs_api():
    from etc.adapters.graphsurgeon import graph_to_model, optimize_graph

    rng = np.random.default_rng(1)
    x = gs.Variable("input", np.float32, [1, 3, "H", "W"])
    w, b = random_conv_weights(rng, 3, 3, 3, 3)
    graph = gs.Graph(inputs=[x], opset=17)
    conv = graph.layer(
        op="Conv",
        inputs=[x, gs.Constant("w", w), gs.Constant("b", b)],
        outputs=["conv"],
        attrs={"pads": [1, 1, 1, 1]},
    )[0]
    scale = gs.Constant("two", np.full((1, 3, 1, 1), 2.0, np.float32))
    mul = graph.layer(op="Mul", inputs=[conv, scale], outputs=["mul"])[0]
    y = graph.layer(op="Relu", inputs=[mul], outputs=["output"])[0]
    y.dtype, y.shape = np.float32, [1, 3, "H", "W"]
    graph.outputs = [y]
    out = optimize_graph(graph, "fold")
    assert [n.op for n in out.nodes] == ["Conv", "Relu"]
    assert graph_to_model(out).ir_version == 8  # the lowest IR version for opset 17
    assert_equivalent(graph_to_model(graph), graph_to_model(out))
