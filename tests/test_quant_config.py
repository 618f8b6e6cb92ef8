"""One set of quantization options (etc.quant.config.QuantConfig) for the API and the command line, and the flow
as named, timed steps over one state (etc.quant.quantizer): the keywords, the CLI options and the config agree;
the report keeps every field as strict JSON; each step says whether it ran and how long it took; the clip
structures are counted once per float model a step produces."""

from __future__ import annotations

import dataclasses
import inspect
import json

import click
import numpy as np
import pytest

import etc
from etc.errors import BadModelError
from etc.quant import config as qconfig
from etc.quant import quantizer
from etc.quant.config import QuantConfig
from tests.test_quant_equalize import _chain

# options of `etc quantize` that are about the command, not about quantization
CLI_ONLY = {
    "model",
    "output",
    "calib",
    "summary",
    "as_json",
    "input_ranges",
    "threads",
    "device",
    "htp_size",
}  # device: where the report also counts cycles
CHOICES = {
    "method": qconfig.METHODS,
    "rounding": qconfig.ROUNDINGS,
    "target": qconfig.TARGETS,
    "a16_cost": qconfig.A16_COSTS,
}


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(QuantConfig)}


def test_quantize_keywords_are_the_config_fields_with_the_same_defaults():
    params = inspect.signature(etc.quantize).parameters
    keywords = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    keywords.pop("config"), keywords.pop("progress")
    assert keywords == {name: f.default for name, f in _fields().items()}
    for name in _fields():
        assert f"    {name}=" in etc.quantize.__doc__, name  # the generated options section


def test_cli_quantize_options_are_config_fields_with_the_same_defaults_and_choices():
    from etc.commands.quantize import quantize as command

    fields = _fields()
    parsed = command.make_context("quantize", ["m.onnx", "-o", "q.onnx"]).params  # the defaults as parsed
    for param in command.params:
        if param.name in CLI_ONLY:
            continue
        assert param.name in fields, f"--{param.name} of `etc quantize` is not a QuantConfig field"
        assert parsed[param.name] == fields[param.name].default, param.name
        if isinstance(param.type, click.Choice):
            assert tuple(param.type.choices) == CHOICES[param.name], param.name
    covered = {p.name for p in command.params} | {"safe_u8s8"}  # safe_u8s8: API only, implied by --target
    assert set(fields) <= covered


def test_options_go_in_a_config_or_as_keywords_not_both(rng):
    model = _chain(rng, c=4)
    with pytest.raises(TypeError, match="rounding"):
        etc.quantize(model, [], config=QuantConfig(), rounding="gptq")


@pytest.mark.parametrize(
    "options, words",
    [
        ({"method": "best"}, "unknown calibration method 'best'"),
        ({"rounding": "up"}, "unknown rounding 'up'"),
        ({"split": 3, "stagger": 0.6}, "need 0 <= stagger"),
        ({"split_budget": 0.5}, "need a MAC multiple >= 1"),
    ],
)
def test_a_bad_option_is_named_before_any_work(options, words):
    with pytest.raises(BadModelError, match=words):
        QuantConfig(**options).validate()


def _run(rng, model=None, **options):
    model = model if model is not None else _chain(rng, c=6, clip_tail=True)
    images = [rng.uniform(0, 1, size=(1, 3, 12, 10)).astype(np.float32) for _ in range(4)]
    return etc.quantize(model, images, scale=1, num=4, **options)


def test_quantize_returns_the_model_and_a_report_that_keeps_every_field(rng):
    from tests.test_quant_split import _model

    qmodel, report = _run(rng, _model(rng, c=6), split=2)
    assert isinstance(report, etc.QuantReport) and report.config == QuantConfig(scale=1, num=4, split=2)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in qmodel.graph.node}
    data = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert set(data) == {f.name for f in dataclasses.fields(report)}
    assert (
        data["config"]["split"] == 2
        and data["split"]
        and set(data["split"][0])
        == {
            "tensor",
            "channels",
            "added",
            "max_copies",
        }
    )
    assert data["steps"] and data["methods"] and data["ranges"]
    _, clipped = _run(rng)
    assert clipped.capped and json.loads(json.dumps(clipped.as_dict()))["capped"] == clipped.capped


def test_every_step_is_listed_in_order_with_its_time_and_whether_it_ran(rng):
    _, report = _run(rng, rounding="gptq", bias_correction=False)
    assert [s.name for s in report.steps] == [s.name for s in quantizer.STEPS]
    ran = {s.name: s.ran for s in report.steps}
    assert ran["calibrate"] and ran["ranges"] and ran["rounding"] and ran["write"] and ran["equalize"]
    assert not ran["split"] and not ran["stagger"] and not ran["bias correction"] and not ran["finetune"]
    assert all(s.seconds >= 0 for s in report.steps) and all(
        s.seconds == 0 for s in report.steps if not s.ran
    )
    assert report.seconds == pytest.approx(sum(s.seconds for s in report.steps))
    _, nearest = _run(rng, rounding="nearest")
    assert not {s.name: s.ran for s in nearest.steps}["rounding"]


def test_clip_structures_are_counted_once_per_float_model_a_step_produces(rng, monkeypatch):
    seen: list[int] = []
    real = quantizer.clip_structures

    def counting(model):
        seen.append(id(model))
        return real(model)

    monkeypatch.setattr(quantizer, "clip_structures", counting)
    from tests.test_quant_split import _model

    _, report = _run(rng, _model(rng, c=6), split=2)
    assert report.split and report.staggered  # the steps that each produce a model ran
    assert len(seen) == len(set(seen))  # never twice for the same model
    # before split, equalize and stagger, then once for ranges, rounding and bias correction (the rounded
    # model keeps the clip structures of the float model its ranges came from)
    assert len(seen) == 4


def test_the_command_line_runs_the_same_config(rng, tmp_path):
    """`etc quantize` builds a QuantConfig from its options: same bytes as the API with the same options."""
    import onnx
    from click.testing import CliRunner

    from etc.cli import cli

    model = _chain(rng, c=6)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    out = tmp_path / "q.onnx"
    args = ["quantize", str(src), "-o", str(out), "--scale", "1", "--num", "4", "--patch", "16"]
    result = CliRunner().invoke(cli, [*args, "--rounding", "nearest", "--no-summary", "--json"])
    assert result.exit_code == 0, result.output
    api, report = etc.quantize(src, "samples", scale=1, num=4, patch=16, rounding="nearest")
    assert onnx.load(out).SerializeToString() == api.SerializeToString()
    assert json.loads(result.output)["config"] == {**report.config.as_dict(), "input_ranges": {}}
