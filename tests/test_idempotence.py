"""Idempotence and determinism: optimize(optimize(m)) == optimize(m) byte for byte; two runs give the same bytes.

Checked on small zoo exports from both torch exporters and on random fuzz graphs, through the Python API
(``etc.optimize``) and through ``etc optimize`` writing files. Also: outputs are written atomically and ``-o``
equal to the input path is refused unless ``--in-place``.
"""

from __future__ import annotations

import warnings

import onnx
import pytest
from hypothesis import HealthCheck, given, settings

from etc import api
from etc.cli import main
from etc.errors import EtcError
from etc.tools import fuzz

PASSES = "fold,rep,et"


def _bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def _optimize(model: onnx.ModelProto, **kw) -> onnx.ModelProto:
    out, _ = api.optimize(model, PASSES, verify=False, check_each_pass=False, **kw)
    return out


@pytest.fixture(scope="module", params=[("abpn", "legacy"), ("ecbsr", "dynamo"), ("etds", "legacy")])
def zoo_export(request):
    torch = pytest.importorskip("torch")
    from etc import zoo
    from etc.frontends.torch import export

    name, exporter = request.param
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = zoo.build(name, scale=2, M=2, C=8)
        example = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
        return export(net, example, dynamic_hw=True, exporter=exporter)


def test_zoo_export_is_idempotent_and_deterministic(zoo_export):
    once = _optimize(zoo_export)
    again = _optimize(zoo_export)
    assert _bytes(again) == _bytes(once), "two runs on the same model differ"
    twice = _optimize(once)
    assert _bytes(twice) == _bytes(once), "optimizing the optimized model changed it"
    assert api.verify(zoo_export, once).equivalent


def test_zoo_export_with_options_is_idempotent(zoo_export):
    kw = {"prelu_to_relu": True, "align_channels": 4}
    once = _optimize(zoo_export, **kw)
    assert _bytes(_optimize(once, **kw)) == _bytes(once)
    assert _bytes(_optimize(zoo_export, **kw)) == _bytes(once)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(fuzz.graph_specs(max_layers=5))
def test_fuzz_graphs_are_idempotent_and_deterministic(spec):
    model = fuzz.build(spec)
    kw = {
        "input_ranges": {"input": spec.input_range},
        "prelu_to_relu": spec.prelu,
        "align_channels": spec.align,
    }
    try:
        once = _optimize(model, **kw)
    except Exception as exc:  # failures are test_fuzz's business; here only successful runs are compared
        pytest.skip(f"pipeline failed on this graph: {exc}")
    assert _bytes(_optimize(model, **kw)) == _bytes(once)
    assert _bytes(_optimize(once, **kw)) == _bytes(once)


def _cli(capfd, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    return int(info.value.code or 0), capfd.readouterr().err


@pytest.fixture
def model_file(tmp_path):
    spec = fuzz.GraphSpec(
        (fuzz.Layer("branches", 0, (3, 1, 1)), fuzz.Layer("anchor", 0, (1,))), height=6, width=7
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(fuzz.build(spec).SerializeToString())
    return path


def test_cli_output_is_byte_identical_across_runs_and_reruns(model_file, tmp_path, capfd):
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    assert _cli(capfd, "optimize", str(model_file), "-o", str(a))[0] == 0
    assert _cli(capfd, "optimize", str(model_file), "-o", str(b))[0] == 0
    assert _cli(capfd, "optimize", str(a), "-o", str(c))[0] == 0
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "c.onnx", "m.onnx"]


def test_output_equal_to_input_is_refused_without_in_place(model_file, capfd):
    before = model_file.read_bytes()
    for spelling in (str(model_file), str(model_file.parent / "." / model_file.name)):
        code, err = _cli(capfd, "optimize", str(model_file), "-o", spelling)
        assert code == 2 and "--in-place" in err and len(err.strip().splitlines()) == 1
        assert model_file.read_bytes() == before


def test_output_through_a_symlink_to_the_input_is_refused(model_file, tmp_path, capfd):
    link = tmp_path / "link.onnx"
    link.symlink_to(model_file)
    before = model_file.read_bytes()
    code, err = _cli(capfd, "optimize", str(model_file), "-o", str(link))
    assert code == 2 and "--in-place" in err
    assert model_file.read_bytes() == before


def test_in_place_overwrites_atomically(model_file, capfd):
    expected = _optimize(onnx.load(str(model_file)))
    code, _ = _cli(capfd, "optimize", str(model_file), "-o", str(model_file), "--in-place")
    assert code == 0
    assert onnx.load(str(model_file)).graph.node == expected.graph.node
    assert [p.name for p in model_file.parent.iterdir()] == [model_file.name]  # no temporary file left


def test_failed_write_leaves_the_old_output(model_file, tmp_path, monkeypatch):
    from etc.frontends import onnx_io

    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous result")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    model = onnx.load(str(model_file))
    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", broken)
    with pytest.raises(EtcError, match=r"out\.onnx: cannot write there \(disk full\)"):
        onnx_io.save(model, target)  # names the user's path and the reason, never the temporary file
    monkeypatch.undo()
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx"]
