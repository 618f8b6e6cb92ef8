"""INT8 PSNR drop and latency: onnxruntime's default quantize_static vs ``etc quantize``, on the real weights.

    python -m bench.bench_quant [--only etds_M4C32_x4,...] [--runs 5] [--no-write]

For each pretrained model: export (legacy exporter, dynamic H/W), [anchored ABPN/ECBSR: ``fold,rep,et`` first
when that makes them plain], then

* ``ort``: onnxruntime ``quantize_static`` with its defaults for QDQ (per-channel int8 weights, uint8
  activations, MinMax), calibrated on the same patches as ETC;
* ``etc``: ``etc.quant.quantize_with_report`` with its defaults.

PSNR/SSIM: Y channel, scale-pixel border crop, outputs rounded to 8 bits, on the bundled evaluation photos
(``samples``: astronaut, camera, chelsea, coffee, rocket; LR by PIL bicubic); calibration uses the disjoint
calibration photos (32 patches of 64x64 LR pixels). Every model runs with onnxruntime graph optimizations
ENABLED (fused int8 kernels, the deployment setting). Latency: 1x3x360x640, CPU, 2 threads, median of
``--runs`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import machine, markdown_table, write_section

MODELS = (
    [("etds", 4, 32, s) for s in (2, 3, 4)]
    + [("etds", 6, 32, s) for s in (2, 3, 4)]
    + [
        ("abpn_et", 4, 28, 3),
        ("ecbsr_et", 4, 16, 4),
        ("ecbsr_et", 4, 32, 4),
        ("abpn", 4, 28, 3),
        ("ecbsr", 4, 16, 4),
    ]
)
CACHE = Path(__file__).with_name(".bench_quant.json")


def key(name, m, c, s) -> str:
    return f"{name}_M{m}C{c}_x{s}"


def export(name, m, c, s):
    from etc import zoo
    from etc.frontends.torch import export as torch_export

    return torch_export(zoo.build(name, scale=s, M=m, C=c, pretrained=True), exporter="legacy")


def maybe_plain(model):
    """fold,rep,et (PReLU -> ReLU allowed, as the quantizer does) when it verifies; returns (model, note)."""
    from etc import api

    try:
        out, report = api.optimize(model, "fold,rep,et", prelu_to_relu=True)
    except Exception as exc:
        return model, f"not made plain ({type(exc).__name__})"
    if report.remaining:
        return model, "not fully plain: " + "; ".join(report.remaining)
    return out, "fold,rep,et (PReLU -> ReLU) -> plain"


def ort_default(model, patches):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from etc.runtime import input_specs

    name = input_specs(model)[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: p} for p in patches])

        def get_next(self):
            return next(self.it, None)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return onnx.load(str(dst))


def latency(model, runs: int) -> float:
    from etc import runtime

    sess = runtime.session(model, optimize=True, threads=2)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 360, 640)).astype(np.float32)
    sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


def bench_one(name, m, c, s, runs):
    from etc.quant.calib import calibration_patches, load_pairs
    from etc.quant.evaluate import evaluate_models
    from etc.quant.quantizer import quantize_with_report

    model = export(name, m, c, s)
    note = "plain as published"
    if name in ("abpn", "ecbsr"):
        model, note = maybe_plain(model)
    patches = calibration_patches("samples", s, num=32, patch=64)
    t = time.perf_counter()
    ours, report = quantize_with_report(model, patches, scale=s)
    t_ours = time.perf_counter() - t
    if report.prelu_to_relu:
        note += f"; quantizer: {report.prelu_to_relu} PReLU -> ReLU"
    added = sum(r.added for r in report.split)
    if added:
        note += f"; split: +{added} channels in {len(report.split)} tensors"
    theirs = ort_default(model, patches)
    pairs = load_pairs("samples", s)
    rows = evaluate_models({"fp32": model, "ort": theirs, "etc": ours}, pairs, s, reference="fp32")
    by = {r.model: r for r in rows}
    return {
        "note": note,
        "bicubic": by["bicubic"].psnr,
        "fp32": by["fp32"].psnr,
        "ort_drop": -by["ort"].delta,
        "etc_drop": -by["etc"].delta,
        "etc_ssim_drop": by["fp32"].ssim - by["etc"].ssim,
        "per_image_etc": {k: by["fp32"].per_image[k][0] - v[0] for k, v in by["etc"].per_image.items()},
        "ms_fp32": latency(model, runs),
        "ms_ort": latency(theirs, runs),
        "ms_etc": latency(ours, runs),
        "quantize_s": t_ours,
        "equalized": len(report.equalized),
        "split_added": added,
    }


def _act_weight() -> float:
    from etc.quant.equalize import ACT_WEIGHT

    return ACT_WEIGHT


def render(results: dict) -> str:
    rows = []
    for k, r in results.items():
        rows.append(
            [
                k,
                r["note"],
                f"{r['fp32']:.3f}",
                f"{r['ort_drop']:.3f}",
                f"{r['etc_drop']:.3f}",
                "yes" if r["etc_drop"] <= 0.05 else "NO",
                f"{r['ms_fp32']:.1f}",
                f"{r['ms_ort']:.1f}",
                f"{r['ms_etc']:.1f}",
                f"{r['ms_etc'] / r['ms_fp32']:.2f}",
            ]
        )
    header = [
        "model",
        "graph",
        "FP32 PSNR-Y",
        "ORT default drop dB",
        "ETC drop dB",
        "<= 0.05",
        "FP32 ms",
        "ORT int8 ms",
        "ETC int8 ms",
        "ETC / FP32",
    ]
    return markdown_table(header, rows)


def summary(results: dict) -> str:
    met = [k for k, r in results.items() if r["etc_drop"] <= 0.05]
    missed = [f"{k} ({r['etc_drop']:.3f} dB)" for k, r in results.items() if r["etc_drop"] > 0.05]
    text = f"ETC meets the 0.05 dB drop on {len(met)} of {len(results)} models"
    text += "; not met: " + ", ".join(missed) + "." if missed else "."
    return (
        text + " The channel copies cost latency (ETDS: 32 -> 42..43 channels per layer, about +20-30 % INT8 "
        "time against two identical copies when measured interleaved), so ETC trades speed for the drop; the "
        "issue's latency goal (INT8 <= 0.5x FP32) is out of reach on this AVX2-without-VNNI CPU for any INT8 "
        "model (the u8s8 kernel peaks near 1.3-1.5x the FP32 throughput, see the kernels section; ORT's own "
        "INT8 rows, without copies, reach 0.7-0.9x at best). The ms columns are medians of 5 runs and move by "
        "up to 2x between runs on this shared machine; `--split 1` removes the copies."
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the table from the cached results"
    )
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    results = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for name, m, c, s in MODELS:
        k = key(name, m, c, s)
        if args.render_only or (wanted and k not in wanted):
            continue
        t = time.perf_counter()
        results[k] = bench_one(name, m, c, s, args.runs)
        CACHE.write_text(json.dumps(results, indent=1))
        r = results[k]
        print(
            f"{k}: fp32 {r['fp32']:.3f} ort -{r['ort_drop']:.3f} etc -{r['etc_drop']:.3f} "
            f"ms {r['ms_fp32']:.0f}/{r['ms_ort']:.0f}/{r['ms_etc']:.0f} ({time.perf_counter() - t:.0f}s)",
            flush=True,
        )
    order = [key(*spec) for spec in MODELS]
    ordered = {k: results[k] for k in order if k in results}
    body = (
        "Command: `python -m bench.bench_quant` (" + machine() + "; the machine was shared, so latencies are "
        "noisy). Both INT8 columns come from the same run, calibrated on the same 32 patches (64x64 LR) of the "
        "bundled calibration photos; PSNR-Y on the disjoint evaluation photos (astronaut, camera, chelsea, "
        "coffee, rocket; LR by PIL bicubic; border = scale), onnxruntime graph optimizations enabled for every "
        "row. Drop = FP32 PSNR - INT8 PSNR. Latency: 1x3x360x640, CPU, 2 threads, median of "
        f"{args.runs} runs.\n\n"
        "ETC defaults: int8 weight grids that keep only the pairs the u8s8 kernel really adds in int16 below "
        "saturation (NHWC reduction index 2j, 2j+1; checked in tests/test_quant_qdq.py), exact channel "
        "duplication of input channels that dominate a weight row (`split`, up to 4 copies; the widened "
        f"tensors are in the graph column), equalization weighing activation noise x{_act_weight():g}, the "
        "copies staggered (copy j scaled by 1 - 0.03j, exact, so their uint8 roundings differ), ranges "
        "chosen with each channel's error weighted by its consumer weights, GPTQ rounding, bias correction. "
        "All ETC rows are pure INT8 QDQ (uint8 activations, int8 weights, int32 biases); "
        "no layer is kept in float or int16.\n\n" + render(ordered) + "\n\n" + summary(ordered)
    )
    if args.no_write:
        print(body)
    else:
        write_section("quantize: PSNR and latency", body)


if __name__ == "__main__":
    main()
