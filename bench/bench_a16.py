"""Mixed 8/16-bit activations on the real weights: the uint8 floor, pure A8, --a16 auto, --a16 all and
onnxruntime's own A16W8 flow, on onnxruntime CPU (full-size photos) and on the HTP simulator (crops).

    python -m bench.bench_a16 --stage cpu [--only etds_M4C32_x2,...] [--max-drop 0.05]
    python -m bench.bench_a16 --stage htp [--only ...] [--htp-size 64]
    python -m bench.bench_a16 --render-only

Per pretrained model (exported as bench.bench_quant does; anchored ABPN/ECBSR made plain with ``fold,rep,et``
first), calibrated as bench.bench_quant calibrates: 32 patches of 64x64 LR of the bundled calibration photos
(``etc.quantize(model, "samples", num=32, patch=64)``, which is also where ``--a16 auto`` takes its 8 held-out
crops to choose on). Rows:

* ``floor``: uint8 activations with the float weights of the default run (``QuantConfig.floor``);
* ``A8``: ``etc.quantize`` defaults (PReLU kept, pure 8-bit);
* ``auto``: ``a16="auto"`` with ``--max-drop``; ``16-bit`` is its share of quantized activation tensors stored in
  16 bits (a region stores its tensor and the outputs of its readers);
* ``all``: ``a16="all"`` (A16W8 everywhere);
* ``ORT``: onnxruntime's QNN flow, ``get_qnn_qdq_config(activation_type=QUInt16, weight_type=QInt8,
  per_channel=True)`` then ``quantize``, on the same 32 patches (docs/GUIDE section 7: per-channel int8 weights
  are its best setting; per-tensor uint8 weights lose several dB on ETDS).

CPU drop: PSNR-Y of FP32 minus the model's on the disjoint evaluation photos at full size, exactly as
bench.bench_quant measures (``samples``: astronaut, camera, chelsea, coffee, rocket; LR by PIL bicubic; border =
scale; 8-bit rounded outputs; onnxruntime optimizations off, so a conv between 16-bit tensors runs in float).
HTP drop: the same photos cut to one centre crop each of ``--htp-size`` LR pixels (the simulator is too slow for
full size), the QDQ model on onnxruntime-qnn's HTP simulator against FP32 on CPU; the CPU drop on the same crops
is given next to it. Cycles: HTP execute cycles at ``--htp-size``, median of 3 runs in one session.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

from bench.bench_quant import MODELS, export, key, maybe_plain, patch_reader
from bench.common import machine, markdown_table, write_section

WORK = Path(__file__).with_name("_work") / "a16"
CACHE = WORK / "results.json"
VARIANTS = ("a8", "auto", "all", "ort")


def ort_a16w8(model, patches):
    """onnxruntime's A16W8 QDQ flow for QNN on ``patches`` (uint16 activations, per-channel int8 weights)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        config = get_qnn_qdq_config(
            str(src),
            patch_reader(model, patches),
            activation_type=QuantType.QUInt16,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        quantize(str(src), str(dst), config)
        return onnx.load(str(dst))


def centre_crops(pairs, scale: int, size: int):
    """One centre crop of ``size`` LR pixels per (LR, HR) pair, HR aligned."""
    from etc.quant.calib import ImagePair

    out = []
    for pair in pairs:
        h, w = pair.lr.shape[:2]
        ph, pw = min(size, h), min(size, w)
        top, left = (h - ph) // 2, (w - pw) // 2
        lr = pair.lr[top : top + ph, left : left + pw]
        hr = pair.hr[top * scale : (top + ph) * scale, left * scale : (left + pw) * scale]
        out.append(ImagePair(f"{pair.name}@{top},{left}", lr, hr))
    return out


def cpu_stage(name, m, c, s, *, max_drop: float) -> dict:
    """Quantizes the four variants (models saved under bench/_work/a16/KEY/) and measures the CPU drops."""
    import onnx

    from etc.cost import conv_macs_per_pixel
    from etc.quant.calib import calibration_patches, load_pairs
    from etc.quant.config import QuantConfig
    from etc.quant.evaluate import evaluate_models
    from etc.quant.quantizer import floor_model, quantize_state

    model = export(name, m, c, s)
    if name in ("abpn", "ecbsr"):
        model, _ = maybe_plain(model)
    common = dict(scale=s, num=32, patch=64, max_drop=max_drop)
    started = time.perf_counter()
    a8 = quantize_state(model, "samples", QuantConfig(**common))
    t_a8 = time.perf_counter() - started
    started = time.perf_counter()
    auto = quantize_state(model, "samples", QuantConfig(**common, a16="auto", floor=False))
    t_auto = time.perf_counter() - started
    whole = quantize_state(model, "samples", QuantConfig(**common, a16="all", floor=False))
    patches = calibration_patches("samples", s, num=32, patch=64)
    started = time.perf_counter()
    ort = ort_a16w8(model, patches)
    t_ort = time.perf_counter() - started
    models = {"fp32": model, "floor": floor_model(a8), "a8": a8.qmodel, "auto": auto.qmodel}
    models |= {"all": whole.qmodel, "ort": ort}
    folder = WORK / key(name, m, c, s)
    folder.mkdir(parents=True, exist_ok=True)
    for k, q in models.items():
        onnx.save(q, str(folder / f"{k}.onnx"))
    rows = evaluate_models(
        models, load_pairs("samples", s), s, reference="fp32", bicubic=False, optimize=False
    )
    choice = auto.report.a16
    return {
        "cpu": {r.model: -r.delta for r in rows if r.model != "fp32"},
        "fp32": rows[0].psnr,
        "heldout": {"floor": a8.report.floor_drop, "a8": a8.report.a8_drop, "auto": auto.report.heldout_drop},
        "reached": choice.reached,
        "wide": f"{len(choice.wide)}/{choice.candidates}",
        "tensors": choice.tensors,
        "macs_auto": conv_macs_per_pixel(auto.qmodel) / max(conv_macs_per_pixel(model), 1),
        "seconds": {"a8": t_a8, "auto": t_auto, "ort": t_ort},
    }


def htp_stage(k: str, scale: int, size: int) -> dict:
    """HTP drops on the centre crops (CPU drops on the same crops beside them) and HTP cycles at ``size``."""
    import onnx

    from etc import htp
    from etc.quant import a16
    from etc.quant.calib import load_pairs
    from etc.quant.summary import psnr_drop

    folder = WORK / k
    fp32 = onnx.load(str(folder / "fp32.onnx"))
    crops = centre_crops(load_pairs("samples", scale), scale, size)
    out: dict = {"size": size, "crops": len(crops), "htp": {}, "cpu_crops": {}, "cycles": {}, "errors": {}}
    for name in VARIANTS:
        q = onnx.load(str(folder / f"{name}.onnx"))
        out["cpu_crops"][name] = psnr_drop(fp32, q, crops, scale)
        try:
            out["htp"][name] = a16.htp_drop(fp32, q, crops, scale)
            out["cycles"][name] = htp.median_cycles(q, size=(size, size), runs=3)
        except Exception as exc:  # a model HTP refuses is reported, not fatal
            out["errors"][name] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
    return out


def _f(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _ratio(cyc: dict, name: str) -> str:
    return f"{cyc[name] / cyc['a8']:.2f}" if name in cyc and cyc.get("a8") else "n/a"


def _pair(h: dict, name: str) -> str:
    return f"{_f(h.get('cpu_crops', {}).get(name))} / {_f(h.get('htp', {}).get(name))}"


def render(results: dict) -> str:
    rows = []
    for k, r in results.items():
        cpu, h = r["cpu"], r.get("htp_run") or {}
        cyc = h.get("cycles", {})
        rows.append(
            [
                k,
                _f(cpu["floor"]),
                _f(cpu["a8"]),
                _pair(h, "a8"),
                _f(cpu["auto"]),
                r["wide"] + ("" if r["reached"] else " (not reached)"),
                _pair(h, "auto"),
                _ratio(cyc, "auto"),
                _f(cpu["all"]),
                _pair(h, "all"),
                _ratio(cyc, "all"),
                _f(cpu["ort"]),
                _pair(h, "ort"),
                _ratio(cyc, "ort"),
            ]
        )
    header = [
        "model",
        "floor CPU",
        "A8 CPU",
        "A8 crops CPU / HTP",
        "auto CPU",
        "auto 16-bit",
        "auto crops CPU / HTP",
        "cycles auto/A8",
        "all CPU",
        "all crops CPU / HTP",
        "cycles all/A8",
        "ORT A16W8 CPU",
        "ORT crops CPU / HTP",
        "cycles ORT/A8",
    ]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("cpu", "htp", "both"), default="both")
    parser.add_argument("--only", help="comma-separated keys, e.g. etds_M4C32_x2")
    parser.add_argument("--max-drop", type=float, default=0.05)
    parser.add_argument("--htp-size", type=int, default=64)
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    WORK.mkdir(parents=True, exist_ok=True)
    results = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    wanted = set(args.only.split(",")) if args.only else None
    for spec in [] if args.render_only else MODELS:
        k = key(*spec)
        if wanted is not None and k not in wanted:
            continue
        started = time.perf_counter()
        if args.stage in ("cpu", "both"):
            results[k] = cpu_stage(*spec, max_drop=args.max_drop)
            results[k]["max_drop"] = args.max_drop
        if args.stage in ("htp", "both") and k in results:
            results[k]["htp_run"] = htp_stage(k, spec[3], args.htp_size)
            results[k]["htp_run"]["load"] = os.getloadavg()[0]
        CACHE.write_text(json.dumps(results, indent=1))
        print(
            f"{k}: {json.dumps(results.get(k), default=str)} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    ordered = {key(*spec): results[key(*spec)] for spec in MODELS if key(*spec) in results}
    sizes = sorted({r["htp_run"]["size"] for r in ordered.values() if r.get("htp_run")})
    loads = [r["htp_run"]["load"] for r in ordered.values() if r.get("htp_run")]
    errors = [
        f"{k} {n}: {e}"
        for k, r in ordered.items()
        for n, e in (r.get("htp_run") or {}).get("errors", {}).items()
    ]
    body = (
        f"Commands: `python -m bench.bench_a16 --stage cpu --only ...` then `--stage htp --htp-size "
        f"{'/'.join(map(str, sizes)) or 'n/a'} --only ...` ({machine()}; 1-minute load average during the HTP "
        f"stage {min(loads, default=0):.1f}-{max(loads, default=0):.1f}: the machine was shared). "
        "Calibration as in 'quantize: PSNR and latency': 32 patches of 64x64 LR of the bundled calibration "
        "photos. CPU columns: PSNR-Y drop in dB against FP32 on the five evaluation photos at full size "
        "(astronaut, camera, chelsea, coffee, rocket; the protocol of bench.bench_quant; onnxruntime CPU, "
        f"optimizations off). HTP columns: one centre crop of {'/'.join(map(str, sizes)) or 'n/a'} LR pixels "
        "per evaluation photo (five crops; the simulator is too slow for full size), CPU drop / HTP drop on "
        "those same crops; cycles: HTP execute cycles at that size, median of 3 runs. `auto` uses "
        f"`--max-drop {next(iter(ordered.values()), {}).get('max_drop', args.max_drop)}` on its own 8 held-out "
        "calibration crops; its 16-bit share counts the quantized activation tensors stored in 16 bits. ORT: "
        "`get_qnn_qdq_config(activation_type=QUInt16, weight_type=QInt8, per_channel=True)` + `quantize`.\n\n"
        + render(ordered)
        + ("\n\nHTP refused: " + "; ".join(errors) if errors else "")
    )
    print(body)
    if not args.no_write:
        write_section("a16: mixed 8/16-bit activations (issue 20)", body)


if __name__ == "__main__":
    main()
