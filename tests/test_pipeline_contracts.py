"""The pipeline holds every pass to the contract of Pass.run and never stops quietly."""

from __future__ import annotations

import onnx
import pytest

from etc.errors import LimitWarning, PassContractError
from etc.pipeline import CLEANUP, Pass, PassResult, run_pipeline
from etc.testing import conv_relu_model


@pytest.fixture
def model() -> onnx.ModelProto:
    return conv_relu_model()


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


class EditsItsInput(Pass):
    name = "edits_its_input"

    def run(self, model, ctx):
        model.doc_string = "edited in place"
        return PassResult(_copy(model), True)


class CopyCalledUnmodified(Pass):
    name = "copy_called_unmodified"

    def run(self, model, ctx):
        return PassResult(_copy(model), False)


class SameBytesCalledModified(Pass):
    name = "same_bytes_called_modified"

    def run(self, model, ctx):
        return PassResult(_copy(model), True, {"nothing": 1})


class ReturnsTheModel(Pass):
    name = "returns_the_model"

    def run(self, model, ctx):
        return model


@pytest.mark.parametrize(
    ("broken", "what"),
    [
        (EditsItsInput, "changed its input model in place"),
        (CopyCalledUnmodified, "reported modified=False but returned another model object"),
        (SameBytesCalledModified, "reported modified=True but returned a model byte-identical to its input"),
        (ReturnsTheModel, "returned ModelProto, not a PassResult"),
    ],
)
def test_a_pass_that_breaks_the_contract_is_named(model, broken, what):
    with pytest.raises(PassContractError, match=f"pass '{broken.name}' broke the pass contract: it {what}"):
        run_pipeline(model, [broken()])


class Countdown(Pass):
    """A cleanup pass that changes the doc string ``times`` times, then leaves the model alone."""

    name = "countdown"
    phase = CLEANUP

    def __init__(self, times: int) -> None:
        self.left = times

    def run(self, model, ctx):
        if self.left == 0:
            return PassResult(model, False)
        self.left -= 1
        out = _copy(model)
        out.doc_string = f"{self.left} left"
        return PassResult(out, True, {"tick": 1})


def test_a_cleanup_pass_that_does_not_settle_warns(model):
    with pytest.warns(LimitWarning, match="pass 'countdown' still changed the model after 3 runs in a row"):
        result = run_pipeline(model, [Countdown(3)], max_rounds=3)
    assert result.rounds == 2 and len(result.notes) == 1


def test_a_cleanup_pass_that_settles_in_time_is_quiet(model, recwarn):
    result = run_pipeline(model, [Countdown(2)], max_rounds=3)
    assert result.hits == {"countdown/tick": 2} and not result.notes
    assert not [w for w in recwarn if issubclass(w.category, LimitWarning)]
