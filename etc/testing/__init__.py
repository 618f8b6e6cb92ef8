"""Helpers for testing rules and passes (used by the test suite, the fuzzer, the benchmarks and plugin authors).

One graph builder (:class:`GraphBuilder`, or ONNX text through :func:`model_from_text`) and one runner
(:func:`run_first` / ``etc.runtime.run``: onnxruntime with graph optimizations disabled).

model = model_from_text('''<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,H,W] input) => (float[1,3,H,W] output) { output = Relu(input) }''')
result = apply_pass(model, "fold")
assert op_types(result.model) == ["Relu"]
assert_equivalent(model, result.model)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from etc.pipeline import Options, PassContext, PassResult, get_pass
from etc.runtime import DEFAULT_SIZES
from etc.testing.builder import GraphBuilder

__all__ = [
    "GraphBuilder",
    "apply_pass",
    "assert_equivalent",
    "assert_int8_close",
    "conv_kernels",
    "image_model",
    "model_from_text",
    "op_types",
    "ops",
    "random_conv_weights",
    "reasons",
    "run_family",
    "run_first",
    "text_model",
]


def model_from_text(text: str, initializers: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parses ONNX textual syntax and attaches float32 initializers; the result passes onnx.checker."""
    model = onnx.parser.parse_model(text)
    for name, value in (initializers or {}).items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model)
    return model


TEXT_HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def conv_relu_model(seed: int = 1) -> onnx.ModelProto:
    """The smallest real model: a 3x3 Conv (3 -> 4 channels, random weights) and a Relu, dynamic H/W."""
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    return text_model(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\noutput = Relu(c)",
        w=weight.astype(np.float32),
        b=bias.astype(np.float32),
    )


def text_model(
    body: str, inputs: str = "float[1,3,H,W] input", outputs: str = "float[1,4,H,W] output", **inits
) -> onnx.ModelProto:
    """A model from the body of an ONNX text graph, with initializers given as keyword arrays."""
    text = f"{TEXT_HEADER}\ng ({inputs}) => ({outputs}) {{\n{body}\n}}"
    return model_from_text(text, {k: np.asarray(v) for k, v in inits.items()})


def op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def ops(model: onnx.ModelProto) -> list[str]:
    """The op list without Constant nodes."""
    return [n.op_type for n in model.graph.node if n.op_type != "Constant"]


def conv_kernels(model: onnx.ModelProto) -> list[np.ndarray]:
    """The weight of every Conv, in node order."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


def reasons(declines: list, rule: str) -> list[str]:
    """The decline reasons one rule gave."""
    return [d.reason for d in declines if d.rule == rule]


def run_first(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int = 1) -> np.ndarray:
    """The first output in onnxruntime with graph optimizations disabled (so ORT fusions hide nothing)."""
    from etc import runtime

    return next(iter(runtime.run(runtime.session(model, threads=threads), feeds).values()))


def apply_pass(model: onnx.ModelProto, name: str, ctx: PassContext | None = None, **options) -> PassResult:
    """Runs one registered pass once with the given Options fields."""
    ctx = ctx or PassContext(Options(**options))
    return get_pass(name).run(model, ctx)


def run_family(model: onnx.ModelProto, rules, **options) -> tuple[onnx.ModelProto, dict, list]:
    """Applies one rule family (an ``etc.rules.RuleSet``) to a fixed point: (model, hits, declines)."""
    from etc.graph import cleanup, to_gs, to_onnx
    from etc.rules import apply_rules

    ctx = PassContext(Options(**options))
    graph = to_gs(model)
    hits = apply_rules(graph, rules, ctx.options, pass_ctx=ctx, pass_name="et")
    cleanup(graph)
    return to_onnx(graph, model), hits, ctx.declines


def assert_equivalent(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    sizes: Sequence[tuple[int, int]] = (*DEFAULT_SIZES, (5, 7)),
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> float:
    """Asserts equal outputs in onnxruntime (optimizations off) at several sizes; returns the worst max abs."""
    from etc.verification import verify

    onnx.checker.check_model(candidate)
    report = verify(reference, candidate, input_ranges=input_ranges, sizes=sizes, atol=atol, rtol=rtol)
    worst = max(r["max_abs"] for r in report.rows)
    assert report.equivalent, f"not equivalent: {report.rows}"
    return worst


def random_conv_weights(
    rng: np.random.Generator, out_ch: int, in_ch: int, kh: int, kw: int, bias: bool = True
):
    """Float32 (W, b) with a realistic scale."""
    scale = 1.0 / np.sqrt(in_ch * kh * kw)
    w = rng.normal(0, scale, size=(out_ch, in_ch, kh, kw)).astype(np.float32)
    b = rng.normal(0, 0.1, size=out_ch).astype(np.float32) if bias else None
    return w, b


def image_model(
    nodes: Sequence[onnx.NodeProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Mapping[str, np.ndarray],
    *,
    input_name: str = "x",
) -> onnx.ModelProto:
    """A checked opset-17 model of ``nodes`` reading one float image input [1, 3, h, w]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, "h", "w"])],
        list(outputs),
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def assert_int8_close(
    model: onnx.ModelProto, qmodel: onnx.ModelProto, feed: Mapping[str, np.ndarray], tol: float = 0.05
) -> None:
    """The QDQ model's first output: the same with and without onnxruntime's fused int8 kernels (no int16
    saturation), and within ``tol`` x max|ref| of the float model."""
    from etc import runtime

    name = model.graph.output[0].name
    ref = runtime.run(model, feed)[name]
    fused = runtime.run(runtime.session(qmodel, optimize=True), feed)[name]
    plain = runtime.run(runtime.session(qmodel), feed)[name]
    np.testing.assert_allclose(fused, plain, atol=1e-5)
    assert np.abs(ref - fused).max() < tol * np.abs(ref).max()
