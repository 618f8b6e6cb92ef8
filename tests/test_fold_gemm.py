"""fold_gemm and fold_gemm_parallel: classifier heads (BatchNorm1d + Linear, per-feature scales, distillation
twins averaged) become one Gemm, equivalent in onnxruntime with optimizations off; each exactness condition
declines with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from etc.pipeline import PassContext
from etc.testing import apply_pass, assert_equivalent, op_types, reasons
from tests.fold_helpers import graph

IN, OUT = 6, 5


def _bn(rng, ch, prefix=""):
    return {
        f"{prefix}gamma": rng.uniform(0.5, 2, ch).astype(np.float32),
        f"{prefix}beta": rng.normal(size=ch).astype(np.float32),
        f"{prefix}mean": rng.normal(size=ch).astype(np.float32),
        f"{prefix}var": rng.uniform(0.1, 2, ch).astype(np.float32),
    }


def _fold(model):
    ctx = PassContext()
    result = apply_pass(model, "fold", ctx=ctx)
    return result.model, ctx.declines


def _w(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def _twins(rng) -> dict:
    """Weights and biases of two parallel Linear layers IN -> OUT (w1, b1, w2, b2)."""
    return {"w1": _w(rng, OUT, IN), "b1": _w(rng, OUT), "w2": _w(rng, OUT, IN), "b2": _w(rng, OUT)}


def _head(text: str, rows: int = 3, **inits):
    """A head graph from ONNX text: input float[rows, IN], output float[rows, OUT]."""
    return graph(text, inputs=f"float[{rows},{IN}] input", outputs=f"float[{rows},{OUT}] output", **inits)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_bn_before_gemm_folds(rng, trans_b):
    w = _w(rng, OUT, IN) if trans_b else _w(rng, IN, OUT)
    m = _head(
        "n = BatchNormalization <epsilon = 0.001> (input, gamma, beta, mean, var)\n"
        f"output = Gemm <transB = {trans_b}, alpha = 0.5, beta = 2.0> (n, w, b)",
        rows=3,
        w=w,
        b=_w(rng, OUT),
        **_bn(rng, IN),
    )
    folded, _ = _fold(m)
    assert op_types(folded) == ["Gemm"]
    assert_equivalent(m, folded)


def test_bn_before_matmul_folds(rng):
    m = _head(
        "n = BatchNormalization(input, gamma, beta, mean, var)\noutput = MatMul(n, w)",
        rows=3,
        w=_w(rng, IN, OUT),
        **_bn(rng, IN),
    )
    folded, _ = _fold(m)
    assert op_types(folded) == ["Gemm"]
    assert_equivalent(m, folded)


def test_bn_after_gemm_folds(rng):
    m = _head(
        "y = Gemm <transB = 1> (input, w, b)\noutput = BatchNormalization(y, gamma, beta, mean, var)",
        rows=3,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        **_bn(rng, OUT),
    )
    folded, _ = _fold(m)
    assert op_types(folded) == ["Gemm"]
    assert_equivalent(m, folded)


@pytest.mark.parametrize(
    "op, shape", [("Mul", (OUT,)), ("Div", (1, OUT)), ("Add", ()), ("Sub", (OUT,)), ("Div", ())]
)
def test_per_feature_constant_after_gemm_folds(rng, op, shape):
    m = _head(
        f"y = Gemm <transB = 1> (input, w, b)\noutput = {op}(y, k)",
        rows=3,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        k=rng.uniform(0.5, 2, shape).astype(np.float32),
    )
    folded, _ = _fold(m)
    assert op_types(folded) == ["Gemm"]
    assert_equivalent(m, folded)


def test_distillation_head_becomes_one_gemm(rng):
    """(head(x) + head_dist(x)) / 2 with BatchNorm1d + Linear in each head, as RepViT writes it."""
    m = _head(
        "n1 = BatchNormalization(input, gamma, beta, mean, var)\n"
        "n2 = BatchNormalization(input, d_gamma, d_beta, d_mean, d_var)\n"
        "y1 = Gemm <transB = 1> (n1, w1, b1)\ny2 = Gemm <transB = 1> (n2, w2, b2)\n"
        "s = Add(y1, y2)\noutput = Div(s, two)",
        rows=2,
        **_twins(rng),
        two=np.array(2.0, np.float32),
        **_bn(rng, IN),
        **_bn(rng, IN, "d_"),
    )
    folded, _ = _fold(m)
    assert op_types(folded) == ["Gemm"]
    assert_equivalent(m, folded)


def test_difference_of_parallel_gemms_folds(rng):
    m = _head(
        "y1 = Gemm <transB = 1> (input, w1, b1)\ny2 = MatMul(input, w2)\noutput = Sub(y1, y2)",
        rows=2,
        w1=_w(rng, OUT, IN),
        b1=_w(rng, OUT),
        w2=_w(rng, IN, OUT),
    )
    folded, _ = _fold(m)
    assert op_types(folded) == ["Gemm"]
    assert_equivalent(m, folded)


# --- declines, one per exactness condition ---


def test_bn_on_a_rank_3_input_is_declined(rng):
    """BatchNorm1d on (N, C, L): axis 1 is not the axis a Gemm/MatMul contracts."""
    m = graph(
        "n = BatchNormalization(input, gamma, beta, mean, var)\noutput = MatMul(n, w)",
        inputs=f"float[2,{IN},4] input",
        outputs=f"float[2,{IN},{OUT}] output",
        w=_w(rng, 4, OUT),
        **_bn(rng, IN),
    )
    folded, declines = _fold(m)
    assert "BatchNormalization" in op_types(folded)
    assert "BatchNormalization input is not known to be 2-D" in reasons(declines, "bn_into_linear")
    assert_equivalent(m, folded)


def test_bn_read_elsewhere_is_declined(rng):
    m = _head(
        "n = BatchNormalization(input, gamma, beta, mean, var)\ny = Gemm <transB = 1> (n, w, b)\n"
        "r = Relu(n)\nrs = ReduceSum <keepdims = 1> (r, axes)\noutput = Add(y, rs)",
        rows=2,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        axes=np.array([1], np.int64),
        **_bn(rng, IN),
    )
    folded, declines = _fold(m)
    assert op_types(folded).count("BatchNormalization") == 1
    assert "the normalized tensor is also read elsewhere" in reasons(declines, "bn_into_linear")


def test_gemm_with_trans_a_is_declined(rng):
    m = graph(
        "n = BatchNormalization(input, gamma, beta, mean, var)\noutput = Gemm <transA = 1, transB = 1> (n, w, b)",
        inputs=f"float[{IN},{IN}] input",
        outputs=f"float[{IN},{OUT}] output",
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        **_bn(rng, IN),
    )
    _, declines = _fold(m)
    assert "Gemm transposes its input (transA = 1)" in reasons(declines, "bn_into_linear")


def test_gemm_with_computed_weight_is_declined(rng):
    m = graph(
        "n = BatchNormalization(input, gamma, beta, mean, var)\noutput = Gemm(n, w, b)",
        inputs=f"float[2,{IN}] input, float[{IN},{OUT}] w",
        outputs=f"float[2,{OUT}] output",
        b=_w(rng, OUT),
        **_bn(rng, IN),
    )
    _, declines = _fold(m)
    assert "Gemm weight is not a constant matrix" in reasons(declines, "bn_into_linear")


def test_batch_axis_constant_after_gemm_is_declined(rng):
    m = _head(
        "y = Gemm <transB = 1> (input, w, b)\noutput = Mul(y, k)",
        rows=3,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        k=rng.uniform(0.5, 2, (3, 1)).astype(np.float32),
    )
    folded, declines = _fold(m)
    assert op_types(folded) == ["Gemm", "Mul"]
    assert "constant does not broadcast along the feature axis only" in reasons(
        declines, "affine_after_linear"
    )


def test_division_by_zero_after_gemm_is_declined(rng):
    m = _head(
        "y = Gemm <transB = 1> (input, w, b)\noutput = Div(y, k)",
        rows=3,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        k=np.array([1, 2, 0, 1, 1], np.float32),
    )
    _, declines = _fold(m)
    assert "division by zero" in reasons(declines, "affine_after_linear")


def test_constant_divided_by_gemm_is_declined(rng):
    m = _head(
        "y = Gemm <transB = 1> (input, w, b)\noutput = Div(k, y)",
        rows=3,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        k=np.array(2.0, np.float32),
    )
    _, declines = _fold(m)
    assert "constant Div x is not affine in x per feature" in reasons(declines, "affine_after_linear")


def test_gemm_output_read_elsewhere_is_declined(rng):
    m = _head(
        "y = Gemm <transB = 1> (input, w, b)\ns = Mul(y, k)\noutput = Add(s, y)",
        rows=3,
        w=_w(rng, OUT, IN),
        b=_w(rng, OUT),
        k=rng.uniform(0.5, 2, OUT).astype(np.float32),
    )
    _, declines = _fold(m)
    assert "the layer's output is also read elsewhere" in reasons(declines, "affine_after_linear")


def test_parallel_gemms_on_different_inputs_are_declined(rng):
    m = _head(
        "r = Relu(input)\ny1 = Gemm <transB = 1> (input, w1, b1)\ny2 = Gemm <transB = 1> (r, w2, b2)\n"
        "output = Add(y1, y2)",
        rows=2,
        **_twins(rng),
    )
    folded, declines = _fold(m)
    assert op_types(folded).count("Gemm") == 2
    assert "the two layers read different tensors" in reasons(declines, "parallel_linear_sum")


def test_parallel_gemm_read_elsewhere_is_declined(rng):
    m = _head(
        "y1 = Gemm <transB = 1> (input, w1, b1)\ny2 = Gemm <transB = 1> (input, w2, b2)\n"
        "s = Add(y1, y2)\noutput = Mul(s, y1)",
        rows=2,
        **_twins(rng),
    )
    folded, declines = _fold(m)
    assert op_types(folded).count("Gemm") == 2
    assert "a layer's output is also read elsewhere" in reasons(declines, "parallel_linear_sum")
