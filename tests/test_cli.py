"""The command line: exit codes, one-line errors, no traceback, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from etc.frontends.onnx_io import save
from tests.fold_helpers import graph


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etc.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def model_path(tmp_path):
    rng = np.random.default_rng(0)
    m = graph(
        "i = Identity(input)\nc = Conv <pads = [1, 1, 1, 1]> (i, w, b)\ns = Mul(c, k)\noutput = Max(s, zero)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        k=rng.uniform(0.5, 2, size=(4, 1, 1)).astype(np.float32),
        zero=np.float32(0),
    )
    return save(m, tmp_path / "model.onnx")


def test_help_is_fast_and_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("optimize", "verify", "info", "export", "passes"):
        assert command in out.stdout


def test_import_etc_does_not_import_torch_or_onnxruntime():
    code = "import sys, etc, etc.cli; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]


def test_optimize_writes_and_verifies(model_path, tmp_path):
    out_path = tmp_path / "plain.onnx"
    out = run("optimize", str(model_path), "--passes", "fold", "-o", str(out_path))
    assert out.returncode == 0, out.stderr
    assert [n.op_type for n in onnx.load(str(out_path)).graph.node] == ["Conv", "Relu"]
    assert "wrote" in out.stdout and "ok" in out.stdout
    verify = run("verify", str(model_path), str(out_path), "--json")
    assert verify.returncode == 0
    assert json.loads(verify.stdout)["equivalent"] is True


def test_optimize_json_report(model_path):
    out = run("optimize", str(model_path), "--passes", "fold", "--json")
    report = json.loads(out.stdout)
    assert report["after"]["ops"] == {"Conv": 1, "Relu": 1}
    assert report["rule_hits"]["fold/identity"] == 1
    assert report["verification"]["equivalent"] is True
    timing = report["timing"]
    assert 0.0 < timing["checking_s"] <= timing["total_s"]
    # the seconds are rounded to 1 ms and the share is computed before rounding: allow for that on short runs
    seconds, total = timing["checking_s"], timing["total_s"]
    slack = 0.0005 * (1 + seconds / total) / total + 0.0005
    assert abs(timing["checking_share"] - seconds / total) <= slack
    assert out.stderr == ""  # --json: no progress lines


def test_optimize_progress_is_one_line_per_pass_off_a_terminal(model_path):
    """Not on a terminal: one stderr line per pass run naming the pass, its round, the candidates offered to
    its rules and what it did; stdout keeps the report, and the report says how long the checking took."""
    out = run("optimize", str(model_path), "--passes", "fold,rep")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stderr.splitlines() if "(round " in line]
    assert lines[0].startswith("fold (round 1) on ") and "candidates offered to rules" in lines[0]
    assert any(line.startswith("rep (round ") for line in lines)
    assert all(line.endswith(" s") for line in lines)
    assert "\r" not in out.stderr
    assert "numeric checking" in out.stdout


def test_verify_detects_a_different_model(model_path, tmp_path):
    other = onnx.load(str(model_path))
    for init in other.graph.initializer:
        if init.name == "b":
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + 0.01, "b"))
    save(other, tmp_path / "other.onnx")
    out = run("verify", str(model_path), str(tmp_path / "other.onnx"))
    assert out.returncode == 1
    assert "NOT equivalent" in out.stdout


def test_info_reports_ops_and_macs(model_path):
    out = run("info", str(model_path), "--size", "10x10", "--json")
    facts = json.loads(out.stdout)
    assert facts["macs"] == 4 * 10 * 10 * 3 * 3 * 3
    assert facts["params"] == 4 * 3 * 3 * 3 + 4 + 4 + 1
    assert facts["ops"]["Conv"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimize", "{missing}", "-o", "{out}"], "no such file"),
        (["optimize", "{garbage}", "-o", "{out}"], "not"),
        (["optimize", "{model}", "--passes", "fold,nope", "-o", "{out}"], "unknown pass 'nope'"),
        (["optimize", "{model}", "--input-range", "x=0,1", "-o", "{out}"], "no input 'x'"),
        (["optimize", "{model}", "--input-range", "input=2,1", "-o", "{out}"], "LO must not exceed HI"),
        (["optimize", "{model}", "-o", "{model}"], "in-place"),
        (["info", "{garbage}"], "not"),
        (["verify", "{model}", "{missing}"], "no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_output(args, message, model_path, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 definitely not protobuf" * 10)
    before = model_path.read_bytes()
    subst = {
        "missing": str(tmp_path / "missing.onnx"),
        "garbage": str(garbage),
        "model": str(model_path),
        "out": str(tmp_path / "out.onnx"),
    }
    out = run(*[a.format(**subst) for a in args])
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "out.onnx").exists()
    assert model_path.read_bytes() == before


def test_passes_lists_fold_rules():
    out = run("passes")
    assert out.returncode == 0
    assert "fold" in out.stdout and "bn_into_conv" in out.stdout


def test_info_reports_depth_and_branch_points(tmp_path):
    rng = np.random.default_rng(1)
    m = graph(
        "a = Conv <pads = [1, 1, 1, 1]> (input, w, b)\nr = Relu(a)\nc = Conv <pads = [1, 1, 1, 1]> (r, w2, b)\n"
        "output = Add(c, a)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        w2=rng.normal(size=(4, 4, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
    )
    facts = json.loads(run("info", str(save(m, tmp_path / "skip.onnx")), "--json").stdout)
    assert facts["depth"] == 4 and facts["forks"] == 1  # Conv -> Relu -> Conv -> Add; 'a' is read twice
