"""PSNR/SSIM against known values, and `etc quantize` + `etc eval` end to end on a small exported model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from etc.quant import metrics


def test_psnr_y_known_value():
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = hr.copy()
    sr[..., 1] += 10  # G changes Y by 10 * 128.553 / 255
    dy = 10 * 128.553 / 255
    assert metrics.psnr_y(sr, hr, crop=2) == pytest.approx(10 * np.log10(255**2 / dy**2), abs=1e-9)
    assert metrics.psnr_y(hr, hr) == float("inf")


def test_y_channel_is_bt601_on_16_235():
    white = np.full((1, 1, 3), 255, np.uint8)
    black = np.zeros((1, 1, 3), np.uint8)
    assert metrics.rgb_to_y(white)[0, 0] == pytest.approx(235.0, abs=1e-9)
    assert metrics.rgb_to_y(black)[0, 0] == pytest.approx(16.0)


def test_border_crop_ignores_the_border():
    hr = np.zeros((16, 16, 3), np.uint8)
    sr = hr.copy()
    sr[:3] = 255
    assert metrics.psnr_y(sr, hr, crop=3) == float("inf")
    assert metrics.psnr_y(sr, hr, crop=2) < 20


def test_ssim_matches_scikit_image_gaussian_ssim(rng):
    from skimage import data
    from skimage.metrics import structural_similarity

    hr = data.astronaut()[:96, :96]
    sr = np.clip(hr.astype(int) + rng.integers(-12, 13, hr.shape), 0, 255).astype(np.uint8)
    ya, yb = metrics.rgb_to_y(sr)[4:-4, 4:-4], metrics.rgb_to_y(hr)[4:-4, 4:-4]
    want = structural_similarity(
        ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert metrics.ssim_y(sr, hr, crop=4) == pytest.approx(want, abs=1e-6)
    assert metrics.ssim_y(hr, hr, crop=4) == pytest.approx(1.0)


def test_float_outputs_round_like_tensor2img():
    assert metrics.to_uint8(np.array([0.0, 0.5 / 255 + 1e-6, 1.2, -0.1])).tolist() == [0, 1, 255, 0]


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory):
    """A small ETDS-style plain x2 net (random weights, seeded), exported with the torch frontend."""
    pytest.importorskip("torch")
    from etc import zoo
    from etc.frontends.onnx_io import save
    from etc.frontends.torch import export

    path = tmp_path_factory.mktemp("m") / "etds.onnx"
    save(export(zoo.build("etds", scale=2, M=1, C=8, seed=0), exporter="legacy"), path)
    return path


def test_quantize_then_eval_cli(tiny_sr, tmp_path):
    from etc.cli import cli

    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    from skimage import data

    Image.fromarray(data.coffee()[:64, :96]).save(hr_dir / "coffee.png")
    Image.fromarray(data.chelsea()[:48, :64]).save(hr_dir / "cat.png")
    out = tmp_path / "int8.onnx"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "quantize",
            str(tiny_sr),
            "-o",
            str(out),
            "--calib",
            str(hr_dir),
            "--num",
            "4",
            "--patch",
            "24",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["scale"] == 2 and report["equalize_max_abs"] < 1e-5
    assert report["ops"]["QuantizeLinear"] >= 3
    assert report["target"] == "int32" and report["rounding"] == "refit"
    figures = report["summary"]
    assert figures["macs_ratio"] == 1.0 and figures["heldout_patches"] == 8  # no copies by default
    assert isinstance(figures["heldout_drop"], float) and figures["int8_ms"] > 0 and figures["seconds"] > 0
    argv = ["quantize", str(tiny_sr), "-o", str(tmp_path / "q2.onnx"), "--calib", str(hr_dir), "--num", "4"]
    argv += ["--patch", "24", "--target", "native", "--split", "3"]
    text = runner.invoke(cli, argv)
    assert text.exit_code == 0, text.output
    for line in (
        "held-out calibration patches",
        "conv MACs INT8 / FP32",
        "latency at 1x3x360x640",
        "time spent",
    ):
        assert line in text.output
    # --no-optimize: the QDQ graph as written (int32 accumulation), the same on every CPU
    argv = ["eval", str(out), "--data", str(hr_dir), "--ref", str(tiny_sr), "--json", "--no-optimize"]
    res = runner.invoke(cli, argv)
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads(res.output)["rows"]}
    assert set(rows) == {"bicubic", str(tiny_sr), str(out)}
    assert abs(rows[str(out)]["delta_psnr"]) < 0.5  # INT8 stays close to FP32 even on random weights
    assert 0 < rows[str(out)]["ssim"] <= 1
    res = runner.invoke(cli, ["eval", str(out), "--data", str(hr_dir)])
    assert res.exit_code == 0 and "bicubic" in res.output and "PSNR-Y" in res.output


def test_cli_error_paths(tiny_sr, tmp_path):
    from etc.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (
        ["eval", str(tiny_sr), "--data", str(empty)],
        ["quantize", str(tiny_sr), "-o", str(tmp_path / "q.onnx"), "--calib", str(empty)],
        ["eval", str(tiny_sr), "--data", "NoSuchSet"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_eval_warns_only_where_the_kernel_cannot_run_an_int32_target_model(rng):
    from etc.commands.evaluate import _target_warning
    from etc.quant import kernels, quantizer
    from tests.test_quant_equalize import _chain

    model = _chain(rng, c=8)
    images = [rng.uniform(0, 1, size=(1, 3, 12, 10)).astype(np.float32) for _ in range(4)]
    q32, _ = quantizer.quantize(model, images, scale=1, num=4, rounding="nearest")
    qavx, _ = quantizer.quantize(model, images, scale=1, num=4, rounding="nearest", target="x86-avx2")
    saturating = kernels.kernel_saturates_pairs()
    assert (_target_warning(q32, optimize=True) is not None) == saturating
    assert _target_warning(q32, optimize=False) is None and _target_warning(qavx, optimize=True) is None
