"""fold_pad: a zero Pad on H/W merges into the Conv's pads; other pads stay."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import graph

W = np.random.default_rng(7).normal(size=(4, 3, 3, 3)).astype(np.float32)
B = np.random.default_rng(8).normal(size=4).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), conv_pad=st.integers(0, 1))
def test_zero_pad_merges_into_conv(pads, conv_pad):
    top, left, bottom, right = pads
    m = graph(
        f"p = Pad(input, pads)\noutput = Conv <pads = [{conv_pad}, {conv_pad}, {conv_pad}, {conv_pad}]> (p, w, b)",
        outputs="float[1,4,?,?] output",
        w=W,
        b=B,
        pads=np.array([0, 0, top, left, 0, 0, bottom, right], np.int64),
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(m, result.model, sizes=((9, 11), (6, 5)))


def test_pad_with_axes_input_opset18():
    from etc.testing import model_from_text

    m = model_from_text(
        '<ir_version: 8, opset_import: ["" : 18]>\n'
        "g (float[1,3,H,W] input) => (float[1,4,?,?] output) {\n"
        "p = Pad(input, pads, , axes)\noutput = Conv (p, w, b)\n}",
        {"w": W, "b": B, "pads": np.array([1, 2, 1, 0], np.int64), "axes": np.array([2, 3], np.int64)},
    )
    result = apply_pass(m, "fold")
    assert op_types(result.model) == ["Conv"]
    assert_equivalent(m, result.model)


@pytest.mark.parametrize(
    ("why", "body", "extra"),
    [
        ("reflect mode", 'p = Pad <mode = "reflect"> (input, pads)', {}),
        ("non-zero value", "p = Pad(input, pads, v)", {"v": np.float32(0.5)}),
        ("channel padding", "p = Pad(input, cpads)", {}),
        ("negative pad", "p = Pad(input, neg)", {}),
    ],
)
def test_pad_that_is_not_conv_padding_stays(why, body, extra):
    out_ch_note = "float[1,4,?,?] output"
    w = (
        W
        if why != "channel padding"
        else np.random.default_rng(1).normal(size=(4, 4, 3, 3)).astype(np.float32)
    )
    m = graph(
        body + "\noutput = Conv (p, w, b)",
        outputs=out_ch_note,
        w=w,
        b=B,
        pads=np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        cpads=np.array([0, 1, 1, 1, 0, 0, 1, 1], np.int64),
        neg=np.array([0, 0, -1, 0, 0, 0, 0, 0], np.int64),
        **extra,
    )
    result = apply_pass(m, "fold")
    assert "Pad" in op_types(result.model), why
    assert_equivalent(m, result.model, sizes=((9, 11),))


def test_pad_read_by_a_non_conv_stays():
    m = graph(
        "p = Pad(input, pads)\nc = Conv (p, w, b)\nr = Relu(p)\noutput = Conv (r, w, b)",
        outputs="float[1,4,?,?] output",
        w=W,
        b=B,
        pads=np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
    )
    result = apply_pass(m, "fold")
    assert "Pad" in op_types(result.model)
