"""Torch frontend: both exporters give quiet, self-contained, dynamic-H/W ONNX that onnxruntime runs exactly."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from etc import zoo
from etc.frontends.torch import export, load_factory
from tests.zoo_helpers import NAMES, astronaut, max_diff, ort_run, rand_image, small_kw, torch_threads

EXPORTERS = ("legacy", "dynamo")
# dynamo exports take ~2-3 s each, so one model per kind of graph (anchor, ECB branches, dual stream + clip,
# ConvTranspose + PReLU); legacy exports are fast and cover the whole zoo.
DYNAMO_SUBSET = ("abpn", "ecbsr_train", "etds_dual", "fsrcnn")
CASES = [("legacy", n) for n in NAMES] + [("dynamo", n) for n in DYNAMO_SUBSET]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@functools.cache
def exported(exporter: str, name: str, scale: int = 3) -> tuple[nn.Module, onnx.ModelProto]:
    net = zoo.build(name, scale=scale, seed=1, **small_kw(name))
    return net, export(net, exporter=exporter)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize(("exporter", "name"), CASES)
def test_onnxruntime_reproduces_torch_at_two_sizes(exporter: str, name: str) -> None:
    net, model = exported(exporter, name)
    onnx.checker.check_model(model)
    assert [v.name for v in model.graph.input] == ["input"]
    assert [v.name for v in model.graph.output] == ["output"]
    in_dims, out_dims = _dims(model.graph.input[0]), _dims(model.graph.output[0])
    assert in_dims[:2] == [1, 3] and all(isinstance(d, str) and d for d in in_dims[2:])
    assert out_dims[:2] == [1, 3] and all(isinstance(d, str) and d for d in out_dims[2:])
    for x in (astronaut(12, 16), rand_image(9, 13, seed=2)):
        with torch.no_grad():
            want = net(x)
        got = ort_run(model, x)
        assert got.shape == tuple(want.shape)
        scale = max(1.0, float(want.max() - want.min()))  # untrained nets reach large outputs
        assert max_diff(got, want) < 1e-5 * scale


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_default_opsets(exporter: str) -> None:
    _, model = exported(exporter, "abpn")
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert opset == {"legacy": 17, "dynamo": 18}[exporter]


def test_static_export_has_fixed_sizes() -> None:
    net = zoo.build("plain", scale=2, M=1, C=4)
    model = export(net, rand_image(10, 11), dynamic_hw=False, exporter="legacy", opset=18)
    assert _dims(model.graph.input[0]) == [1, 3, 10, 11]
    assert _dims(model.graph.output[0]) == [1, 3, 20, 22]
    assert {o.domain: o.version for o in model.opset_import}[""] == 18


def test_custom_names_and_no_files_left(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    net = zoo.build("abpn", scale=2, M=1, C=4).train()
    model = export(net, exporter="legacy", input_name="lr", output_name="sr")
    assert [v.name for v in model.graph.input] == ["lr"]
    assert [v.name for v in model.graph.output] == ["sr"]
    assert net.training, "export must restore the module's mode"
    assert list(tmp_path.iterdir()) == []
    assert all(not t.HasField("data_location") or t.data_location == 0 for t in model.graph.initializer)


def test_dynamo_export_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    net = zoo.build("plain", scale=2, M=1, C=4)
    export(net, exporter="dynamo")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_unknown_exporter_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown exporter"):
        export(zoo.build("plain", scale=2, M=1, C=4), exporter="jit")  # type: ignore[arg-type]


# The exact op sequences the compiler's rules are written against (torch 2.13). A change here means an
# exporter changed shape: update the rules' patterns, not just this list.
ANCHOR_OPS = {
    "dynamo": ["Unsqueeze", "Expand", "Shape", "Concat", "Reshape", "Add", "DepthToSpace"],
    "legacy": ["Constant", "Unsqueeze", "Constant", "Tile", "Shape", "Constant", "Constant", "Constant", "Slice",
               "Constant", "Constant", "Constant", "Slice", "Constant", "Concat", "Reshape", "Add", "DepthToSpace"],
}  # fmt: skip
MASK_BRANCH = {
    "dynamo": ["Conv", "Conv", "Mul", "Add", "Add"],
    "legacy": ["Conv", "Constant", "Conv", "Mul", "Add", "Add"],
}
ECB_HEAD = {
    "dynamo": ["Conv", "Conv", "Conv", "Add"],
    "legacy": ["Conv", "Constant", "Constant", "ConstantOfShape", "Concat", "Constant", "Reshape", "Constant",
               "Constant", "Constant", "Constant", "Slice", "Transpose", "Constant", "Reshape", "Cast", "Pad",
               "Conv", "Conv", "Add"],
}  # fmt: skip


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_abpn_anchor_op_sequence(exporter: str) -> None:
    _, model = exported(exporter, "abpn")
    ops = _ops(model)
    body = ["Conv", "Relu"] * 4 + ["Conv"]  # M=2: first, 2 blocks, head conv + ReLU, last conv
    assert ops == body + ANCHOR_OPS[exporter]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_ecbsr_train_op_sequence(exporter: str) -> None:
    _, model = exported(exporter, "ecbsr_train")
    block = ECB_HEAD[exporter] + MASK_BRANCH[exporter] * 3
    assert _ops(model) == [*block, "PRelu"] * 3 + block + ANCHOR_OPS[exporter]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    kernels = [tuple(a.ints) for n in convs[:2] for a in n.attribute if a.name == "kernel_shape"]
    assert kernels == [(3, 3), (1, 1)]
    pads = {a.name: list(a.ints) for a in convs[1].attribute}.get("pads", [0, 0, 0, 0])
    # dynamo folds the zero Pad into the 1x1 conv; legacy keeps one Pad node shared by the four 1x1 branches
    assert pads == ([1, 1, 1, 1] if exporter == "dynamo" else [0, 0, 0, 0])
    if exporter == "legacy":
        pad_out = next(n.output[0] for n in model.graph.node if n.op_type == "Pad")
        assert sum(pad_out in n.input for n in convs) == 4


# --- load_factory ----------------------------------------------------------------------------------------------


def test_load_factory_from_module_and_file(tmp_path: Path) -> None:
    assert load_factory("etc.zoo:build") is zoo.build
    assert load_factory("etc.zoo:ABPN.from_state_dict") == zoo.ABPN.from_state_dict
    file = tmp_path / "my_models.py"
    file.write_text("def make(scale=2):\n    return scale * 10\n")
    assert load_factory(f"{file}:make")(3) == 30


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("etc.zoo", "expected 'file.py:Name'"),
        (":build", "expected 'file.py:Name'"),
        ("etc.zoo:", "expected 'file.py:Name'"),
        ("etc.no_such_module:f", "module not found"),
        ("missing_dir/models.py:make", "file not found"),
        ("etc.zoo:no_such_factory", "no attribute"),
        ("etc.zoo:__doc__", "not callable"),
    ],
)
def test_load_factory_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_factory(spec)
