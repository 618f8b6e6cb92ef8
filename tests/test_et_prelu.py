"""PRelu/LeakyRelu -> ReLU: exact identities always, the doubled-channel form only when asked."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from etc.graph import to_gs
from etc.passes import et_prelu
from etc.pipeline import Options, PassContext, get_pass
from etc.rules import NoMatch, RewriteContext, RulePass
from etc.testing import assert_equivalent, op_types

SIGNED = {"x": (-1.0, 1.0)}


class _Family(RulePass):
    name = "et_prelu"
    rules = et_prelu.rules


def run(model: onnx.ModelProto, **options):
    """Applies the family; inputs are declared signed unless the test says otherwise."""
    options.setdefault("input_ranges", SIGNED)
    ctx = PassContext(Options(**options))
    return _Family().run(model, ctx), ctx


def weights(model: onnx.ModelProto, node_index: int) -> np.ndarray:
    node = model.graph.node[node_index]
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    return onnx.numpy_helper.to_array(init)


def build(nodes, inits: dict[str, np.ndarray], cin: int = 3, outputs=("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, "H", "W"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, None, None, None]) for o in outputs],
        [onnx.numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def conv_prelu_conv(
    rng,
    c: int = 4,
    slope: np.ndarray | float | None = None,
    k0: int = 3,
    k1: int = 3,
    group0: int = 1,
    group1: int = 1,
    bias: bool = True,
    cin: int = 3,
    cout: int = 2,
    leaky: bool = False,
) -> onnx.ModelProto:
    inits = {
        "w0": rng.normal(0, 0.5, (c, cin // group0, k0, k0)),
        "w1": rng.normal(0, 0.5, (cout, c // group1, k1, k1)),
    }
    if bias:
        inits |= {"b0": rng.normal(0, 0.3, c), "b1": rng.normal(0, 0.3, cout)}
    bias_in = (["b0"], ["b1"]) if bias else ([], [])
    act = (
        helper.make_node("LeakyRelu", ["z"], ["a"], alpha=float(slope if slope is not None else 0.1))
        if leaky
        else helper.make_node("PRelu", ["z", "slope"], ["a"], name="prelu")
    )
    if not leaky:
        inits["slope"] = rng.uniform(-0.5, 1.5, (c, 1, 1)) if slope is None else slope
    nodes = [
        helper.make_node("Conv", ["x", "w0", *bias_in[0]], ["z"], pads=[k0 // 2] * 4, group=group0),
        act,
        helper.make_node("Conv", ["a", "w1", *bias_in[1]], ["y"], pads=[k1 // 2] * 4, group=group1),
    ]
    return build(nodes, inits, cin)


def decline(model: onnx.ModelProto, rule, **options) -> str:
    graph = to_gs(model)
    ctx = RewriteContext(graph, Options(**options))
    node = next(n for n in graph.nodes if n.op in rule.ops)
    found = rule.find(ctx, node)
    assert isinstance(found, NoMatch), found
    return found.reason


def test_conv_prelu_conv_becomes_doubled_relu(rng):
    model = conv_prelu_conv(rng, c=5)
    result, _ = run(model, prelu_to_relu=True)
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert weights(result.model, 0).shape == (10, 3, 3, 3)
    assert weights(result.model, 2).shape == (2, 10, 3, 3)
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_leaky_relu_scalar_alpha(rng):
    model = conv_prelu_conv(rng, leaky=True, slope=0.2)
    result, _ = run(model, prelu_to_relu=True)
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_scalar_prelu_slope(rng):
    model = conv_prelu_conv(rng, slope=np.array([-0.3]))
    result, _ = run(model, prelu_to_relu=True)
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_option_off_declines_with_the_cost(rng):
    model = conv_prelu_conv(rng, c=6)
    result, ctx = run(model)
    assert not result.modified
    reasons = [d.reason for d in ctx.declines if d.rule == "prelu_to_relu"]
    assert reasons and "--prelu" in reasons[0] and "6 channels to 12" in reasons[0]


def test_depthwise_producer_and_consumer_keep_their_groups(rng):
    model = conv_prelu_conv(rng, c=4, cin=4, group0=4, group1=4, cout=4)
    result, _ = run(model, prelu_to_relu=True)
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert weights(result.model, 0).shape == (8, 1, 3, 3)
    assert weights(result.model, 2).shape == (4, 2, 3, 3)
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_consumer_with_other_grouping_is_made_dense(rng):
    model = conv_prelu_conv(rng, c=4, group1=2, cout=4)
    result, _ = run(model, prelu_to_relu=True)
    assert weights(result.model, 2).shape == (4, 8, 3, 3)
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_shared_producer_gets_a_1x1_plus_minus_identity(rng):
    model = conv_prelu_conv(rng, c=3)
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, None, None]))
    result, _ = run(model, prelu_to_relu=True)
    assert op_types(result.model) == ["Conv", "Conv", "Relu", "Conv"]
    assert weights(result.model, 1).shape == (6, 3, 1, 1)
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_several_consumers_including_conv_transpose(rng):
    inits = {
        "w0": rng.normal(0, 0.5, (4, 3, 3, 3)),
        "slope": rng.uniform(-0.5, 0.5, (1, 4, 1, 1)),
        "w1": rng.normal(0, 0.5, (2, 4, 1, 1)),
        "wt": rng.normal(0, 0.5, (4, 2, 4, 4)),
        "bt": rng.normal(0, 0.5, 2),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["z", "slope"], ["a"]),
        helper.make_node("Conv", ["a", "w1"], ["y"]),
        helper.make_node("ConvTranspose", ["a", "wt", "bt"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1]),
    ]
    model = build(nodes, inits, outputs=("y", "t"))
    result, _ = run(model, prelu_to_relu=True)
    assert sorted(op_types(result.model)) == ["Conv", "Conv", "ConvTranspose", "Relu"]
    assert_equivalent(model, result.model, input_ranges=SIGNED)


def test_declines_when_a_consumer_is_not_a_conv(rng):
    inits = {"w0": rng.normal(0, 0.5, (3, 3, 3, 3)), "slope": np.full((3, 1, 1), 0.25)}
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["z", "slope"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["y"]),
    ]
    model = build(nodes, inits)
    assert "not a Conv" in decline(model, et_prelu.PReluToRelu(), prelu_to_relu=True)
    result, _ = run(model, prelu_to_relu=True)
    assert not result.modified


def test_declines_when_the_prelu_output_is_a_graph_output(rng):
    model = conv_prelu_conv(rng)
    model.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4, None, None]))
    assert "graph output" in decline(model, et_prelu.PReluToRelu(), prelu_to_relu=True)


def test_declines_a_spatially_varying_slope(rng):
    model = conv_prelu_conv(rng, slope=rng.uniform(0.1, 0.2, (4, 1, 5)))
    assert "spatial" in decline(model, et_prelu.PReluToRelu(), prelu_to_relu=True)


def test_declines_a_non_constant_slope(rng):
    model = conv_prelu_conv(rng)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "slope"))
    model.graph.input.append(helper.make_tensor_value_info("slope", TensorProto.FLOAT, [4, 1, 1]))
    assert "not constant" in decline(model, et_prelu.PReluToRelu(), prelu_to_relu=True)


def test_prelu_of_a_nonnegative_tensor_is_removed(rng):
    inits = {"slope": np.full((3, 1, 1), 0.3), "w1": rng.normal(0, 0.5, (2, 3, 3, 3))}
    nodes = [
        helper.make_node("PRelu", ["x", "slope"], ["a"]),
        helper.make_node("Conv", ["a", "w1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = build(nodes, inits)
    result, _ = run(model, input_ranges={})
    assert result.hits == {"prelu_nonnegative": 1}
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_prelu_of_a_signed_input_is_kept(rng):
    inits = {"slope": np.full((3, 1, 1), 0.3), "w1": rng.normal(0, 0.5, (2, 3, 3, 3))}
    nodes = [
        helper.make_node("PRelu", ["x", "slope"], ["a"]),
        helper.make_node("Conv", ["a", "w1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    result, _ = run(build(nodes, inits), input_ranges=SIGNED)
    assert not result.modified


def test_slope_one_is_identity_and_slope_zero_is_relu(rng):
    ones = conv_prelu_conv(rng, slope=np.ones((4, 1, 1)))
    result, _ = run(ones)
    assert op_types(result.model) == ["Conv", "Conv"]
    assert_equivalent(ones, result.model, input_ranges=SIGNED)
    zeros = conv_prelu_conv(rng, leaky=True, slope=0.0)
    result, _ = run(zeros)
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert weights(result.model, 0).shape == (4, 3, 3, 3)  # no doubling
    assert_equivalent(zeros, result.model, input_ranges=SIGNED)


def test_mixed_slope_is_not_trivial(rng):
    model = conv_prelu_conv(rng, slope=np.array([1.0, 1.0, 0.0, 1.0]).reshape(4, 1, 1))
    result, _ = run(model)
    assert not result.modified


def test_standalone_prelu_pass_opts_in(rng):
    model = conv_prelu_conv(rng)
    result = get_pass("prelu").run(model, PassContext(Options()))
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert_equivalent(model, result.model, input_ranges=SIGNED)


@settings(max_examples=30, deadline=None)
@given(
    c=st.integers(1, 6),
    k0=st.sampled_from([1, 3, 5]),
    k1=st.sampled_from([1, 3]),
    bias=st.booleans(),
    scalar=st.booleans(),
    leaky=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_over_channels_kernels_and_slopes(c, k0, k1, bias, scalar, leaky, seed):
    rng = np.random.default_rng(seed)
    slope = rng.uniform(-2, 2, (1,) if scalar or leaky else (c, 1, 1))
    model = conv_prelu_conv(
        rng, c=c, k0=k0, k1=k1, bias=bias, slope=float(slope[0]) if leaky else slope, leaky=leaky
    )
    result, _ = run(model, prelu_to_relu=True)
    # ["Conv", "Conv"] when interval analysis proves the PRelu input >= 0 (e.g. 1 channel, large positive bias)
    assert op_types(result.model) in (["Conv", "Relu", "Conv"], ["Conv", "Conv"])
    assert_equivalent(model, result.model, input_ranges=SIGNED, sizes=((5, 7), (8, 6)))
