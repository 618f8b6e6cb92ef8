"""`etc demo`: the shipped weights, and one real end-to-end run (small latency size, few calibration patches)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from filelock import FileLock

from etc.tools import demo

PLAIN = {"Conv", "Relu", "DepthToSpace"}


@pytest.fixture(scope="session")
def run(tmp_path_factory, worker_id):
    """One real demo run per test session, shared by the xdist workers through a JSON file under a lock."""
    if worker_id == "master":
        return _run_demo(tmp_path_factory.mktemp("demo"))
    root = tmp_path_factory.getbasetemp().parent
    cache = root / "etc-demo-run.json"
    with FileLock(str(cache) + ".lock"):
        if not cache.is_file():
            result, lines = _run_demo(root / "etc-demo")
            cache.write_text(json.dumps({"result": result.as_dict(), "lines": lines}))
    data = json.loads(cache.read_text())
    return demo.DemoResult.from_dict(data["result"]), data["lines"]


def _run_demo(out):
    lines: list[str] = []
    res = demo.run_demo(out, latency_size=(24, 40), latency_runs=1, calib_patches=4, progress=lines.append)
    return res, lines


@pytest.fixture(scope="session")
def result(run):
    return run[0]


def test_shipped_weights_are_small_numpy_and_describe_the_model():
    assert demo.WEIGHTS.is_file()
    assert demo.WEIGHTS.stat().st_size < 1_000_000
    config, arrays = demo.load_weights()
    assert config["scale"] == demo.SCALE
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert sum(a.size for a in arrays.values()) > 10_000


def test_reading_the_weights_needs_no_torch():
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from etc.tools import demo\n"
        "config, arrays = demo.load_weights()\n"
        "print(config['scale'], len(arrays))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == str(demo.SCALE)


def test_held_out_photos_are_not_trained_on():
    assert demo.EVAL_PHOTOS
    assert not set(demo.EVAL_PHOTOS) & set(demo.TRAIN_PHOTOS)


def test_plain_graph_is_conv_relu_depthtospace_or_says_why(result):
    plain = result.row("plain")
    assert plain is not None and plain.ops is not None
    extra = set(plain.op_types) - PLAIN
    named = {line.split(" x")[0] for line in result.remaining}
    assert extra == named, f"non-plain ops {extra} but the report names {named}"
    assert plain.op_types.get("DepthToSpace") == 1
    assert plain.ops < result.row("training-time").ops


def test_verification_passed_within_1e5(result):
    assert result.verified and result.ok
    assert result.verify_max_abs is not None and result.verify_max_abs <= 1e-5
    assert len(result.verify_probes) >= 3


def test_trained_model_beats_bicubic_on_the_held_out_photo(result):
    train, plain = result.row("training-time"), result.row("plain")
    assert train.psnr > result.bicubic_psnr + 0.3
    assert abs(plain.psnr - train.psnr) < 0.01
    config, _ = demo.load_weights()
    assert abs(train.psnr - config["held_out_psnr_y"]) < 0.05  # the figure recorded at training time


def test_int8_row_is_measured_or_says_why_not(result):
    row = result.row("plain INT8")
    if result.int8 == "ok":
        assert row.psnr is not None and row.latency_ms is not None
        assert row.op_types.get("QuantizeLinear", 0) > 0
        assert row.psnr > result.row("plain").psnr - 1.5
        ratio = row.latency_ms / result.row("plain").latency_ms
        assert f"INT8 / FP32 plain latency: {ratio:.2f}x" in result.table()
        import onnx

        from etc.cost import conv_macs_per_pixel
        from etc.quant import kernels

        int8, plain = onnx.load(result.files["int8"]), onnx.load(result.files["plain"])
        assert kernels.recorded(int8) == kernels.resolve("native")  # made for this CPU's kernel
        assert conv_macs_per_pixel(int8) == conv_macs_per_pixel(plain)  # no channel copies by default
    else:
        assert result.int8.startswith("unavailable (") and row.psnr is None
        assert "INT8: unavailable" in result.table()


def test_files_table_json_and_progress(run):
    result, lines = run
    for key in ("train", "plain"):
        assert (result.out_dir / f"demo_{key}.onnx").is_file()
    text = result.table()
    for word in ("training-time", "plain", "bicubic", "MACs@24x40", "Verification passed"):
        assert word in text
    payload = json.loads(json.dumps(result.as_dict(), default=str))
    assert payload["ok"] is True and payload["rows"][0]["psnr_vs_bicubic"] > 0
    assert demo.DemoResult.from_dict(payload).table() == text
    assert sum(line.startswith("[") for line in lines) == 8
    assert all(t > 0 for t in result.seconds.values())


def test_cli_rejects_bad_options_without_running():
    from etc.commands.demo import demo as command

    res = CliRunner().invoke(command, ["--size", "12by5"])
    assert res.exit_code != 0 and "--size" in str(res.exception or res.output)
    assert "held-out" in CliRunner().invoke(command, ["--help"]).output


def test_htp_cycles_column_is_measured_or_says_why_not(result):
    """With the HTP backend installed every graph gets HTP cycles and the plain and INT8 graphs take fewer than
    the training-time one; without it the table says how to get the column."""
    from etc import htp

    table = result.table()
    assert f"HTP cycles@{result.htp_size[0]}x{result.htp_size[1]}" in table
    if not htp.available():
        assert result.htp.startswith("not measured") and "etc-onnx[htp]" in table
        return
    assert result.htp == "ok", result.htp
    cycles = {r.graph: r.htp_cycles for r in result.rows}
    assert all(isinstance(c, int) and c > 0 for c in cycles.values()), cycles
    assert cycles["plain"] < cycles["training-time"]
    assert cycles["plain INT8"] < cycles["plain"]
    assert "Qualcomm HTP simulator" in table
