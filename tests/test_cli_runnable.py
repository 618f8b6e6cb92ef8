"""Models onnxruntime runs only at some sizes: optimized at the traced size with a warning, or exit 2; never 3."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from etc.frontends.onnx_io import save
from etc.testing import GraphBuilder
from tests.test_cli import run


def baked_expand(traced: tuple[int, int] | None) -> onnx.ModelProto:
    """input -> Conv1x1 -> Add(Expand(bias, [1, 4, H, W] baked)): runs only at ``traced``.

    Without ``traced`` the baked size is 2x3, below anything ETC tries: onnxruntime runs it at no size ETC finds.
    """
    b = GraphBuilder(3, seed=2)
    y = b.conv("input", 3, 4, 1)
    h, w = traced or (2, 3)
    shape = b.const(np.array([1, 4, h, w], np.int64), "shape")
    bias = b.op("Expand", [b.const(np.full((1, 4, 1, 1), 0.5, np.float32), "bias"), shape])
    return b.model(b.op("Add", [y, bias]))


def test_a_model_that_runs_only_at_its_traced_size_is_optimized_there(tmp_path):
    src = save(baked_expand((13, 11)), tmp_path / "traced.onnx")
    out_path = tmp_path / "out.onnx"
    out = run("optimize", str(src), "-o", str(out_path))
    assert out.returncode == 0, out.stderr
    assert "warning" in out.stderr and "(Add) fails" in out.stderr and "runs only at 13x11" in out.stderr
    assert "Traceback" not in out.stderr
    dims = [d.dim_value for d in onnx.load(str(out_path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 13, 11]
    verify = run("verify", str(src), str(out_path))
    assert verify.returncode == 0, verify.stderr
    assert "runs only at 13x11" in verify.stderr


@pytest.mark.parametrize("command", ["optimize", "verify"])
def test_a_model_onnxruntime_cannot_run_is_exit_2_naming_the_node(tmp_path, command):
    src = save(baked_expand(None), tmp_path / "broken.onnx")
    args = [str(src), "-o", str(tmp_path / "out.onnx")] if command == "optimize" else [str(src), str(src)]
    out = run(command, *args)
    assert out.returncode == 2, out.stderr
    assert "onnxruntime cannot run node 'Add" in out.stderr and "(Add)" in out.stderr, out.stderr
    assert "re-export" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_help_documents_every_exit_code():
    out = run("--help")
    assert out.returncode == 0
    assert all(f"{code} " in out.stdout for code in ("0", "1", "2", "3")) and "internal error" in out.stdout


def test_published_ecb_legacy_dynamic_export_is_optimized_at_its_traced_size(tmp_path):
    """The published ECB code exported with dynamic H/W by the legacy exporter: one conv per block, exit 0."""
    torch = pytest.importorskip("torch")
    from etc.frontends.torch import export
    from etc.zoo.published.ecbsr import PublishedECBSR

    torch.manual_seed(0)
    src = save(export(PublishedECBSR(0, 4, 2, act="relu"), exporter="legacy"), tmp_path / "ecb.onnx")
    out_path = tmp_path / "out.onnx"
    out = run("optimize", str(src), "--passes", "fold,rep", "-o", str(out_path))
    assert out.returncode == 0, out.stderr
    assert "runs only at 17x19" in out.stderr and "(Expand) fails" in out.stderr
    ops = [n.op_type for n in onnx.load(str(out_path)).graph.node]
    assert ops.count("Conv") == 2 and "ScatterND" not in ops, ops


def test_quantize_works_at_the_traced_size_or_says_why_not(tmp_path):
    """Square traced size: calibrated on patches of that size. Non-square: exit 2 with what to do."""
    square = save(baked_expand((16, 16)), tmp_path / "square.onnx")
    out = run("quantize", str(square), "--calib", "samples", "--num", "2", "-o", str(tmp_path / "q.onnx"))
    assert out.returncode == 0, out.stderr
    assert "runs only at 16x16" in out.stderr and (tmp_path / "q.onnx").exists()
    oblong = save(baked_expand((13, 11)), tmp_path / "oblong.onnx")
    out = run("quantize", str(oblong), "--calib", "samples", "-o", str(tmp_path / "q2.onnx"))
    assert out.returncode == 2, out.stderr
    assert "only 13x11 inputs" in out.stderr and "re-export" in out.stderr and "Traceback" not in out.stderr


def test_verify_names_a_candidate_onnxruntime_cannot_run(tmp_path):
    good = save(baked_expand((13, 11)), tmp_path / "good.onnx")
    bad = save(baked_expand(None), tmp_path / "bad.onnx")
    out = run("verify", str(good), str(bad))
    assert out.returncode == 2, out.stderr
    assert f"{bad}: onnxruntime cannot run" in out.stderr and "(Add)" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
