"""fold_bn: BatchNormalization folds into Conv/ConvTranspose or becomes a depthwise 1x1 Conv."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import graph


def _bn(rng, ch):
    return {
        "gamma": rng.uniform(0.5, 2, ch).astype(np.float32),
        "beta": rng.normal(size=ch).astype(np.float32),
        "mean": rng.normal(size=ch).astype(np.float32),
        "var": rng.uniform(0.1, 2, ch).astype(np.float32),
    }


@settings(max_examples=25, deadline=None)
@given(
    out_ch=st.sampled_from([2, 4, 6]),
    k=st.sampled_from([1, 3]),
    group=st.sampled_from([1, 2]),
    bias=st.booleans(),
    seed=st.integers(0, 100),
)
def test_conv_bn_folds(out_ch, k, group, bias, seed):
    rng = np.random.default_rng(seed)
    in_ch = 2 * group
    w = rng.normal(size=(out_ch, in_ch // group, k, k)).astype(np.float32)
    args = "x, w, b" if bias else "x, w"
    m = graph(
        f"x = Relu(input)\nc = Conv <pads = [{k // 2}, {k // 2}, {k // 2}, {k // 2}], group = {group}> ({args})\n"
        "output = BatchNormalization <epsilon = 0.001> (c, gamma, beta, mean, var)",
        inputs=f"float[1,{in_ch},H,W] input",
        outputs=f"float[1,{out_ch},H,W] output",
        w=w,
        **({"b": rng.normal(size=out_ch).astype(np.float32)} if bias else {}),
        **_bn(rng, out_ch),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Relu", "Conv"]
    assert_equivalent(m, result.model)


def test_conv_transpose_bn_folds(rng):
    m = graph(
        "c = ConvTranspose <strides = [2, 2], pads = [1, 1, 1, 1], output_padding = [1, 1], group = 2> (input, w, b)\n"
        "output = BatchNormalization(c, gamma, beta, mean, var)",
        inputs="float[1,4,H,W] input",
        outputs="float[1,6,?,?] output",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=6).astype(np.float32),
        **_bn(rng, 6),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["ConvTranspose"]
    assert_equivalent(m, result.model)


def test_lone_bn_becomes_depthwise_conv(rng):
    m = graph(
        "output = BatchNormalization(input, gamma, beta, mean, var)",
        outputs="float[1,3,H,W] output",
        **_bn(rng, 3),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    conv = result.model.graph.node[0]
    assert {a.name: a.i for a in conv.attribute}["group"] == 3
    assert_equivalent(m, result.model, input_ranges={"input": (-3.0, 3.0)})


def test_bn_after_shared_conv_does_not_fold_into_it(rng):
    m = graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\nn = BatchNormalization(c, gamma, beta, mean, var)\n"
        "output = Add(n, c)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
        **_bn(rng, 4),
    )
    result = apply_pass(m, "fold")
    assert result.hits.get("bn_into_conv") is None
    assert_equivalent(m, result.model)


def test_training_mode_bn_stays(rng):
    m = graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\n"
        "output = BatchNormalization <training_mode = 1> (c, gamma, beta, mean, var)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
        **_bn(rng, 4),
    )
    m.opset_import[0].version = 15
    result = apply_pass(m, "fold")
    assert "BatchNormalization" in op_types(result.model)
