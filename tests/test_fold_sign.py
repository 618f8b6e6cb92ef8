"""fold_sign: a Neg folds into the Conv producing it or the Add/Sub reading it; never more nodes."""

from __future__ import annotations

import numpy as np
import pytest

from etc.pipeline import PassContext
from etc.testing import apply_pass, assert_equivalent, op_types
from tests.fold_helpers import conv_inits, graph

RANGE = {"input": (-1.0, 1.0)}
CONVS = "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\nd = Conv (input, w1)\nr = Relu(d)"


@pytest.mark.parametrize(
    ("body", "after"),
    [
        ("output = Neg(c)", ["Conv"]),
        ("n = Neg(c)\noutput = Add(r, n)", ["Conv", "Conv", "Relu", "Add"]),
        ("n = Neg(r)\noutput = Add(n, c)", ["Conv", "Conv", "Relu", "Sub"]),
        ("n = Neg(r)\noutput = Sub(c, n)", ["Conv", "Conv", "Relu", "Add"]),
        ("s = Sub(c, r)\noutput = Neg(s)", ["Conv", "Conv", "Relu", "Sub"]),
        ("n = Neg(r)\nm = Neg(n)\noutput = Add(m, c)", ["Conv", "Conv", "Relu", "Add"]),
    ],
    ids=["neg_conv", "add_neg", "neg_add", "sub_neg", "neg_sub", "neg_neg"],
)
def test_signs_fold_away_exactly(body, after, rng):
    inits = conv_inits(rng, 4, 3, 3) | {"w1": rng.normal(size=(4, 3, 1, 1)).astype(np.float32)}
    model = graph(f"{CONVS}\n{body}", outputs="float[1,4,?,?] output", **inits)
    result = apply_pass(model, "fold")
    assert sorted(op_types(result.model)) == sorted(after)
    assert "Neg" not in op_types(result.model)
    assert_equivalent(model, result.model, input_ranges=RANGE, sizes=((5, 7), (3, 3)))


def test_neg_of_a_shared_conv_is_refused_with_the_reason(rng):
    model = graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\nn = Neg(c)\noutput = Relu(n)\nextra = Relu(c)",
        outputs="float[1,4,?,?] output, float[1,4,?,?] extra",
        **conv_inits(rng),
    )
    ctx = PassContext()
    result = apply_pass(model, "fold", ctx)
    assert "Neg" in op_types(result.model)
    assert "the conv output is also read elsewhere" in [d.reason for d in ctx.declines]


def test_neg_read_twice_is_left(rng):
    """A Neg with two readers cannot fold into either; a lone Sub stays a Sub (no Neg or Mul(-1) appears)."""
    model = graph(
        "r = Relu(input)\nn = Neg(r)\na = Add(input, n)\noutput = Sub(a, n)",
        outputs="float[1,3,?,?] output",
    )
    result = apply_pass(model, "fold")
    assert not result.modified


def test_neg_neg_from_input_to_output_is_refused():
    model = graph("n = Neg(input)\noutput = Neg(n)", outputs="float[1,3,?,?] output")
    ctx = PassContext()
    result = apply_pass(model, "fold", ctx)
    assert op_types(result.model) == ["Neg", "Neg"]
    assert any("graph input straight to a graph output" in d.reason for d in ctx.declines)
