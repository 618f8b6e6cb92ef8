"""The user's side of the CLI: every bad input is exit 2 before the work, naming what to change; strict JSON;
progress that says which stage runs. In-process (etc.cli.main) to stay fast; one small x2 model throughout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from etc.cli import main
from etc.frontends.onnx_io import save
from etc.testing import text_model


def cli(capsys, *args: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `etc ARGS`."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def strict_loads(text: str) -> object:
    """json.loads that refuses Infinity/NaN (what a strict parser in another language would do)."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def x2_model(pad: int = 1, seed: int = 0) -> onnx.ModelProto:
    """input -> Conv3x3 (3 -> 12) -> Relu -> DepthToSpace(2): an x2 super-resolution net, dynamic H/W."""
    rng = np.random.default_rng(seed)
    return text_model(
        f"c = Conv <pads = [{pad}, {pad}, {pad}, {pad}]> (input, w, b)\nr = Relu(c)\n"
        "output = DepthToSpace <blocksize = 2> (r)",
        outputs="float[1,3,H2,W2] output",
        w=(rng.normal(size=(12, 3, 3, 3)) * 0.2).astype(np.float32),
        b=rng.uniform(0, 0.5, size=12).astype(np.float32),
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ux")


@pytest.fixture(scope="module")
def x2(folder) -> Path:
    return save(x2_model(), folder / "x2.onnx")


@pytest.fixture(scope="module")
def images(folder) -> Path:
    """A folder of two 48x48 photo crops (LR 24x24 at x2)."""
    from skimage import data

    path = folder / "hr"
    path.mkdir()
    Image.fromarray(data.coffee()[:48, :48]).save(path / "coffee.png")
    Image.fromarray(data.chelsea()[:48, :48]).save(path / "cat.png")
    return path


def tiny_images(folder: Path, side: int) -> Path:
    path = folder / f"tiny{side}"
    path.mkdir(exist_ok=True)
    pixels = np.random.default_rng(side).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path / "a.png")
    return path


def assert_one_line_exit_2(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


# ---------------------------------------------------------------- unwritable outputs


def _unwritable(tmp_path: Path) -> list[Path]:
    """A path under a regular file (no folder can be made there); /sys and /proc where they exist (root ignores
    permission bits, those refuse anyway)."""
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file, not a folder")
    paths = [blocker / "out"]
    paths += [Path(p) / "etc-out" for p in ("/sys", "/proc") if Path(p).is_dir()]
    return paths


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("optimize", "-o"),
        ("optimize", "--report"),
        ("optimize", "--dump-dir"),
        ("quantize", "-o"),
    ],
)
def test_unwritable_output_is_exit_2_naming_the_users_path_before_the_work(
    capsys, x2, tmp_path, command, option
):
    for target in _unwritable(tmp_path):
        args = [command, x2, option, target]
        if command == "quantize":
            args += ["--num", "2", "--patch", "16"]
        code, _, err = cli(capsys, *args)
        assert_one_line_exit_2(code, err, f"{target}: cannot write {option} there")
        assert ".tmp" not in err and "PermissionError" not in err
        assert "quantize:" not in err and "optimizing" not in err  # refused before any work started


def test_export_and_demo_to_an_unwritable_path_are_exit_2_before_the_work(capsys, tmp_path):
    target = _unwritable(tmp_path)[0]
    code, _, err = cli(capsys, "export", "nowhere.py:build", "-o", target)
    assert_one_line_exit_2(code, err, f"{target}: cannot write -o there")
    code, _, err = cli(capsys, "demo", "--out", target)
    assert_one_line_exit_2(code, err, f"{target}: cannot write --out there")


def test_atomic_save_names_the_target_not_its_temporary_file(tmp_path):
    from etc.errors import EtcError

    target = _unwritable(tmp_path)[0] / "m.onnx"
    with pytest.raises(EtcError, match=f"{target}: cannot write there") as info:
        save(x2_model(), target)
    assert ".tmp" not in str(info.value)


def test_saved_models_get_ordinary_file_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = save(x2_model(), tmp_path / "m.onnx")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- images too small


def test_eval_on_images_too_small_for_ssim_says_the_smallest_size(capsys, x2, folder):
    code, _, err = cli(capsys, "eval", x2, "--data", tiny_images(folder, 8))
    assert_one_line_exit_2(code, err, "image 'a' is 8x8", "at least 16x16")
    code, out, err = cli(capsys, "eval", x2, "--data", tiny_images(folder, 16), "--json")
    assert code == 0, err
    assert strict_loads(out)["images"] == 1


def test_quantize_on_images_smaller_than_the_patch_says_the_smallest_size(capsys, x2, folder, tmp_path):
    out = tmp_path / "q.onnx"
    code, _, err = cli(capsys, "quantize", x2, "-o", out, "--calib", tiny_images(folder, 8))
    assert code == 2 and "image 'a' is 4x4 at LR" in err and "at least 64x64 LR (128x128 HR)" in err, err
    assert "Traceback" not in err and not out.exists()


def test_quantize_patch_too_small_for_the_summary_metrics_is_exit_2(capsys, x2, images, tmp_path):
    code, _, err = cli(capsys, "quantize", x2, "-o", tmp_path / "q.onnx", "--calib", images, "--patch", "6")
    assert_one_line_exit_2(code, err, "--patch 6", "at least 8 LR pixels", "--no-summary")


# ---------------------------------------------------------------- scale, quantized input


def test_quantize_with_a_scale_the_model_disagrees_with_is_exit_2_before_the_work(capsys, x2, tmp_path):
    code, _, err = cli(capsys, "quantize", x2, "-o", tmp_path / "q.onnx", "--scale", "3")
    assert_one_line_exit_2(code, err, "--scale 3 does not match", "16x16 to 32x32 (x2)", "--scale 2")
    assert not (tmp_path / "q.onnx").exists()
    code, _, err = cli(capsys, "eval", x2, "--scale", "4")
    assert_one_line_exit_2(code, err, "--scale 4 does not match")


def qdq_model() -> onnx.ModelProto:
    """input -> Q -> DQ -> Conv(DQ(int8 weight)) -> output: an INT8 QDQ model as quantizers write them."""
    rng = np.random.default_rng(3)
    return text_model(
        "q = QuantizeLinear(input, s, z)\nx = DequantizeLinear(q, s, z)\n"
        "w = DequantizeLinear(wq, ws)\noutput = Conv <pads = [1, 1, 1, 1]> (x, w, b)",
        w_unused=np.zeros(1, np.float32),
        s=np.float32(1 / 255),
        z=np.uint8(0),
        wq=rng.integers(-127, 128, size=(4, 3, 3, 3), dtype=np.int8),
        ws=np.float32(0.01),
        b=np.zeros(4, np.float32),
    )


def test_quantizing_an_int8_model_again_is_refused(capsys, tmp_path):
    src = save(qdq_model(), tmp_path / "int8.onnx")
    code, _, err = cli(capsys, "quantize", src, "-o", tmp_path / "again.onnx")
    assert_one_line_exit_2(code, err, "already quantized", "QuantizeLinear x1", "DequantizeLinear x2", "FP32")
    assert not (tmp_path / "again.onnx").exists()


# ---------------------------------------------------------------- verify


def test_verify_names_the_output_whose_shapes_differ_and_exits_1(capsys, x2, tmp_path):
    unpadded = save(x2_model(pad=0), tmp_path / "unpadded.onnx")
    code, out, err = cli(capsys, "verify", x2, unpadded)
    assert code == 1, err
    assert (
        "output 'output' has shape [1, 3, 34, 46] in the reference but [1, 3, 30, 42] in the candidate" in out
    )
    assert "inf" not in out
    code, out, _ = cli(capsys, "verify", x2, unpadded, "--json")
    report = strict_loads(out)
    assert code == 1 and report["equivalent"] is False
    assert "[1, 3, 30, 42]" in report["outputs"][0]["reason"] and report["outputs"][0]["max_abs"] is None


@pytest.mark.parametrize("command", ["verify", "optimize"])
@pytest.mark.parametrize("option", ["--atol", "--rtol"])
def test_negative_tolerances_are_exit_2(capsys, x2, command, option):
    args = [command, x2, x2] if command == "verify" else [command, x2]
    for value in ("-1", "nan"):
        code, _, err = cli(capsys, *args, option, value)
        assert code == 2 and option in err and "Traceback" not in err, err


def test_identical_models_verify_to_strict_json_with_null_psnr(capsys, x2):
    code, out, _ = cli(capsys, "verify", x2, x2, "--json")
    report = strict_loads(out)
    assert code == 0 and report["equivalent"] is True
    assert report["outputs"][0]["psnr"] is None and report["outputs"][0]["max_abs"] == 0.0
    help_text = cli(capsys, "verify", "--help")[1]
    assert "null means the outputs are identical" in " ".join(help_text.split())


# ---------------------------------------------------------------- custom-domain ops


def custom_op_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    node = helper.make_node("FancyUp", ["input"], ["output"], domain="com.acme", name="fancy")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "h", "w"])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)]
    )
    model.ir_version = 8
    return model


@pytest.mark.parametrize("command", ["optimize", "verify", "quantize"])
def test_a_custom_domain_op_is_named_with_its_domain(capsys, tmp_path, command):
    src = save(custom_op_model(), tmp_path / "custom.onnx")
    args = {
        "optimize": [src],
        "verify": [src, src],
        "quantize": [src, "-o", tmp_path / "q.onnx"],
    }[command]
    code, _, err = cli(capsys, command, *args)
    assert_one_line_exit_2(code, err, "FancyUp (domain 'com.acme', node 'fancy')", "kernel library")
    assert "dynamic H/W" not in err


# ---------------------------------------------------------------- strict JSON everywhere


def test_every_json_output_loads_with_a_strict_parser(capsys, x2, images, tmp_path):
    runs = [
        ["info", x2, "--json"],
        ["passes", "--json"],
        ["optimize", x2, "--json"],
        ["verify", x2, x2, "--json"],
        ["eval", x2, "--data", images, "--threads", "1", "--json"],
        [
            "quantize",
            x2,
            "-o",
            tmp_path / "q.onnx",
            "--calib",
            images,
            "--num",
            "2",
            "--patch",
            "16",
            "--threads",
            "1",
            "--sensitivity",
            "--json",
        ],
    ]
    for args in runs:
        code, out, err = cli(capsys, *args)
        assert code == 0, (args, err)
        assert isinstance(strict_loads(out), dict | list), args


def test_json_safe_turns_non_finite_numbers_into_null():
    from etc.text import json_safe

    payload = {"a": float("inf"), "b": [float("nan"), np.float32(2.5), np.float64("-inf")], "c": (1, "x")}
    assert json_safe(payload) == {"a": None, "b": [None, 2.5, None], "c": [1, "x"]}


# ---------------------------------------------------------------- progress


def test_quantize_prints_one_line_per_stage_with_totals_when_not_on_a_terminal(capsys, x2, images, tmp_path):
    out = tmp_path / "q.onnx"
    args = ["quantize", x2, "-o", out, "--calib", images, "--num", "2", "--patch", "16", "--no-summary"]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("quantize: ")]
    assert any("calibrating ranges (4 steps)" in line for line in lines), err
    assert any("rounding weights (refit) (1 step)" in line for line in lines), err
    assert lines[-1].startswith("quantize: done in "), err
    assert len(lines) == len(set(lines)) and len(lines) <= 10, err  # one line per stage, not per step


class StageSpy:
    """A stage-aware progress that records the stages and counts the steps of each."""

    def __init__(self) -> None:
        self.stages: list[list] = []

    def stage(self, name: str, total: int | None) -> None:
        self.stages.append([name, total, 0])

    def __call__(self, steps: int = 1) -> None:
        self.stages[-1][2] += steps


def test_reconstruct_reports_every_learning_step_against_its_total(monkeypatch):
    """--rounding reconstruct used to sit still for its whole learning; now each step moves the bar."""
    pytest.importorskip("torch")
    from etc.quant import quantizer, reconstruct

    monkeypatch.setattr(reconstruct, "DEFAULT", reconstruct.Settings(iters=6, crop=8, batch=2))
    patches = [np.random.default_rng(k).uniform(0, 1, (1, 3, 12, 12)).astype(np.float32) for k in range(2)]
    spy = StageSpy()
    quantizer.quantize_with_report(x2_model(), patches, rounding="reconstruct", equalize=False, progress=spy)
    stages = {name: (total, done) for name, total, done in spy.stages}
    assert stages["rounding weights (reconstruct)"] == (6, 6)
    assert stages["calibrating ranges"] == (4, 4)


def test_stage_progress_on_a_terminal_shows_totals_and_eta(capsys):
    from etc.commands.progress import StageProgress

    progress = StageProgress("quantize", tty=True, unit="step")
    progress.stage("calibrating ranges", 3)
    for _ in range(3):
        progress(1)
    progress.close()
    err = capsys.readouterr().err
    assert "quantize: calibrating ranges" in err and "3/3" in err and "<" in err, err  # [elapsed<ETA]


def test_export_says_what_it_is_doing(capsys, tmp_path):
    pytest.importorskip("torch")
    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch\n\n\ndef build(scale=2):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 3 * scale * scale, 3, padding=1), "
        "torch.nn.PixelShuffle(scale))\n"
    )
    code, out, err = cli(
        capsys, "export", f"{factory}:build", "-o", tmp_path / "net.onnx", "--exporter", "legacy"
    )
    assert code == 0, err
    for step in ("export: loading PyTorch", "export: building", "export: tracing with the legacy exporter"):
        assert step in err, err
    assert "wrote" in out


# ---------------------------------------------------------------- options: --input-shape, --threads


def test_input_shape_fixes_the_input_for_info_verify_and_optimize(capsys, x2, tmp_path):
    code, out, _ = cli(capsys, "info", x2, "--input-shape", "input=1,3,20,24", "--json")
    facts = strict_loads(out)
    assert code == 0 and facts["inputs"][0]["shape"] == [1, 3, 20, 24] and facts["size"] == [20, 24]
    assert facts["macs"] == 12 * 3 * 9 * 20 * 24
    code, out, _ = cli(capsys, "verify", x2, x2, "--input-shape", "1x3x20x24", "--json")
    assert code == 0 and set(strict_loads(out)["probes"]) == {"random 1x3x20x24"}
    fixed = tmp_path / "fixed.onnx"
    code, _, err = cli(capsys, "optimize", x2, "--input-shape", "1,3,20,24", "-o", fixed)
    assert code == 0, err
    dims = [d.dim_value for d in onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 20, 24]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("input=1,3,20", "has 4 dimensions, not 3"),
        ("other=1,3,20,20", "no input 'other'"),
        ("1,3,0,20", "at least 1"),
        ("1,3,a,b", "expected [NAME=]N,C,H,W"),
    ],
)
def test_bad_input_shapes_are_exit_2(capsys, x2, value, message):
    code, _, err = cli(capsys, "info", x2, "--input-shape", value)
    assert_one_line_exit_2(code, err, message)


def test_threads_reach_every_session_and_are_offered_where_promised(capsys, x2):
    from etc import runtime

    try:
        runtime.use_threads(1)
        assert runtime.session(x2_model()).get_session_options().intra_op_num_threads == 1
        assert runtime.session(x2_model(), threads=2).get_session_options().intra_op_num_threads == 2
    finally:
        runtime.use_threads(0)
    for command in ("optimize", "quantize", "eval"):
        assert "--threads" in cli(capsys, command, "--help")[1]
    code, _, err = cli(capsys, "optimize", x2, "--threads", "-1")
    assert code == 2 and "--threads" in err


# ---------------------------------------------------------------- verify --inputs, --per-layer


def test_verify_runs_on_the_users_npz_inputs(capsys, x2, tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, input=np.random.default_rng(0).uniform(0, 1, (1, 3, 10, 12)).astype(np.float32))
    code, out, err = cli(capsys, "verify", x2, x2, "--inputs", good, "--json")
    assert code == 0, err
    assert strict_loads(out)["probes"] == ["file good.npz 1x3x10x12"]
    wrong_name = tmp_path / "name.npz"
    np.savez(wrong_name, x=np.zeros((1, 3, 4, 4), np.float32))
    code, _, err = cli(capsys, "verify", x2, x2, "--inputs", wrong_name)
    assert_one_line_exit_2(code, err, "holds ['x']", "inputs are ['input']")
    wrong_channels = tmp_path / "channels.npz"
    np.savez(wrong_channels, input=np.zeros((1, 4, 8, 8), np.float32))
    code, _, err = cli(capsys, "verify", x2, x2, "--inputs", wrong_channels)
    assert_one_line_exit_2(code, err, "array 'input' has shape [1, 4, 8, 8]", "[1, 3, '?', '?']")


def test_verify_per_layer_names_the_first_tensor_that_diverges(capsys, x2, tmp_path):
    changed = x2_model()
    for init in changed.graph.initializer:
        if init.name == "b":
            bias = onnx.numpy_helper.to_array(init).copy()
            bias[0] += 0.1
            init.CopyFrom(onnx.numpy_helper.from_array(bias, "b"))
    other = save(changed, tmp_path / "other.onnx")
    code, out, _ = cli(capsys, "verify", x2, other, "--per-layer")
    assert code == 1
    assert "3 tensors with matching names compared; first to diverge: 'c' (output of Conv)" in out, out
    code, out, _ = cli(capsys, "verify", x2, other, "--per-layer", "--json")
    first = strict_loads(out)["per_layer"]["first"]
    assert first["tensor"] == "c" and first["max_abs"] == pytest.approx(0.1, rel=1e-3)
    code, out, _ = cli(capsys, "verify", x2, x2, "--per-layer")
    assert code == 0 and "none diverges" in out


# ---------------------------------------------------------------- quantize --exclude, --sensitivity


def two_conv_x2_model() -> onnx.ModelProto:
    """input -> Conv 'first' (3 -> 8) -> Relu -> Conv 'last' (8 -> 12) -> DepthToSpace(2)."""
    rng = np.random.default_rng(5)
    return text_model(
        "c1 = Conv <pads = [1, 1, 1, 1]> (input, w1, b1)\nr1 = Relu(c1)\n"
        "c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)\noutput = DepthToSpace <blocksize = 2> (c2)",
        outputs="float[1,3,H2,W2] output",
        w1=(rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32),
        b1=rng.uniform(0, 0.2, size=8).astype(np.float32),
        w2=(rng.normal(size=(12, 8, 3, 3)) * 0.1).astype(np.float32),
        b2=rng.uniform(0, 0.2, size=12).astype(np.float32),
    )


def _conv_weight_sources(model: onnx.ModelProto) -> dict[str, str]:
    """Conv output -> 'int8' when its weight comes from a DequantizeLinear, else 'float'."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.output[0]: "int8" if n.input[1] in dq else "float" for n in model.graph.node if n.op_type == "Conv"
    }


def test_quantize_exclude_keeps_the_named_nodes_in_float(capsys, images, tmp_path):
    src = save(two_conv_x2_model(), tmp_path / "two.onnx")
    out = tmp_path / "q.onnx"
    args = ["quantize", src, "-o", out, "--calib", images, "--num", "2", "--patch", "16", "--no-summary"]
    code, text, err = cli(capsys, *args, "--exclude", "c2")
    assert code == 0, err
    assert "kept in float (--exclude): c2" in text
    qmodel = onnx.load(str(out))
    assert _conv_weight_sources(qmodel) == {"c1": "int8", "c2": "float"}
    quantized = {n.input[0] for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    assert "c2" not in quantized and "r1" in quantized  # the float Conv still reads the int8 Relu output
    code, _, err = cli(capsys, *args, "--exclude", "Conv_2")  # the name the sensitivity table gives it
    assert code == 0 and _conv_weight_sources(onnx.load(str(out))) == {"c1": "int8", "c2": "float"}, err
    code, _, err = cli(capsys, *args, "--exclude", "c1,nope")
    assert_one_line_exit_2(code, err, "--exclude nope", "no node or tensor named so")


def test_quantize_sensitivity_ranks_every_quantized_conv(capsys, images, tmp_path):
    src = save(two_conv_x2_model(), tmp_path / "two.onnx")
    args = ["quantize", src, "-o", tmp_path / "q.onnx", "--calib", images, "--num", "2", "--patch", "16"]
    code, out, err = cli(capsys, *args, "--no-summary", "--sensitivity", "--json")
    assert code == 0, err
    payload = strict_loads(out)
    layers, base = payload["sensitivity"], payload["sensitivity_base"]
    assert sorted((r["node"], r["tensor"]) for r in layers) == [("Conv_0", "c1"), ("Conv_2", "c2")]
    gains = [r["gain_db"] for r in layers]
    assert gains == sorted(gains, reverse=True)
    for row in layers:
        assert row["gain_db"] == pytest.approx(row["psnr_float"] - base)
    code, out, err = cli(capsys, *args, "--no-summary", "--sensitivity")
    assert code == 0 and "per-layer sensitivity" in out and "kept float" in out, err


def test_input_shape_overrides_a_static_shape_and_the_outputs_follow(capsys, tmp_path):
    rng = np.random.default_rng(2)
    static = text_model(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\noutput = DepthToSpace <blocksize = 2> (c)",
        inputs="float[1,3,16,16] input",
        outputs="float[1,3,32,32] output",
        w=rng.normal(size=(12, 3, 3, 3)).astype(np.float32),
        b=np.zeros(12, np.float32),
    )
    src = save(static, tmp_path / "static.onnx")
    code, out, _ = cli(capsys, "info", src, "--input-shape", "1,3,20,24", "--json")
    facts = strict_loads(out)
    assert code == 0 and facts["outputs"][0]["shape"] == [1, 3, 40, 48]
    code, out, _ = cli(capsys, "verify", src, src, "--input-shape", "1,3,20,24")
    assert code == 0 and "random 1x3x20x24" in out


def test_verify_says_when_the_candidate_outputs_nan_or_inf(capsys, x2, tmp_path):
    broken = x2_model()
    broken.graph.node[-1].output[0] = "d2s"
    broken.graph.node.append(onnx.helper.make_node("Div", ["d2s", "zero"], ["output"]))
    broken.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(0), "zero"))
    other = save(broken, tmp_path / "inf.onnx")
    code, out, _ = cli(capsys, "verify", x2, other)
    assert code == 1 and "NOT equivalent: output 'output' of the candidate holds NaN or Inf" in out, out
    code, out, _ = cli(capsys, "verify", x2, other, "--json")
    row = strict_loads(out)["outputs"][0]
    assert code == 1 and row["max_abs"] is None and "NaN or Inf" in row["reason"]
