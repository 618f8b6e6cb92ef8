"""The HTP device (etc.htp) on the real onnxruntime-qnn backend, at small sizes (the simulator is slow)."""

from __future__ import annotations

import builtins
import re

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from etc import htp, runtime
from tests.sr_nets import tiny_sr_net as _sr_net

needs_qnn = pytest.mark.skipif(
    not htp.available(), reason="onnxruntime-qnn not installed (pip install .[htp])"
)

SIZE = (17, 23)  # odd, so that a border bug shows


def test_static_copy_fixes_hw_and_reinfers_output_shapes():
    fixed = htp.static_copy(_sr_net(), SIZE)
    dims = [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    out = [d.dim_value for d in fixed.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *SIZE]
    assert out == [1, 3, 2 * SIZE[0], 2 * SIZE[1]]


@needs_qnn
def test_a_conv_net_runs_on_htp_and_matches_cpu():
    model = _sr_net()
    assert htp.placement(model, size=SIZE).all_on_htp
    feed = runtime.make_inputs(runtime.input_specs(model), size=SIZE, seed=3)
    worst, outputs = htp.max_abs_vs_cpu(model, [feed])
    assert outputs["y"].shape == (1, 3, 2 * SIZE[0], 2 * SIZE[1])
    assert worst < 2e-2  # HTP computes FP32 graphs in reduced precision; a wrong border would be O(1)
    assert np.abs(outputs["y"]).max() > 0.1


@needs_qnn
def test_cycles_are_positive_and_node_rows_add_up_to_each_run(tmp_path):
    model = _sr_net()
    measured = htp.cycles(model, size=SIZE, runs=3)
    assert len(measured.runs) == 3 and measured.total > 0
    assert measured.per_op.get("Conv", 0) > 0
    assert set(measured.per_op) >= {"Conv", "Relu", "DepthToSpace"}
    assert sum(measured.per_op.values()) == sum(measured.per_node.values())
    # Per run, QNN's node rows are a breakdown of the run's accelerator time.
    path = str(tmp_path / "profile.csv")
    sess = htp.session(model, size=SIZE, profile_path=path)
    feed = runtime.make_inputs(runtime.input_specs(htp.static_copy(model, SIZE)), size=SIZE)
    for _ in range(2):
        sess.run(None, feed)
    del sess
    runs = htp.read_profile(path)
    assert len(runs) == 2
    for total, nodes in runs:
        assert total > 0 and sum(nodes.values()) == total


@needs_qnn
def test_a_refused_op_is_reported_with_qnn_s_reason():
    model = _sr_net("Erf")
    found = htp.placement(model, size=SIZE)
    assert [n.node for n in found.refused] == ["odd_one"]
    assert "Erf" in found.refused[0].reason and "not supported" in found.refused[0].reason
    assert all(n.on_htp for n in found.nodes if n.node != "odd_one")
    with pytest.raises(htp.HtpRefusedError, match=r"node 'odd_one' \(Erf\): Operators of type `Erf`"):
        htp.session(model, size=SIZE)


@pytest.fixture
def without_qnn(monkeypatch):
    """Every import of onnxruntime_qnn fails, as on a machine without the htp extra."""
    real_import = builtins.__import__

    def no_qnn(name, *args, **kwargs):
        if name.startswith("onnxruntime_qnn"):
            raise ImportError("No module named 'onnxruntime_qnn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_qnn)


def test_without_onnxruntime_qnn_the_error_names_the_extra(without_qnn):
    assert not htp.available()
    with pytest.raises(htp.HtpUnavailableError, match=r"install etc-onnx\[htp\]") as caught:
        htp.cycles(_sr_net(), size=SIZE)
    assert caught.value.exit_code == 2


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from etc.cli import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


@needs_qnn
def test_info_on_htp_shows_placement_and_cycles_per_op(tmp_path, capsys):
    path = tmp_path / "sr.onnx"
    onnx.save(_sr_net(), path)
    code, out, _ = _cli(capsys, "info", str(path), "--device", "htp", "--htp-size", "16x16", "--json")
    assert code == 0
    import json

    facts = json.loads(out)["htp"]
    assert all(n["on_htp"] for n in facts["placement"]["nodes"])
    assert facts["cycles"]["total"] > 0 and facts["cycles"]["per_op"]["Conv"] > 0


@needs_qnn
def test_info_on_htp_names_the_refused_node(tmp_path, capsys):
    path = tmp_path / "erf.onnx"
    onnx.save(_sr_net("Erf"), path)
    code, out, _ = _cli(capsys, "info", str(path), "--device", "htp", "--htp-size", "16x16")
    assert code == 0
    assert "refused: odd_one (Erf): Operators of type `Erf` are not supported" in out


@needs_qnn
def test_verify_on_htp_reports_the_difference_from_cpu(tmp_path, capsys):
    path = tmp_path / "sr.onnx"
    onnx.save(_sr_net(), path)
    code, out, _ = _cli(capsys, "verify", str(path), str(path), "--device", "htp", "--seeds", "1")
    assert code == 0
    line = next(text for text in out.splitlines() if text.startswith("HTP: candidate max abs"))
    assert float(line.split()[4]) < 2e-2


def test_htp_options_without_onnxruntime_qnn_exit_2_with_the_install_hint(tmp_path, capsys, without_qnn):
    path = tmp_path / "sr.onnx"
    onnx.save(_sr_net(), path)
    code, _, err = _cli(capsys, "info", str(path), "--device", "htp")
    assert code == 2
    assert "install etc-onnx[htp]" in err and "Traceback" not in err


def _branchy_net() -> onnx.ModelProto:
    """_sr_net with a parallel 1x1 branch added to the first conv (rep merges it): the input is not plain."""
    model = _sr_net()
    rng = np.random.default_rng(1)
    model.graph.initializer.append(
        numpy_helper.from_array(rng.normal(size=(8, 3, 1, 1)).astype(np.float32), "wp")
    )
    conv0 = model.graph.node[0]
    conv0.output[0] = "c0a"
    model.graph.node.insert(1, helper.make_node("Conv", ["x", "wp"], ["c0b"], name="conv0_1x1"))
    model.graph.node.insert(2, helper.make_node("Add", ["c0a", "c0b"], ["c0"], name="sum0"))
    return model


@needs_qnn
def test_optimize_on_htp_reports_cycles_before_and_after(tmp_path, capsys):
    import json

    path, out_path = tmp_path / "branchy.onnx", tmp_path / "plain.onnx"
    onnx.save(_branchy_net(), path)
    code, out, _ = _cli(
        capsys, "optimize", str(path), "-o", str(out_path), "--device", "htp", "--htp-size", "16x16", "--json"
    )
    assert code == 0
    cycles = json.loads(out)["htp"]
    assert cycles["size"] == [16, 16] and cycles["before"] > 0 and cycles["after"] > 0
    assert cycles["ratio"] == pytest.approx(cycles["after"] / cycles["before"])
    page = tmp_path / "report.html"
    code, out, _ = _cli(
        capsys,
        *("optimize", str(path), "-o", str(out_path), "--device", "htp", "--htp-size", "16x16"),
        *("--report", str(page)),
    )
    assert code == 0 and "HTP cycles at 16x16 (simulator, per-node floor over 3 runs): before" in out
    row = re.search(
        r"<tr><td>HTP cycles at 16x16 \(simulator, --device htp\)</td>(.*?)</tr>", page.read_text()
    )
    assert row is not None and len(re.findall(r"<td[^>]*>[0-9.]+[KMG]?</td>", row.group(1))) == 2, row


@needs_qnn
def test_quantize_on_htp_reports_fp32_and_int8_cycles(tmp_path, capsys):
    import json

    path, out_path = tmp_path / "sr.onnx", tmp_path / "int8.onnx"
    onnx.save(_sr_net(), path)
    args = [
        "quantize",
        str(path),
        "-o",
        str(out_path),
        "--num",
        "2",
        "--patch",
        "32",
        "--no-summary",
        "--no-floor",
    ]
    code, out, _ = _cli(capsys, *args, "--device", "htp", "--htp-size", "16x16", "--json")
    assert code == 0
    cycles = json.loads(out)["htp"]
    assert cycles["before"] > 0 and cycles["after"] > 0
    assert cycles["ratio"] == pytest.approx(cycles["after"] / cycles["before"])
    # the INT8 convs run in fewer cycles than the FP32 ones (about half; whole graphs this small are mostly the
    # input's quantize and layout changes, within the simulator's load-dependent spread of each other)
    fp32_conv = htp.cycles(_sr_net(), size=(16, 16)).per_op["Conv"]
    int8_conv = htp.cycles(onnx.load(out_path), size=(16, 16)).per_op["Conv"]
    assert int8_conv < fp32_conv


def test_optimize_on_htp_without_onnxruntime_qnn_exits_2_before_the_work(tmp_path, capsys, without_qnn):
    path, out_path = tmp_path / "sr.onnx", tmp_path / "plain.onnx"
    onnx.save(_sr_net(), path)
    code, _, err = _cli(capsys, "optimize", str(path), "-o", str(out_path), "--device", "htp")
    assert code == 2 and "install etc-onnx[htp]" in err and not out_path.exists()


@needs_qnn
def test_eval_on_htp_adds_the_difference_from_cpu(tmp_path, capsys):
    import json

    path = tmp_path / "sr.onnx"
    onnx.save(_sr_net(), path)
    code, out, _ = _cli(capsys, "eval", str(path), "--device", "htp", "--limit", "1", "--json")
    assert code == 0
    payload = json.loads(out)
    assert [r["model"] for r in payload["rows"]] == ["bicubic", str(path)]
    assert 0 <= payload["htp_max_abs_vs_cpu"][str(path)] < 2e-2


def test_target_htp_never_picks_a_form_slower_than_the_input_or_the_merged_form():
    from etc.target import HtpMeasured, decide_htp

    rows = [
        HtpMeasured("plain", 120, 900),  # fewer FP32 cycles, but slower than the merged form in INT8
        HtpMeasured("plain-kept", 95, 1000),
        HtpMeasured("merged", 100, 800),
        HtpMeasured("input", 300, 2000),
    ]
    assert decide_htp(rows)[0] == "merged"  # 95 and 100 tie within the margin; merged has fewer FP32 cycles
    rows[1] = HtpMeasured("plain-kept", 60, 1000)
    assert decide_htp(rows) == ("plain-kept", "fewest INT8 cycles")
    # A training-time input whose INT8 form cannot run is compared in FP32.
    rows = [HtpMeasured("plain", 50, 900), HtpMeasured("merged", 70, 800), HtpMeasured("input", None, 850)]
    assert decide_htp(rows)[0] == "merged"
    assert decide_htp([HtpMeasured("plain", None, 1), HtpMeasured("input", None, 2)])[0] == "input"


@needs_qnn
def test_target_htp_measures_every_candidate_on_htp():
    from etc.target import choose_for_htp

    choice = choose_for_htp({"merged": _sr_net(), "input": _sr_net("Relu")}, size=(16, 16), rounds=1)
    assert [c.name for c in choice.candidates] == ["merged", "input"]
    assert all(c.int8 and c.int8 > 0 and c.fp32 and c.fp32 > 0 for c in choice.candidates)
    by_name = {c.name: c for c in choice.candidates}
    assert choice.chosen == "input" or by_name[choice.chosen].int8 <= by_name["input"].int8
    assert choice.summary().startswith(f"--target htp chose '{choice.chosen}'")
