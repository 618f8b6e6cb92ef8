"""``--target htp`` against the default target, on onnxruntime CPU and on the HTP simulator, on the real weights.

    python -m bench.bench_htp_quant [--only etds_M4C32_x2,...] [--htp-size 64] [--no-write] [--render-only]
    python -m bench.bench_htp_quant --a16 all        (both targets with A16W8 everywhere: own section and cache)

Per pretrained model of bench.bench_quant.MODELS (the ETDS M4C32/M6C32 x2/x3/x4, ABPN_ET x3 and ECBSR_ET x4
rows; exported as bench.bench_quant does), calibrated as bench.bench_quant calibrates (32 patches of 64x64 LR of
the bundled calibration photos), the default ``etc.quantize`` and the same options with ``target="htp"``:

* CPU full: PSNR-Y drop against FP32 on the five evaluation photos at full size (``samples``: astronaut,
  camera, chelsea, coffee, rocket; disjoint from calibration; onnxruntime CPU, optimizations off: the QDQ graph
  in exact arithmetic);
* crops CPU / HTP: the same photos cut to one centre crop of ``--htp-size`` LR pixels each (bench.bench_a16's
  protocol; the simulator is too slow for full size), the model on onnxruntime CPU and on HTP (CPU fallback
  disabled) against FP32 on CPU; HTP - CPU is their difference (what HTP's arithmetic costs);
* cycles: HTP per-node floor (etc.htp.Cycles.floor: each QNN node's fewest cycles over the runs, summed) of
  the INT8 model over the FP32 model's, at ``--htp-size``; ``--cycles-only`` measures them again from the
  models saved under bench/_work/htp_quant/KEY/ (quantizing them again when missing), median over
  ``--sessions`` sessions of ``--runs`` runs, and leaves the drops as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from bench.bench_a16 import centre_crops
from bench.bench_quant import MODELS, export, key
from bench.common import machine, markdown_table, write_section

WORK = Path(__file__).with_name("_work") / "htp_quant"
TARGETS = ("int32", "htp")


@dataclass(frozen=True)
class Setup:
    """The activations' width for both targets: ``none`` (pure 8-bit, the default) or ``all`` (A16W8)."""

    a16: str = "none"

    @property
    def folder(self) -> Path:
        return WORK if self.a16 == "none" else WORK / f"a16_{self.a16}"

    @property
    def cache(self) -> Path:
        return self.folder / "results.json"

    @property
    def title(self) -> str:
        suffix = "" if self.a16 == "none" else f", --a16 {self.a16}"
        return f"htp: the quantizer's target (--target htp{suffix})"


KEYS = [key(*spec) for spec in MODELS if spec[0] in ("etds", "abpn_et") or spec[:3] == ("ecbsr_et", 4, 16)]


def quantized(model, scale: int, target: str, setup: Setup):
    """etc.quantize's defaults (bench.bench_quant's calibration) for ``target``: (QDQ model, seconds)."""
    from etc.quant.config import QuantConfig
    from etc.quant.quantizer import quantize_state

    started = time.perf_counter()
    state = quantize_state(
        model,
        "samples",
        QuantConfig(scale=scale, num=32, patch=64, target=target, floor=False, a16=setup.a16),
    )
    return state.qmodel, time.perf_counter() - started


def saved(spec, target: str, setup: Setup, model=None):
    """The model saved under bench/_work/htp_quant/[a16_all/]KEY/ (``fp32`` or a target), saving ``model``
    when given."""
    import onnx

    path = setup.folder / key(*spec) / f"{target}.onnx"
    if model is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return onnx.load(str(path)) if path.exists() else None


def floor_cycles(model, size: int, runs: int, sessions: int) -> int:
    """Median over ``sessions`` fresh HTP sessions of the per-node floor over ``runs`` runs."""
    import numpy as np

    from etc import htp

    return int(np.median([htp.cycles(model, size=(size, size), runs=runs).floor for _ in range(sessions)]))


def measure(spec, size: int, setup: Setup) -> dict:
    """Drops on CPU (full photos and crops) and on HTP (crops), and cycles, for both targets."""
    from etc.quant import a16
    from etc.quant.calib import load_pairs
    from etc.quant.summary import psnr_drop

    scale = spec[3]
    model = saved(spec, "fp32", setup, export(*spec))
    pairs = load_pairs("samples", scale)
    crops = centre_crops(pairs, scale, size)
    fp32_cycles = floor_cycles(model, size, 3, 1)
    out: dict = {"size": size, "fp32_cycles": fp32_cycles, "targets": {}}
    for target in TARGETS:
        q, seconds = quantized(model, scale, target, setup)
        saved(spec, target, setup, q)
        out["targets"][target] = {
            "seconds": seconds,
            "cpu_full": psnr_drop(model, q, pairs, scale),
            "cpu_crops": psnr_drop(model, q, crops, scale),
            "htp_crops": a16.htp_drop(model, q, crops, scale),
            "cycles": floor_cycles(q, size, 3, 1),
        }
    out["load"] = os.getloadavg()[0]
    return out


def measure_cycles(spec, result: dict, runs: int, sessions: int, setup: Setup) -> None:
    """``result``'s cycles measured again from the saved models (quantized again when missing)."""
    size = result["size"]
    model = saved(spec, "fp32", setup) or saved(spec, "fp32", setup, export(*spec))
    result["fp32_cycles"] = floor_cycles(model, size, runs, sessions)
    for target in TARGETS:
        q = saved(spec, target, setup) or saved(
            spec, target, setup, quantized(model, spec[3], target, setup)[0]
        )
        result["targets"][target]["cycles"] = floor_cycles(q, size, runs, sessions)
    result["cycles_runs"] = [runs, sessions]
    result["cycles_load"] = os.getloadavg()[0]


def render(results: dict) -> str:
    rows = []
    for k, r in results.items():
        row = [k]
        for target in TARGETS:
            t = r["targets"][target]
            row += [
                f"{t['cpu_full']:.3f}",
                f"{t['cpu_crops']:.3f} / {t['htp_crops']:.3f}",
                f"{t['htp_crops'] - t['cpu_crops']:+.3f}",
                f"{t['cycles'] / r['fp32_cycles']:.3f}",
            ]
        rows.append(row)
    header = ["model"]
    for target in TARGETS:
        header += [
            f"{target}: CPU full",
            f"{target}: crops CPU / HTP",
            f"{target}: HTP - CPU",
            f"{target}: cycles INT8/FP32",
        ]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated keys, e.g. etds_M4C32_x2")
    parser.add_argument("--htp-size", type=int, default=64)
    parser.add_argument("--cycles-only", action="store_true", help="measure the cycles again, keep the drops")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--a16", choices=("none", "all"), default="none", help="activations of both targets")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    setup = Setup(args.a16)
    setup.folder.mkdir(parents=True, exist_ok=True)
    results = json.loads(setup.cache.read_text()) if setup.cache.exists() else {}
    wanted = set(args.only.split(",")) if args.only else None
    for spec in [] if args.render_only else MODELS:
        k = key(*spec)
        if k not in KEYS or (wanted is not None and k not in wanted):
            continue
        started = time.perf_counter()
        if args.cycles_only and k in results:
            measure_cycles(spec, results[k], args.runs, args.sessions, setup)
        else:
            results[k] = measure(spec, args.htp_size, setup)
        setup.cache.write_text(json.dumps(results, indent=1))
        print(f"{k}: {json.dumps(results[k])} ({time.perf_counter() - started:.0f}s)", flush=True)
    ordered = {k: results[k] for k in KEYS if k in results}
    sizes = sorted({r["size"] for r in ordered.values()})
    loads = [r.get("cycles_load", r["load"]) for r in ordered.values()]
    recounted = {tuple(r["cycles_runs"]) for r in ordered.values() if "cycles_runs" in r}
    cycles_note = (
        "; ".join(f"per-node floor over {r} runs, median of {s} sessions" for r, s in sorted(recounted))
        or "per-node floor over 3 runs"
    )
    again = "".join(f" then `--cycles-only --runs {r} --sessions {s}`" for r, s in sorted(recounted))
    body = (
        f"Command: `python -m bench.bench_htp_quant --htp-size {'/'.join(map(str, sizes)) or 'n/a'}"
        f"{'' if setup.a16 == 'none' else ' --a16 ' + setup.a16}`{again} "
        f"({machine()}; HTP simulator of onnxruntime-qnn; 1-minute load average after each model's cycles "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f}). Drops in dB of PSNR-Y against FP32; "
        "calibration: 32 patches of 64x64 LR of the bundled calibration photos. CPU full: the five evaluation "
        "photos at full size on onnxruntime CPU (optimizations off). Crops: one centre crop of "
        f"{'/'.join(map(str, sizes)) or 'n/a'} LR pixels per evaluation photo, the same crops on CPU and on HTP "
        f"(CPU fallback disabled). Cycles: HTP {cycles_note} at the crop size, INT8 over FP32.\n\n"
        + render(ordered)
    )
    print(body)
    if not args.no_write:
        write_section(setup.title, body)


if __name__ == "__main__":
    main()
