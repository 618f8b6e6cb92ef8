"""The pass pipeline: registry, parsing, fixed point, instruments."""

from __future__ import annotations

import onnx
import pytest

from etc.errors import EquivalenceError, OscillationError, UnknownPassError
from etc.pipeline import Dump, NumericCheck, Pass, PassResult, parse_pipeline, register_pass, run_pipeline
from etc.testing import conv_relu_model


@pytest.fixture
def model() -> onnx.ModelProto:
    return conv_relu_model()


class NegateBias(Pass):
    """Test-only pass that breaks equivalence by negating the first initializer named 'b'."""

    name = "negate_bias"

    def run(self, model, ctx):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for init in out.graph.initializer:
            if init.name == "b":
                init.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(init), "b"))
        return PassResult(out, True, {"negate": 1})


class Nothing(Pass):
    name = "nothing"

    def run(self, model, ctx):
        return PassResult(model, False)


class Flip(Pass):
    """Toggles a doc string: reports modified every time, so the pipeline revisits a model."""

    name = "flip"

    def run(self, model, ctx):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.doc_string = "" if model.doc_string else "x"
        return PassResult(out, True, {"flip": 1})


def test_numeric_instrument_names_the_broken_pass(model):
    with pytest.raises(EquivalenceError) as info:
        run_pipeline(model, [Nothing(), NegateBias()], instruments=[NumericCheck()])
    assert info.value.pass_name == "negate_bias"
    assert "negate_bias" in str(info.value)


def test_oscillation_is_detected(model):
    with pytest.raises(OscillationError, match="flip"):
        run_pipeline(model, [Flip()])


def test_unmodified_pipeline_returns_the_same_object(model):
    result = run_pipeline(model, [Nothing()])
    assert result.model is model
    assert result.rounds == 1


def test_parse_pipeline_rejects_unknown_names():
    assert parse_pipeline(" fold, REP ,et") == ["fold", "rep", "et"]
    with pytest.raises(UnknownPassError, match="unknown pass 'nope'"):
        parse_pipeline("fold,nope")
    with pytest.raises(UnknownPassError):
        parse_pipeline(" , ")


def test_register_pass_makes_it_available(model):
    @register_pass("testnothing")
    class _Registered(Nothing):
        pass

    assert "testnothing" in parse_pipeline("testnothing")
    assert run_pipeline(model, "testnothing").model is model


def test_dump_writes_every_modified_model(model, tmp_path):
    @register_pass("testflip_once")
    class Once(Pass):
        def run(self, m, ctx):
            if m.doc_string:
                return PassResult(m, False)
            out = onnx.ModelProto()
            out.CopyFrom(m)
            out.doc_string = "changed"
            return PassResult(out, True, {"once": 1})

    run_pipeline(model, "testflip_once", instruments=[Dump(tmp_path)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00_input.onnx", "01_testflip_once.onnx"]
    assert onnx.load(str(tmp_path / "01_testflip_once.onnx")).doc_string == "changed"
