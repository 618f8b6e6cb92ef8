"""fold_affine: per-channel Mul/Div/Add/Sub constants fold into Conv where exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etc.pipeline import PassContext
from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import graph

RANGE = {"input": (-1.0, 1.0)}


@settings(max_examples=30, deadline=None)
@given(
    op=st.sampled_from(["Mul", "Div", "Add", "Sub"]),
    shape=st.sampled_from([(4, 1, 1), (1, 4, 1, 1), ()]),
    pad=st.integers(0, 1),
    seed=st.integers(0, 50),
)
def test_affine_after_conv_folds(op, shape, pad, seed):
    rng = np.random.default_rng(seed)
    m = graph(
        f"c = Conv <pads = [{pad}, {pad}, {pad}, {pad}]> (input, w, b)\noutput = {op}(c, k)",
        outputs="float[1,4,?,?] output",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        k=rng.uniform(0.5, 2.0, size=shape).astype(np.float32),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(m, result.model, input_ranges=RANGE)


@settings(max_examples=30, deadline=None)
@given(
    op=st.sampled_from(["Mul", "Div"]),
    pad=st.integers(0, 2),
    group=st.sampled_from([1, 3]),
    seed=st.integers(0, 50),
)
def test_scaling_before_conv_folds_even_with_padding(op, pad, group, seed):
    rng = np.random.default_rng(seed)
    m = graph(
        f"s = {op}(input, k)\noutput = Conv <pads = [{pad}, {pad}, {pad}, {pad}], group = {group}> (s, w, b)",
        outputs="float[1,6,?,?] output",
        w=rng.normal(size=(6, 3 // group, 3, 3)).astype(np.float32),
        b=rng.normal(size=6).astype(np.float32),
        k=rng.uniform(0.5, 2.0, size=(3, 1, 1)).astype(np.float32),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(m, result.model, input_ranges=RANGE)


def test_shift_before_unpadded_conv_folds(rng):
    m = graph(
        "s = Sub(input, mean)\noutput = Conv (s, w, b)",
        outputs="float[1,4,?,?] output",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        mean=np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(m, result.model)


def test_shift_before_padded_conv_is_refused_with_a_reason(rng):
    m = graph(
        "s = Sub(input, mean)\noutput = Conv <pads = [1, 1, 1, 1]> (s, w, b)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        mean=np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1),
    )
    ctx = PassContext()
    result = apply_pass(m, "fold", ctx=ctx)
    assert op_types(result.model) == ["Sub", "Conv"]
    assert any("border" in d.reason for d in ctx.declines if d.rule == "affine_before_conv")


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), ()])
def test_constant_minus_conv_negates_the_conv(shape, rng):
    """c - Conv(W, b) = Conv(-W, c - b), exact at every pixel including the zero-padded border."""
    m = graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\noutput = Sub(k, c)",
        outputs="float[1,4,?,?] output",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        k=rng.uniform(-0.5, 0.5, size=shape).astype(np.float32),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(m, result.model, input_ranges=RANGE)


@pytest.mark.parametrize(
    ("why", "body", "k"),
    [
        ("spatial constant", "output = Mul(c, k)", np.ones((1, 4, 2, 1), np.float32)),
        ("conv output read twice", "m = Mul(c, k)\noutput = Add(m, c)", np.full((4, 1, 1), 2.0, np.float32)),
        ("divide by zero", "output = Div(c, k)", np.array([1, 0, 1, 1], np.float32).reshape(4, 1, 1)),
    ],
)
def test_non_exact_affines_stay(why, body, k, rng):
    outputs = "float[1,4,2,?] output" if why == "spatial constant" else "float[1,4,?,?] output"
    m = graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n" + body,
        outputs=outputs,
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        k=k,
    )
    result = apply_pass(m, "fold")
    assert len(op_types(result.model)) >= 2, why
