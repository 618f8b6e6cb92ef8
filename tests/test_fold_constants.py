"""fold_constants: Constant nodes, static shapes and all-constant nodes become initializers."""

from __future__ import annotations

import numpy as np

from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import graph


def test_constant_nodes_and_constant_arithmetic_fold(rng):
    m = graph(
        """
        k = Constant <value = float[4,1,1] {1.0, 2.0, 3.0, 4.0}> ()
        k2 = Mul(k, two)
        c = Conv <pads = [1, 1, 1, 1]> (input, w, b)
        output = Add(c, k2)
        """,
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
        two=np.float32(2.0),
    )
    result = apply_pass(m, "fold")
    assert "Constant" not in op_types(result.model)
    assert "Mul" not in op_types(result.model)
    assert result.hits["constant_node"] == 1
    assert_equivalent(m, result.model)


def test_static_shape_chain_folds_to_a_constant(rng):
    m = graph(
        """
        s = Shape(input)
        t = Slice(s, zero, two)
        shape = Concat <axis = 0> (t, rest)
        output = Reshape(input, shape)
        """,
        inputs="float[1,3,8,8] input",
        outputs="float[1,3,64] output",
        zero=np.array([0], np.int64),
        two=np.array([2], np.int64),
        rest=np.array([-1], np.int64),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Reshape"]
    assert_equivalent(m, result.model)


def test_dynamic_dims_are_not_folded_but_static_ones_are():
    m = graph(
        """
        s = Shape(input)
        hw = Slice(s, two, four)
        nc = Slice(s, zero, two)
        shape = Concat <axis = 0> (nc, hw)
        output = Reshape(input, shape)
        """,
        outputs="float[1,3,H,W] output",
        zero=np.array([0], np.int64),
        two=np.array([2], np.int64),
        four=np.array([4], np.int64),
    )
    result = apply_pass(m, "fold")
    ops = op_types(result.model)
    assert ops.count("Slice") == 1, ops  # the H/W slice stays: its dims are symbolic
    assert "Shape" in ops
    assert_equivalent(m, result.model)


def test_nothing_to_fold_returns_the_same_model(rng):
    m = graph(
        "output = Conv <pads = [1, 1, 1, 1]> (input, w, b)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
    )
    result = apply_pass(m, "fold")
    assert not result.modified and result.model is m
