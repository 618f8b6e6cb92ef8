"""Hostile and malformed models: each one gives one clear line, exit code 2, no traceback, no output, input untouched.

The corpus is generated here from a small valid model (corrupted bytes, broken protos, bad external data, a
sparse >2 GB external data file) and fed to ``etc optimize`` and ``etc info`` through the real entry point
(``etc.cli.main``, in process, with file-descriptor capture so onnxruntime's own logging would show up too).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from etc.cli import main

Writer = Callable[[Path], Path]


def _conv_model(c_in: int = 3) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, c_in, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    node = helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv")
    relu = helper.make_node("Relu", ["conv"], ["output"], name="relu")
    graph = helper.make_graph(
        [node, relu],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c_in, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, "H", "W"])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _edit(fn: Callable[[onnx.ModelProto], None]) -> Writer:
    def write(folder: Path) -> Path:
        model = _conv_model()
        fn(model)
        return _save(model, folder / "model.onnx")

    return write


def _raw(data: bytes) -> Writer:
    def write(folder: Path) -> Path:
        (folder / "model.onnx").write_bytes(data)
        return folder / "model.onnx"

    return write


def _valid_bytes() -> bytes:
    return _conv_model().SerializeToString()


def _graph(nodes, inputs, outputs, inits=(), opset=17) -> Writer:
    def write(folder: Path) -> Path:
        graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        return _save(model, folder / "model.onnx")

    return write


def _vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _external(location: str | None = None, *, tamper=None, remove: bool = False) -> Writer:
    """The conv model with its weights in an external file, optionally re-pointed, tampered with or removed."""

    def write(folder: Path) -> Path:
        model = _conv_model()
        path = folder / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="w.data", size_threshold=0)
        proto = onnx.load(str(path), load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location" and location is not None:
                    entry.value = location
            if tamper:
                tamper(tensor)
        if remove:
            (folder / "w.data").unlink()
        return _save(proto, path)

    return write


def _set_external(key: str, value: str):
    def tamper(tensor: onnx.TensorProto) -> None:
        for entry in tensor.external_data:
            if entry.key == key:
                entry.value = value
                return
        tensor.external_data.add(key=key, value=value)

    return tamper


def _over_2gb(folder: Path) -> Path:
    """A valid-looking model whose weight lives in a sparse 2.5 GB external file (nothing is written but a hole)."""
    n = (5 * 2**30) // 2 // 4  # float32 elements of 2.5 GB
    data = folder / "big.data"
    with open(data, "wb") as handle:
        handle.truncate(n * 4)
    weight = TensorProto()
    weight.name = "w"
    weight.data_type = TensorProto.FLOAT
    weight.dims.extend([n // 9, 1, 3, 3])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="big.data")
    weight.external_data.add(key="offset", value="0")
    weight.external_data.add(key="length", value=str(n // 9 * 9 * 4))
    node = helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [_vi("input", [1, 1, "H", "W"])], [_vi("output", [1, n // 9, "H", "W"])], [weight]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return _save(model, folder / "model.onnx")


def _huge_initializer(folder: Path) -> Path:
    """An initializer declaring 2^40 elements with external data of a few bytes."""
    (folder / "w.data").write_bytes(b"\0" * 64)
    weight = TensorProto()
    weight.name = "w"
    weight.data_type = TensorProto.FLOAT
    weight.dims.extend([2**20, 2**20, 1, 1])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="w.data")
    node = helper.make_node("Conv", ["input", "w"], ["output"])
    graph = helper.make_graph(
        [node], "g", [_vi("input", [1, 2**20, 4, 4])], [_vi("output", [1, 2**20, 4, 4])], [weight]
    )
    return _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        folder / "model.onnx",
    )


def _cycle(model: onnx.ModelProto) -> None:
    model.graph.node[0].input[0] = "output"
    model.graph.node[1].input[0] = "conv"


def _rng_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def _wrong_raw_size(model: onnx.ModelProto) -> None:
    model.graph.initializer[0].raw_data = b"\0" * 10
    del model.graph.initializer[0].float_data[:]


def _weight_as_int(model: onnx.ModelProto) -> None:
    old = model.graph.initializer[0]
    new = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.int64), old.name)
    old.CopyFrom(new)


def _directory(folder: Path) -> Path:
    (folder / "dir.onnx").mkdir()
    return folder / "dir.onnx"


CONV = [helper.make_node("Conv", ["input", "w"], ["output"])]
W3 = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")

CORPUS: dict[str, tuple[Writer, str]] = {
    # unreadable files
    "empty_file": (_raw(b""), "empty file"),
    "random_bytes": (_raw(_rng_bytes(4096, 0)), "not"),
    "random_bytes_small": (_raw(_rng_bytes(7, 1)), "not"),
    "text_file": (_raw(b"ir_version: 8\ngraph { name: 'x' }\n"), "not"),
    "zeros": (_raw(b"\0" * 1000), "not"),
    "truncated_half": (_raw(_valid_bytes()[: len(_valid_bytes()) // 2]), "not"),
    "truncated_tail": (_raw(_valid_bytes()[:-3]), "not"),
    "truncated_head": (_raw(_valid_bytes()[:12]), "not"),
    "directory": (_directory, "folder"),
    "missing_file": (lambda folder: folder / "nothing.onnx", "no such file"),
    # versions
    "ir_version_future": (_edit(lambda m: setattr(m, "ir_version", 99)), "IR version 99"),
    "ir_version_zero": (_edit(lambda m: setattr(m, "ir_version", 0)), "IR version"),
    "opset_too_old": (_edit(lambda m: setattr(m.opset_import[0], "version", 7)), "opset 7"),
    "opset_future": (_edit(lambda m: setattr(m.opset_import[0], "version", 99)), "opset 99"),
    "no_default_opset": (_edit(lambda m: setattr(m.opset_import[0], "domain", "com.example")), "opset"),
    # broken graphs
    "missing_initializer": (_edit(lambda m: m.graph.initializer.pop(0)), "w"),
    "cycle": (_edit(_cycle), "invalid"),
    "dangling_input": (_edit(lambda m: m.graph.node[1].input.__setitem__(0, "ghost")), "ghost"),
    "duplicate_output_name": (_edit(lambda m: m.graph.node[1].output.__setitem__(0, "conv")), "invalid"),
    "output_not_produced": (_edit(lambda m: setattr(m.graph.output[0], "name", "nowhere")), "nowhere"),
    "unknown_op": (_edit(lambda m: setattr(m.graph.node[1], "op_type", "NotAnOp")), "NotAnOp"),
    "custom_domain_op": (_edit(lambda m: setattr(m.graph.node[1], "domain", "com.example")), "invalid"),
    "bad_attribute_type": (
        _edit(lambda m: m.graph.node[0].attribute.append(helper.make_attribute("kernel_shape", "3x3"))),
        "invalid",
    ),
    "mismatched_conv_channels": (
        _graph(CONV, [_vi("input", [1, 5, 8, 8])], [_vi("output", [1, 4, 8, 8])], [W3]),
        "disagree",
    ),
    "mismatched_add_shapes": (
        _graph(
            [helper.make_node("Add", ["input", "k"], ["output"])],
            [_vi("input", [1, 3, 8, 8])],
            [_vi("output", [1, 3, 8, 8])],
            [numpy_helper.from_array(np.ones((1, 4, 8, 8), np.float32), "k")],
        ),
        "disagree",
    ),
    "wrong_raw_data_size": (_edit(_wrong_raw_size), "invalid"),
    "initializer_wrong_type": (_edit(_weight_as_int), "invalid"),
    # inputs ETC cannot treat as images
    "non_float_input": (
        _graph(
            [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT)],
            [_vi("input", [1, 3, "H", "W"], TensorProto.INT64)],
            [_vi("output", [1, 3, "H", "W"])],
        ),
        "float image",
    ),
    "input_not_4d": (
        _graph(
            [helper.make_node("Relu", ["input"], ["output"])], [_vi("input", [3, 8])], [_vi("output", [3, 8])]
        ),
        "4-D",
    ),
    "no_inputs": (
        _graph(
            [helper.make_node("Relu", ["k"], ["output"])],
            [],
            [_vi("output", [1, 3, 2, 2])],
            [numpy_helper.from_array(np.ones((1, 3, 2, 2), np.float32), "k")],
        ),
        "no inputs",
    ),
    "no_graph": (_edit(lambda m: (m.graph.ClearField("node"), m.graph.ClearField("output"))), "not an ONNX"),
    "huge_input_dims": (
        _graph(
            [helper.make_node("Relu", ["input"], ["output"])],
            [_vi("input", [1, 3, 2**31, 2**31])],
            [_vi("output", [1, 3, 2**31, 2**31])],
        ),
        "too large",
    ),
    "negative_input_dim": (
        _graph(
            [helper.make_node("Relu", ["input"], ["output"])],
            [_vi("input", [1, 3, -4, 8])],
            [_vi("output", [1, 3, -4, 8])],
        ),
        "negative",
    ),
    # external data
    "external_data_missing": (_external(remove=True), "missing"),
    "external_data_outside_folder": (_external("../w.data"), "outside the model's folder"),
    "external_data_absolute_path": (_external("/etc/hostname"), "outside the model's folder"),
    "external_data_offset_past_end": (_external(tamper=_set_external("offset", str(10**6))), "external data"),
    "external_data_length_too_long": (_external(tamper=_set_external("length", str(10**6))), "external data"),
    "external_data_bad_offset_text": (_external(tamper=_set_external("offset", "lots")), "external data"),
    "huge_declared_initializer": (_huge_initializer, "2 GB"),
    "over_2gb_external_data": (_over_2gb, "2 GB"),
}


def _run(capfd, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capfd.readouterr()
    return int(info.value.code or 0), out, err


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_optimize_refuses_with_one_line(case, tmp_path, capfd):
    writer, message = CORPUS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = writer(folder)
    before = {
        p.name: (p.stat().st_size, p.read_bytes() if p.is_file() and p.stat().st_size < 2**20 else None)
        for p in folder.iterdir()
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = _run(capfd, "optimize", str(path), "-o", str(out_dir / "plain.onnx"))
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("etc: error: "), err
    assert "Traceback" not in err + out
    assert message in lines[0], lines[0]
    assert list(out_dir.iterdir()) == []  # no output, no temporary file left behind
    after = {
        p.name: (p.stat().st_size, p.read_bytes() if p.is_file() and p.stat().st_size < 2**20 else None)
        for p in folder.iterdir()
    }
    assert after == before  # the input folder is untouched


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_info_refuses_with_one_line(case, tmp_path, capfd):
    writer, message = CORPUS[case]
    path = writer(tmp_path)
    code, _, err = _run(capfd, "info", str(path))
    assert code == 2, (code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err


def test_over_2gb_case_stays_fast_and_sparse(tmp_path):
    """The >2 GB file is a hole: it must not cost 2 GB of disk (or of reading) in CI."""
    path = _over_2gb(tmp_path)
    data = tmp_path / "big.data"
    assert data.stat().st_size > 2**31
    if hasattr(os.stat_result, "st_blocks"):
        assert data.stat().st_blocks * 512 < 2**20
    assert path.stat().st_size < 4096
