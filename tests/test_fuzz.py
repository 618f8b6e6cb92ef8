"""Differential fuzzing: random conv graphs through fold,rep,et must compute the same function in onnxruntime.

Derandomized hypothesis runs (80 graphs each, small: channels <= 8, spatial sizes <= 12), one per op focus
so pytest-xdist can spread them; every saved regression model is replayed; and the judge itself is shown to
catch a broken pass and a crashing pass, so a green run means something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings

from etc.pipeline import Pass, PassResult
from etc.tools import fuzz

REGRESSIONS = Path(__file__).with_name("regressions")
# regression file name -> reason it still fails (xfail strict: the test flips when the rule is fixed)
KNOWN_FAILURES: dict[str, str] = {}

FOCUS = {
    "conv": ("conv", "chain", "branches", "stack", "bn", "mul_add", "pad", "relu", "identity"),
    "anchor": ("anchor", "repeat", "d2s", "add", "concat", "clip", "relu", "conv"),
    "activations": ("prelu", "leaky", "clip", "max", "relu", "dual", "add", "chain"),
    "resampling": ("convt", "resize", "slice", "split", "d2s", "conv", "concat", "relu"),
    "signed": ("sub", "neg", "signed", "leaky_carry", "branches", "d2s", "add", "leaky", "conv"),
}
EXAMPLES = 80


def _settings(n: int = EXAMPLES):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _assert_clean(spec: fuzz.GraphSpec) -> None:
    outcome = fuzz.check_spec(spec)
    assert not outcome.failed, (
        f"{outcome.kind} in pass {outcome.pass_name}: {outcome.message} {outcome.where}\nspec: {spec.to_json()}"
    )


@pytest.mark.parametrize("focus", sorted(FOCUS))
def test_pipeline_preserves_random_graphs(focus):
    tried = []

    @_settings()
    @given(fuzz.graph_specs(max_layers=6, max_size=12, max_channels=8, ops=FOCUS[focus]))
    def run(spec):
        tried.append(spec)
        _assert_clean(spec)

    run()
    assert len(tried) >= EXAMPLES  # 80 graphs per focus on every CI run


@_settings(60)
@given(fuzz.graph_specs(max_layers=4))
def test_generated_graphs_are_valid_and_deterministic(spec):
    model = fuzz.build(spec)
    assert fuzz.build(spec).SerializeToString() == model.SerializeToString()
    assert fuzz.spec_of(model) == spec
    for node in model.graph.node:
        assert node.op_type != ""
    shape = model.graph.input[0].type.tensor_type.shape.dim
    assert shape[1].dim_value == spec.channels


def test_spec_round_trips_through_json():
    spec = fuzz.GraphSpec((fuzz.Layer("conv", 1, (3, 4)), fuzz.Layer("anchor")), channels=2, dynamic=True)
    assert fuzz.GraphSpec.from_json(spec.to_json()) == spec


class _BreakBias(Pass):
    """A deliberately wrong pass: adds 0.01 to the first Conv bias it finds."""

    name = "breakbias"

    def run(self, model, ctx):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        conv = next(n for n in out.graph.node if n.op_type == "Conv" and len(n.input) > 2)
        for init in out.graph.initializer:
            if init.name == conv.input[2]:
                value = onnx.numpy_helper.to_array(init) + np.float32(0.01)
                init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
        return PassResult(out, True, {"break": 1})


class _Explode(Pass):
    name = "explode"

    def run(self, model, ctx):
        raise RuntimeError("boom")


def _conv_spec() -> fuzz.GraphSpec:
    return fuzz.GraphSpec((fuzz.Layer("conv", 0, (1,)),), channels=3, height=5, width=6)


def test_judge_catches_a_miscompile_and_names_the_pass():
    outcome = fuzz.check(fuzz.build(_conv_spec()), ["fold", _BreakBias()])
    assert outcome.kind == "miscompile"
    assert outcome.pass_name == "breakbias"


def test_judge_reports_a_crash_with_its_place():
    outcome = fuzz.check(fuzz.build(_conv_spec()), ["fold", _Explode()])
    assert outcome.kind == "crash"
    assert "RuntimeError" in outcome.message and "test_fuzz.py" in outcome.where


def test_shrink_reaches_a_minimal_spec():
    big = fuzz.GraphSpec(
        (
            fuzz.Layer("chain", 1, (5, 9, 2, 7)),
            fuzz.Layer("convt", 0, (1, 2, 3)),
            fuzz.Layer("anchor", 2, (4, 4, 4)),
            fuzz.Layer("relu", 1),
        ),
        channels=5,
        height=11,
        width=9,
        dynamic=True,
        seed=123,
    )

    def has_convtranspose(spec):
        return any(n.op_type == "ConvTranspose" for n in fuzz.build(spec).graph.node)

    assert has_convtranspose(big)
    small = fuzz.shrink(big, has_convtranspose)
    assert has_convtranspose(small)
    assert [layer.op for layer in small.layers] == ["convt"]
    assert (small.channels, small.height, small.width, small.dynamic) == (1, 1, 1, False)


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.onnx")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[p.name]))
        if p.name in KNOWN_FAILURES
        else p
        for p in _regressions()
    ]
    or [pytest.param(None, marks=pytest.mark.skip(reason="no regression model saved"))],
    ids=lambda p: p.stem if p else "none",
)
def test_regression_models_stay_fixed(path):
    outcome = fuzz.check_file(path)
    assert not outcome.failed, f"{path.name}: {outcome.kind} in {outcome.pass_name}: {outcome.message}"
