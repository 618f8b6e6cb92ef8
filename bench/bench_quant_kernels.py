"""INT8 latency on onnxruntime CPU: which integer formats and session settings run fastest, and why.

    python -m bench.bench_quant_kernels [--only abpn_et_M4C28_x3,...] [--runs 5]

For each model: the FP32 export and ``etc quantize`` (defaults: uint8 activations, int8 per-channel weights,
QDQ). The other INT8 variants are derived from that one model so they compute the same integers:

* ``u8u8``: int8 weights q stored as uint8 q + 128 with zero point 128 (same dequantized values);
* ``s8s8``: uint8 activations stored as int8 (value - 128, zero point - 128);
* ``qop``: the QOperator form (QLinearConv nodes in the ONNX domain), i.e. onnxruntime's own EXTENDED-level
  rewrite of the QDQ model, saved and reloaded;
* ``per-tensor``: a separate quantization with one weight scale per Conv (nearest rounding, timing only).

Every variant runs with ORT_ENABLE_ALL (and the u8s8 QDQ model also with ORT_ENABLE_EXTENDED) at 1 and 2
intra-op threads on 1x3x360x640; median of ``--runs`` interleaved runs after one warm-up. The per-operator
profile (SessionOptions.enable_profiling) of FP32 and u8s8 at 2 threads, and the kernels onnxruntime picked
(domain and op of its optimized graph), go into the same RESULTS.md section.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bench.bench_quant import export
from bench.common import machine, markdown_table, write_section
from etc.cost import conv_macs_per_pixel

MODELS = {
    "abpn_et_M4C28_x3": ("abpn_et", 4, 28, 3),
    "etds_M4C32_x4": ("etds", 4, 32, 4),
    "ecbsr_et_M4C16_x4": ("ecbsr_et", 4, 16, 4),
}


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def u8u8(model: onnx.ModelProto) -> onnx.ModelProto:
    """int8 weights (zero point 0) stored as uint8 with zero point 128: the same dequantized values."""
    out = _copy(model)
    inits = {i.name: i for i in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype != np.int8:
            continue
        zp = numpy_helper.to_array(inits[node.input[2]])
        shifted = (q.astype(np.int16) + 128).astype(np.uint8)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(shifted, node.input[0]))
        inits[node.input[2]].CopyFrom(
            numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), node.input[2])
        )
    return out


def s8s8(model: onnx.ModelProto) -> onnx.ModelProto:
    """uint8 activations stored as int8 (zero point - 128): the same dequantized values."""
    out = _copy(model)
    inits = {i.name: i for i in out.graph.initializer}
    done: set[str] = set()
    for node in out.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        name = node.input[2]
        if name in done or name not in inits:
            continue
        zp = numpy_helper.to_array(inits[name])
        if zp.dtype == np.uint8:
            inits[name].CopyFrom(numpy_helper.from_array((zp.astype(np.int16) - 128).astype(np.int8), name))
            done.add(name)
    return out


def session(model: onnx.ModelProto, threads: int, level: str, optimized_path: str | None = None, prof=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    if prof:
        so.enable_profiling = True
        so.profile_file_prefix = prof
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def qoperator(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    """onnxruntime's EXTENDED-level rewrite of the QDQ model (QLinearConv etc.), as a model."""
    path = tmp / "qop.onnx"
    session(model, 1, "extended", str(path))
    return onnx.load(str(path))


def kernels(model: onnx.ModelProto, tmp: Path) -> str:
    """Domain/op histogram of onnxruntime's ORT_ENABLE_ALL graph."""
    path = tmp / "all.onnx"
    session(model, 2, "all", str(path))
    hist = collections.Counter(
        f"{n.domain + ':' if n.domain else ''}{n.op_type}" for n in onnx.load(str(path)).graph.node
    )
    return ", ".join(f"{k} x{v}" for k, v in sorted(hist.items()))


def profile(model: onnx.ModelProto, tmp: Path, x: np.ndarray, runs: int = 3) -> dict[str, float]:
    """Milliseconds per run spent in each operator type (2 threads, ORT_ENABLE_ALL)."""
    sess = session(model, 2, "all", prof=str(tmp / "prof"))
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"].get("op_name", "?")] += e["dur"]
    return {op: us / runs / 1000 for op, us in total.most_common()}


def bench_one(key: str, runs: int) -> tuple[list[list], list[str]]:
    from etc.quant.calib import calibration_patches
    from etc.quant.quantizer import quantize_with_report

    name, m, c, s = MODELS[key]
    fp32 = export(name, m, c, s)
    patches = calibration_patches("samples", s, num=32, patch=64)
    q, _ = quantize_with_report(fp32, patches, scale=s)
    pt, _ = quantize_with_report(
        fp32, patches[:8], scale=s, per_channel=False, rounding="nearest", bias_correction=False
    )
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 360, 640)).astype(np.float32)
    notes = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        variants = {
            ("fp32", "all"): fp32,
            ("u8s8 QDQ", "all"): q,
            ("u8s8 QDQ", "extended"): q,
            ("u8u8 QDQ", "all"): u8u8(q),
            ("s8s8 QDQ", "all"): s8s8(q),
            ("u8s8 QOperator", "all"): qoperator(q, tmp),
            ("u8s8 QDQ per-tensor", "all"): pt,
        }
        times: dict = collections.defaultdict(list)
        for threads in (1, 2):
            sessions = {k: session(v, threads, k[1]) for k, v in variants.items()}
            feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
            for k, sess in sessions.items():
                sess.run(None, feeds[k])
            for _ in range(runs):
                for k, sess in sessions.items():
                    t = time.perf_counter()
                    sess.run(None, feeds[k])
                    times[(*k, threads)].append(time.perf_counter() - t)
        notes.append(f"{key}: FP32 kernels: {kernels(fp32, tmp)}")
        notes.append(f"{key}: u8s8 QDQ kernels: {kernels(q, tmp)}")
        for label, model in (("FP32", fp32), ("u8s8 QDQ", q)):
            prof = profile(model, tmp, x)
            tot = sum(prof.values())
            parts = ", ".join(f"{op} {ms:.0f} ms ({100 * ms / tot:.0f} %)" for op, ms in prof.items())
            notes.append(f"{key}: {label} profile, 2 threads: {parts}")
    gmac = conv_macs_per_pixel(q) * x.shape[2] * x.shape[3] / 1e9
    rows = []
    for (variant, level, threads), ts in sorted(times.items(), key=lambda kv: (kv[0][2], kv[0][0] != "fp32")):
        ms = float(np.median(ts)) * 1000
        base = float(np.median(times[("fp32", "all", threads)])) * 1000
        rows.append(
            [key, variant, level, threads, f"{ms:.0f}", f"{ms / base:.2f}", f"{gmac / ms * 1000:.1f}"]
        )
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    wanted = [k for k in MODELS if not args.only or k in args.only.split(",")]
    rows, notes = [], []
    for key in wanted:
        r, n = bench_one(key, args.runs)
        rows += r
        notes += n
        for row in r:
            print(" | ".join(str(v) for v in row), flush=True)
    header = ["model", "variant", "ORT level", "threads", "median ms", "/ FP32 (same threads)", "GMAC/s"]
    body = (
        f"Command: `python -m bench.bench_quant_kernels --runs {args.runs}` ({machine()}; CPU flags: AVX2, "
        "no AVX-VNNI / AVX512). Input 1x3x360x640; median of interleaved runs. GMAC/s counts the int8 model's "
        "Conv multiply-accumulates (the FP32 row of ECBSR_ET has fewer: PReLU is not doubled there).\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {n}" for n in notes)
    )
    write_section("quantize: INT8 formats and kernels", body)


if __name__ == "__main__":
    main()
