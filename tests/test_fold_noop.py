"""fold_noop: nodes computing y = x disappear; near-misses stay."""

from __future__ import annotations

import numpy as np
import pytest

from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import graph

W = np.random.default_rng(3).normal(size=(4, 3, 3, 3)).astype(np.float32)
B = np.zeros(4, np.float32)


def _wrap(noop: str, **inits):
    """input -> <noop producing t> -> Conv -> output."""
    return graph(f"{noop}\noutput = Conv <pads = [1, 1, 1, 1]> (t, w, b)", w=W, b=B, **inits)


POSITIVE = [
    ("identity", "t = Identity(input)", {}),
    ("dropout", "t = Dropout(input)", {}),
    ("clip_unbounded", "t = Clip(input)", {}),
    ("clip_unbounded", "t = Clip(input, lo, hi)", {"lo": np.float32(-np.inf), "hi": np.float32(np.inf)}),
    ("pad_zero", "t = Pad(input, pads)", {"pads": np.zeros(8, np.int64)}),
    (
        "slice_full",
        "t = Slice(input, s, e, a)",
        {"s": np.array([0], np.int64), "e": np.array([2**62], np.int64), "a": np.array([1], np.int64)},
    ),
    ("transpose_identity", "t = Transpose <perm = [0, 1, 2, 3]> (input)", {}),
    ("cast_same", "t = Cast <to = 1> (input)", {}),
    ("neutral_arithmetic", "t = Mul(input, one)", {"one": np.float32(1.0)}),
    ("neutral_arithmetic", "t = Add(zero, input)", {"zero": np.zeros((1, 3, 1, 1), np.float32)}),
    ("neutral_arithmetic", "t = Div(input, one)", {"one": np.float32(1.0)}),
    ("neutral_arithmetic", "t = Sub(input, zero)", {"zero": np.float32(0.0)}),
    ("expand_same", "t = Expand(input, ones)", {"ones": np.ones(4, np.int64)}),
]


@pytest.mark.parametrize(
    ("rule", "noop", "inits"), POSITIVE, ids=[p[1].split("=")[1].strip() for p in POSITIVE]
)
def test_noop_is_removed(rule, noop, inits):
    m = _wrap(noop, **inits)
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert result.hits.get(rule) == 1
    assert_equivalent(m, result.model)


def test_same_shape_reshape_is_removed_only_with_static_shapes():
    static = graph(
        "t = Reshape(input, s)\noutput = Conv <pads = [1, 1, 1, 1]> (t, w, b)",
        inputs="float[1,3,8,8] input",
        outputs="float[1,4,8,8] output",
        w=W,
        b=B,
        s=np.array([1, 3, 8, 8], np.int64),
    )
    assert op_types(apply_pass(static, "fold").model) == ["Conv"]
    dynamic = _wrap("t = Reshape(input, s)", s=np.array([1, 3, -1, 16], np.int64))
    assert "Reshape" in op_types(apply_pass(dynamic, "fold").model)


NEGATIVE = [
    ("finite clip", "t = Clip(input, lo, hi)", {"lo": np.float32(0.2), "hi": np.float32(np.inf)}),
    (
        "non-zero pad",
        't = Pad <mode = "edge"> (input, pads)',
        {"pads": np.array([0, 0, 1, 0, 0, 0, 0, 0], np.int64)},
    ),
    (
        "partial slice",
        "t = Slice(input, s, e, a)",
        {"s": np.array([1], np.int64), "e": np.array([2**62], np.int64), "a": np.array([2], np.int64)},
    ),
    ("mul by 2", "t = Mul(input, two)", {"two": np.float32(2.0)}),
    ("add that broadcasts up", "t = Add(input, zero)", {"zero": np.zeros((2, 3, 1, 1), np.float32)}),
    ("permuting transpose", "t = Transpose <perm = [0, 1, 3, 2]> (input)", {}),
    ("zero minus x", "t = Sub(zero, input)", {"zero": np.float32(0.0)}),
]


@pytest.mark.parametrize(("why", "op", "inits"), NEGATIVE, ids=[n[0] for n in NEGATIVE])
def test_non_noops_stay(why, op, inits):
    m = graph(f"{op}\noutput = Relu(t)", outputs="float[?,?,?,?] output", **inits)
    result = apply_pass(m, "fold")
    assert len(op_types(result.model)) == 2, why
    assert_equivalent(
        m, result.model, sizes=((8, 8),) if "transpose" in why else ((17, 23), (16, 16), (5, 7))
    )


def test_dropout_in_training_mode_stays():
    m = _wrap("t, mask = Dropout(input, ratio, train)", ratio=np.float32(0.5), train=np.array(True))
    result = apply_pass(m, "fold")
    assert "Dropout" in op_types(result.model)


def test_identity_between_graph_input_and_output_stays():
    m = graph("output = Identity(input)", outputs="float[1,3,H,W] output")
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Identity"] and not result.modified


def test_identity_before_graph_output_keeps_the_output_name(rng):
    m = graph("c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\noutput = Identity(c)", w=W, b=B)
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert result.model.graph.output[0].name == "output"
    assert_equivalent(m, result.model)
