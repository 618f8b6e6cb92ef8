"""Loading refuses bad models with one clear line; saving is atomic; external data stays inside the folder."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from etc.errors import BadModelError
from etc.frontends.onnx_io import load, save
from tests.fold_helpers import graph


@pytest.fixture
def model(rng):
    return graph(
        "output = Conv <pads = [1, 1, 1, 1]> (input, w, b)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
    )


def test_round_trip(tmp_path, model):
    path = save(model, tmp_path / "m.onnx")
    assert load(path).SerializeToString() == model.SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"\x00\x01garbage" * 50, "not"), (b"hello world, not a model", "not")],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(BadModelError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_truncated_model(tmp_path, model):
    path = tmp_path / "t.onnx"
    path.write_bytes(model.SerializeToString()[:60])
    with pytest.raises(BadModelError):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(BadModelError, match="no such file"):
        load(tmp_path / "nope.onnx")


def test_unsupported_opset(tmp_path, model):
    model.opset_import[0].version = 7
    path = tmp_path / "old.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(BadModelError, match="opset 7"):
        load(path)


def test_non_float_input_is_refused(tmp_path):
    m = graph(
        "output = Cast <to = 1> (input)", inputs="int64[1,3,H,W] input", outputs="float[1,3,H,W] output"
    )
    path = tmp_path / "int.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(BadModelError, match="float image"):
        load(path)


def test_external_data_inside_folder_loads(tmp_path, model):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(
        copy, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0
    )
    loaded = load(tmp_path / "ext.onnx")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(loaded.graph.initializer[0]),
        onnx.numpy_helper.to_array(model.graph.initializer[0]),
    )


def test_external_data_escaping_the_folder_is_refused(tmp_path, model):
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save_model(
        model,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        location="secret.data",
        size_threshold=0,
    )
    proto = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    (inner / "m.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(BadModelError, match="outside the model's folder"):
        load(inner / "m.onnx")


def test_missing_external_data_is_named(tmp_path, model):
    onnx.save_model(
        model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="gone.data", size_threshold=0
    )
    os.remove(tmp_path / "gone.data")
    with pytest.raises(BadModelError, match=r"gone\.data"):
        load(tmp_path / "ext.onnx")


def test_save_refuses_to_overwrite_the_input(tmp_path, model):
    path = save(model, tmp_path / "m.onnx")
    with pytest.raises(BadModelError, match="in-place"):
        save(model, path, overwrite_input=str(path))
