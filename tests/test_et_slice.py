"""Channel Slice/Split -> rows of the producing Conv, or a 1x1 selection Conv."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from etc.graph import to_gs
from etc.passes import et_slice
from etc.pipeline import Options, PassContext
from etc.rules import NoMatch, RewriteContext, RulePass
from etc.testing import assert_equivalent, op_types

BIG = 2**62


class _Family(RulePass):
    name = "et_slice"
    rules = et_slice.rules


def run(model: onnx.ModelProto):
    ctx = PassContext(Options())
    return _Family().run(model, ctx), ctx


def weight_shape(model: onnx.ModelProto, node_index: int) -> tuple[int, ...]:
    node = model.graph.node[node_index]
    return tuple(next(i.dims for i in model.graph.initializer if i.name == node.input[1]))


def build(nodes, inits: dict, outputs=("y",), cin: int = 3, opset: int = 17) -> onnx.ModelProto:
    tensors = []
    for name, value in inits.items():
        value = np.asarray(value)
        tensors.append(
            onnx.numpy_helper.from_array(
                value.astype(np.int64 if value.dtype.kind == "i" else np.float32), name
            )
        )
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, "H", "W"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, None, None, None]) for o in outputs],
        tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def conv_slice(rng, c=6, start=1, end=5, step=1, axis=1, extra_output=False, bias=True, group=1, cin=3):
    inits = {
        "w": rng.normal(0, 0.5, (c, cin // group, 3, 3)),
        "starts": np.array([start]),
        "ends": np.array([end]),
        "axes": np.array([axis]),
        "steps": np.array([step]),
    }
    if bias:
        inits["b"] = rng.normal(0, 0.5, c)
    nodes = [
        helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["z"], pads=[1, 1, 1, 1], group=group),
        helper.make_node("Slice", ["z", "starts", "ends", "axes", "steps"], ["y"], name="slice"),
    ]
    return build(nodes, inits, ("y", "z") if extra_output else ("y",), cin)


def decline(model: onnx.ModelProto, rule) -> str:
    graph = to_gs(model)
    node = next(n for n in graph.nodes if n.op in rule.ops)
    found = rule.find(RewriteContext(graph, Options()), node)
    assert isinstance(found, NoMatch), found
    return found.reason


def test_slice_of_an_owned_conv_keeps_its_rows(rng):
    model = conv_slice(rng, c=6, start=1, end=5)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv"]
    assert weight_shape(result.model, 0) == (4, 3, 3, 3)
    assert_equivalent(model, result.model)


def test_slice_of_a_shared_conv_is_a_selection_conv(rng):
    model = conv_slice(rng, c=6, start=-1, end=-BIG, step=-2, extra_output=True)  # channels 5, 3, 1
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Conv"]
    assert weight_shape(result.model, 1) == (3, 6, 1, 1)
    assert_equivalent(model, result.model)


def test_slice_of_the_graph_input(rng):
    inits = {"starts": np.array([0]), "ends": np.array([2]), "axes": np.array([-3])}
    model = build([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])], inits)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_grouped_producer_is_not_cut(rng):
    model = conv_slice(rng, c=4, cin=4, group=2, start=1, end=3)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Conv"]
    assert_equivalent(model, result.model)


def test_legacy_slice_1_attributes(rng):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Slice", ["z"], ["y"], starts=[0], ends=[3], axes=[1]),
    ]
    model = build(nodes, {"w": rng.normal(0, 0.5, (5, 3, 3, 3))}, opset=9)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)


def test_spatial_axis_left_whole_is_fine_cut_is_declined(rng):
    inits = {
        "w": rng.normal(0, 0.5, (5, 3, 3, 3)),
        "starts": np.array([0, 1]),
        "ends": np.array([BIG, 3]),
        "axes": np.array([2, 1]),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Slice", ["z", "starts", "ends", "axes"], ["y"]),
    ]
    model = build(nodes, inits)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(model, result.model)
    inits["starts"] = np.array([1, 1])
    assert "cuts axis 2" in decline(build(nodes, inits), et_slice.ChannelSliceToConv())


def test_declines_non_constant_bounds_and_empty_selection(rng):
    model = conv_slice(rng)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "ends"))
    model.graph.input.append(helper.make_tensor_value_info("ends", TensorProto.INT64, [1]))
    assert "ends are not constant" in decline(model, et_slice.ChannelSliceToConv())
    assert "no channel" in decline(conv_slice(rng, start=4, end=2), et_slice.ChannelSliceToConv())


def test_spatial_only_slice_is_not_its_business(rng):
    model = conv_slice(rng, axis=2, start=1, end=3)
    result, _ = run(model)
    assert not result.modified


def test_split_of_an_owned_conv_becomes_one_conv_per_output(rng):
    inits = {"w": rng.normal(0, 0.5, (7, 3, 3, 3)), "b": rng.normal(0, 0.5, 7), "split": np.array([2, 4, 1])}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["z", "split"], ["a", "b2", "c"], axis=1),
    ]
    model = build(nodes, inits, ("a", "b2", "c"))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Conv", "Conv"]
    assert sorted(weight_shape(result.model, i)[0] for i in range(3)) == [1, 2, 4]
    assert_equivalent(model, result.model)


def test_split_with_unused_output_and_shared_input(rng):
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1)]  # opset 17 equal split of 3 channels
    model = build(nodes, {}, ("a", "c"))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Conv"]
    assert_equivalent(model, result.model)


def test_split_num_outputs_opset_18(rng):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["z"], ["a", "b"], axis=1, num_outputs=2),
    ]
    model = build(nodes, {"w": rng.normal(0, 0.5, (5, 3, 3, 3))}, ("a", "b"), opset=18)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Conv"]
    assert_equivalent(model, result.model)


def test_declines_split_with_non_constant_sizes(rng):
    nodes = [helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1)]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("a", "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert "not constant" in decline(model, et_slice.ChannelSplitToConvs())


def test_onnx_slice_indices_match_onnxruntime_clamping():
    # ONNX clamps a negative-step start into [0, dim - 1] (numpy would give an empty slice for start < -dim)
    from etc import runtime

    bounds = (-BIG, -8, -3, -1, 0, 2, 5, 9, BIG)
    for dim in (1, 4, 7):
        cases = [(a, b, c) for a in bounds for b in bounds for c in (-3, -1, 1, 2)]
        nodes, inits, outputs = [], {"axes": np.array([0])}, []
        for n, (start, end, step) in enumerate(cases):
            inits |= {f"s{n}": np.array([start]), f"e{n}": np.array([end]), f"t{n}": np.array([step])}
            nodes.append(helper.make_node("Slice", ["x", f"s{n}", f"e{n}", "axes", f"t{n}"], [f"y{n}"]))
            outputs.append(helper.make_tensor_value_info(f"y{n}", TensorProto.FLOAT, None))
        tensors = [onnx.numpy_helper.from_array(v.astype(np.int64), k) for k, v in inits.items()]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim])], outputs, tensors
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        got = runtime.session(model).run(None, {"x": np.arange(dim, dtype=np.float32)})
        for (start, end, step), values in zip(cases, got):
            assert et_slice.onnx_slice_indices(dim, start, end, step) == values.astype(int).tolist()


@settings(max_examples=30, deadline=None)
@given(
    c=st.integers(2, 8),
    start=st.integers(-9, 9),
    end=st.integers(-9, 9),
    step=st.sampled_from([-2, -1, 1, 2, 3]),
    shared=st.booleans(),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_for_any_channel_slice(c, start, end, step, shared, bias, seed):
    rng = np.random.default_rng(seed)
    model = conv_slice(rng, c=c, start=start, end=end, step=step, extra_output=shared, bias=bias)
    idx = et_slice.onnx_slice_indices(c, start, end, step)  # checked against onnxruntime above
    result, _ = run(model)
    if not idx or idx == list(range(c)):
        assert not result.modified
        return
    assert op_types(result.model) == (["Conv", "Conv"] if shared else ["Conv"])
    assert_equivalent(model, result.model, sizes=((5, 7),))


def test_slice_after_pointwise_ops_cuts_the_conv_rows(rng):
    # the x3 tail of ABPN/ETDS: Conv -> Relu (-> Clip) -> y[:, :-1]
    inits = {
        "w": rng.normal(0, 0.5, (7, 3, 3, 3)),
        "b": rng.normal(0, 0.5, 7),
        "lo": np.array(0.0),
        "hi": np.array(0.5),
        "starts": np.array([0]),
        "ends": np.array([-1]),
        "axes": np.array([1]),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["z"], ["r"]),
        helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
        helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["y"]),
    ]
    model = build(nodes, inits)
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Relu", "Clip"]
    assert weight_shape(result.model, 0) == (6, 3, 3, 3)
    assert_equivalent(model, result.model)


def test_pointwise_op_read_elsewhere_keeps_a_selection_conv(rng):
    inits = {
        "w": rng.normal(0, 0.5, (5, 3, 3, 3)),
        "s": np.array([1]),
        "e": np.array([3]),
        "a": np.array([1]),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["z"], ["r"]),
        helper.make_node("Slice", ["r", "s", "e", "a"], ["y"]),
    ]
    model = build(nodes, inits, ("y", "r"))
    result, _ = run(model)
    assert op_types(result.model) == ["Conv", "Relu", "Conv"]
    assert weight_shape(result.model, 2) == (2, 5, 1, 1)
    assert_equivalent(model, result.model)


def test_split_after_relu_gives_each_output_its_rows_and_relu(rng):
    inits = {"w": rng.normal(0, 0.5, (6, 3, 3, 3)), "split": np.array([2, 4])}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["z"], ["r"]),
        helper.make_node("Split", ["r", "split"], ["a", "b"], axis=1),
    ]
    model = build(nodes, inits, ("a", "b"))
    result, _ = run(model)
    assert sorted(op_types(result.model)) == ["Conv", "Conv", "Relu", "Relu"]
    assert_equivalent(model, result.model)


def conv_relu_slices(rng, ranges: list[tuple[int, int]], c: int = 6, extra_reader: bool = False):
    """x -> Conv(3 -> c) -> Relu -> z; one channel Slice of z per range (as ``x[:, a:b]`` exports)."""
    inits = {"w": rng.normal(0, 0.5, (c, 3, 3, 3)), "b": rng.normal(0, 0.5, c), "axes": np.array([1])}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["z"]),
    ]
    outputs = []
    for i, (start, end) in enumerate(ranges):
        inits[f"s{i}"], inits[f"e{i}"] = np.array([start]), np.array([end])
        nodes.append(helper.make_node("Slice", ["z", f"s{i}", f"e{i}", "axes"], [f"y{i}"], name=f"slice{i}"))
        outputs.append(f"y{i}")
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["g"]))
        outputs.append("g")
    return build(nodes, inits, tuple(outputs))


def test_slices_that_partition_a_tensor_become_a_split_with_its_rows(rng):
    model = conv_relu_slices(rng, [(2, BIG), (0, 2)])  # x[:, 2:] and x[:, :2], in any order
    result, _ = run(model)
    assert result.hits["channel_slices_to_split"] == 1
    assert op_types(result.model) == ["Conv", "Relu", "Conv", "Relu"]  # the producer's rows, one conv each
    assert sorted(weight_shape(result.model, i)[0] for i in (0, 2)) == [2, 4]
    assert_equivalent(model, result.model)


def test_slices_that_do_not_partition_stay_slices(rng):
    rule = et_slice.ChannelSlicesToSplit()
    gap = conv_relu_slices(rng, [(0, 2), (3, 6)])
    assert "do not cut it into disjoint ranges covering it" in decline(gap, rule)
    for model in (
        conv_relu_slices(rng, [(0, 4), (2, 6)]),  # overlapping
        conv_relu_slices(rng, [(0, 2), (2, 6)], extra_reader=True),  # read by more than the Slices
        conv_relu_slices(rng, [(0, 6)]),  # one Slice: nothing to gather
    ):
        result, _ = run(model)
        assert "channel_slices_to_split" not in result.hits
        assert_equivalent(model, result.model)
