"""Mixed 8/16-bit activations on the real weights: the uint8 floor, pure A8, --a16 auto, --a16 all and
onnxruntime's own A16W8 flow, on onnxruntime CPU (full-size photos) and on the HTP simulator (crops).

    python -m bench.bench_a16 --stage cpu [--only etds_M4C32_x2,...] [--max-drop 0.05]
    python -m bench.bench_a16 --stage htp [--only ...] [--htp-size 64] [--rounds 2]
    python -m bench.bench_a16 --stage budget [--only ...]   # unions of regions within the issue's budget
    python -m bench.bench_a16 --render-only

Per pretrained model (exported as bench.bench_quant does; anchored ABPN/ECBSR made plain with ``fold,rep,et``
first), calibrated as bench.bench_quant calibrates: 32 patches of 64x64 LR of the bundled calibration photos
(``etc.quantize(model, "samples", num=32, patch=64)``, which is also where ``--a16 auto`` takes its 8 held-out
crops to choose on). Rows:

* ``floor``: uint8 activations with the float weights of the default run (``QuantConfig.floor``);
* ``A8``: ``etc.quantize`` defaults (PReLU kept, pure 8-bit);
* ``auto``: ``a16="auto"`` with ``--max-drop`` and the default budget (1.25x the 8-bit cycles, estimated; a
  quarter of the activation tensors); ``16-bit`` is its share of quantized activation tensors stored in 16 bits
  (a region stores its tensor and the outputs of its readers);
* ``best1``: the single region (``--a16 NAME`` on the A8 model's weights) with the lowest CPU drop on the
  evaluation photos, found by trying every region: what one region buys at most, and its cost;
* ``all``: ``a16="all"`` (A16W8 everywhere);
* ``ORT``: onnxruntime's QNN flow, ``get_qnn_qdq_config(activation_type=QUInt16, weight_type=QInt8,
  per_channel=True)`` then ``quantize``, on the same 32 patches (docs/GUIDE section 7: per-channel int8 weights
  are its best setting; per-tensor uint8 weights lose several dB on ETDS).

CPU drop: PSNR-Y of FP32 minus the model's on the disjoint evaluation photos at full size, exactly as
bench.bench_quant measures (``samples``: astronaut, camera, chelsea, coffee, rocket; LR by PIL bicubic; border =
scale; 8-bit rounded outputs; onnxruntime optimizations off, so a conv between 16-bit tensors runs in float).
HTP drop: the same photos cut to one centre crop each of ``--htp-size`` LR pixels (the simulator is too slow for
full size), the QDQ model on onnxruntime-qnn's HTP simulator against FP32 on CPU; the CPU drop on the same crops
is given next to it. Cycles: HTP's per-node floor (each node's fewest cycles over 3 runs, summed) at
``--htp-size``, the least of ``--rounds`` rounds that measure every variant in turn (interleaved, so load hits
them alike).
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
BUDGET_CACHE = WORK / "budget.json"  # the budget stage's results (its own file: it may run beside another)
AIMET_CACHE = WORK / "aimet.json"  # bench.bench_aimet_amp's results (its own venv), shown when present
BUDGET = (1.25, 0.25)  # the issue's limits: cycles over A8 (estimated), share of tensors in 16 bits
MOST_SUBSETS = 64
VARIANTS = ("a8", "auto", "best1", "all", "ort")


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
    from etc.quant.quantizer import _qdq, floor_model, quantize_state

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
    singles = single_regions(model, a8, s)
    best = min(singles, key=lambda t: singles[t]["cpu"])
    models = {"fp32": model, "floor": floor_model(a8), "a8": a8.qmodel, "auto": auto.qmodel}
    models |= {"best1": _qdq(a8, frozenset([best])), "all": whole.qmodel, "ort": ort}
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
        "median": {"auto": choice.drop, "a8": choice.steps[0].before if choice.steps else choice.drop},
        "reached": choice.reached,
        "wide": f"{len(choice.wide)}/{choice.candidates}",
        "tensors": choice.tensors,
        "est_auto": 1 + (choice.cost or 0.0),
        "singles": singles,
        "best1": best,
        "macs_auto": conv_macs_per_pixel(auto.qmodel) / max(conv_macs_per_pixel(model), 1),
        "seconds": {"a8": t_a8, "auto": t_auto, "ort": t_ort},
    }


def single_regions(model, state, scale: int) -> dict:
    """Every region alone on the A8 model's weights: {tensor: CPU drop on the evaluation photos, 16-bit
    tensors, estimated cycles over A8}."""
    from etc.quant import a16, qdq
    from etc.quant.calib import load_pairs
    from etc.quant.quantizer import _qdq
    from etc.quant.summary import heldout_psnr

    pairs = load_pairs("samples", scale)
    ref = heldout_psnr(model, pairs, scale)
    out = {}
    for t in [*state.plan.inputs, *a16.candidates(state.plan)]:
        wide = frozenset([t])
        out[t] = {
            "cpu": ref - heldout_psnr(_qdq(state, wide), pairs, scale),
            "wide": len(qdq.plan_widths(state.model, state.plan, wide).wide),
            "est": 1 + a16.estimated_cost(state.model, state.plan, wide),
        }
    return out


def budget_stage(name, m, c, s, singles: dict) -> dict:
    """Every union of two or more regions that fit the issue's budget alone and together (estimated cycles,
    16-bit share; at most MOST_SUBSETS, smallest first), measured on the evaluation photos with the A8 weights:
    the lowest CPU drop any set within the budget reaches, next to the best single region within it."""
    import itertools

    from etc.quant import a16, qdq
    from etc.quant.calib import load_pairs
    from etc.quant.config import QuantConfig
    from etc.quant.quantizer import _qdq, quantize_state
    from etc.quant.summary import heldout_psnr

    model = export(name, m, c, s)
    if name in ("abpn", "ecbsr"):
        model, _ = maybe_plain(model)
    state = quantize_state(model, "samples", QuantConfig(scale=s, num=32, patch=64))
    fits = a16.within(
        state.model, state.plan, lambda w: a16.estimated_cost(state.model, state.plan, w), *BUDGET
    )
    alone = [t for t in singles if fits(frozenset([t]))]
    subsets = [
        frozenset(c)
        for n in range(2, len(alone) + 1)
        for c in itertools.combinations(alone, n)
        if fits(frozenset(c))
    ][:MOST_SUBSETS]
    pairs = load_pairs("samples", s)
    ref = heldout_psnr(model, pairs, s)
    out = {"alone": alone, "subsets": len(subsets), "best": None, "best_drop": None}
    for wide in subsets:
        drop = ref - heldout_psnr(_qdq(state, wide), pairs, s)
        if out["best_drop"] is None or drop < out["best_drop"]:
            out["best"], out["best_drop"] = sorted(wide), drop
            out["est"] = 1 + a16.estimated_cost(state.model, state.plan, wide)
            out["wide"] = len(qdq.plan_widths(state.model, state.plan, wide).wide)
    return out


def htp_stage(k: str, scale: int, size: int, rounds: int, earlier: dict | None = None) -> dict:
    """HTP drops on the centre crops (CPU drops on the same crops beside them) and HTP cycles at ``size``:
    the per-node floor, the least over ``rounds`` interleaved rounds. With ``earlier`` (a previous run of this
    stage) only the cycles are measured again, each variant keeping the least floor of both runs."""
    import onnx

    from etc.quant.calib import load_pairs

    folder = WORK / k
    models = {name: onnx.load(str(folder / f"{name}.onnx")) for name in VARIANTS}
    if earlier is None:
        fp32 = onnx.load(str(folder / "fp32.onnx"))
        out = htp_drops(fp32, models, centre_crops(load_pairs("samples", scale), scale, size), scale)
        out |= {"size": size, "cycles": {}, "per_op": {}, "rounds": 0}
    else:
        out = earlier
    for _ in range(rounds):
        for name, q in models.items():
            if name not in out["errors"]:
                _least_cycles(out, name, q, size)
    out["rounds"] = out.get("rounds", 2 if earlier else 0) + rounds  # 2: the default of runs that lacked it
    return out


def htp_drops(fp32, models: dict, crops: list, scale: int) -> dict:
    """{'crops', 'cpu_crops', 'htp', 'errors'}: each model's drop on ``crops`` on CPU and on HTP (a model HTP
    refuses is reported in 'errors', not fatal)."""
    from etc.quant import a16
    from etc.quant.summary import psnr_drop

    out: dict = {"crops": len(crops), "htp": {}, "cpu_crops": {}, "errors": {}}
    for name, q in models.items():
        out["cpu_crops"][name] = psnr_drop(fp32, q, crops, scale)
        try:
            out["htp"][name] = a16.htp_drop(fp32, q, crops, scale)
        except Exception as exc:
            out["errors"][name] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
    return out


def _least_cycles(out: dict, name: str, model, size: int) -> None:
    """Measures ``model``'s per-node floor (3 runs) and keeps it in ``out`` when it is the least so far."""
    from etc import htp

    measured = htp.cycles(model, size=(size, size), runs=3)
    if measured.floor < out["cycles"].get(name, float("inf")):
        out["cycles"][name], out["per_op"][name] = measured.floor, measured.per_op


def _f(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _auto_cycles(r: dict, cyc: dict) -> str:
    """Estimated / HTP cycles of auto over A8; when auto took no region its model is the A8 model, so the
    ratio is 1 and the measured one is the noise of measuring one model twice."""
    if not r["tensors"]:
        return f"1.00 / 1 (same model; measured {_ratio(cyc, 'auto')})"
    return f"{_f(r.get('est_auto'), '.2f')} / {_ratio(cyc, 'auto')}"


def _ratio(cyc: dict, name: str) -> str:
    return f"{cyc[name] / cyc['a8']:.2f}" if name in cyc and cyc.get("a8") else "n/a"


def _pair(h: dict, name: str) -> str:
    return f"{_f(h.get('cpu_crops', {}).get(name))} / {_f(h.get('htp', {}).get(name))}"


def _best1(r: dict) -> tuple[str, str, str]:
    """(region name, its 16-bit share, its estimated cycle ratio) of the best single region."""
    name = r.get("best1")
    if not name:
        return "n/a", "n/a", "n/a"
    single = r["singles"][name]
    total = r["wide"].split("/")[1]
    return name, f"{single['wide']}/{total}", f"{single['est']:.2f}"


def _in_budget(r: dict, sets: dict | None, budget: float = 1.25, share: float = 0.25) -> str:
    """The lowest CPU drop of a single region within the issue's budget (estimated cycles, 16-bit share), with
    how many regions fit ('none fits' when none does), and of the unions the budget stage tried."""
    total = int(r["wide"].split("/")[1])
    fitting = {
        t: v for t, v in r.get("singles", {}).items() if v["est"] <= budget and v["wide"] <= share * total
    }
    if not fitting:
        return "none fits"
    best = min(fitting, key=lambda t: fitting[t]["cpu"])
    text = f"{fitting[best]['cpu']:.3f} (`{best}`, {len(fitting)} fit)"
    if sets and sets.get("best_drop") is not None:
        text += f"; unions: {sets['best_drop']:.3f} ({len(sets['best'])} regions, best of {sets['subsets']})"
    elif sets is not None:
        text += "; no union fits"
    return text


def render(results: dict, budgets: dict | None = None) -> str:
    rows = []
    for k, r in results.items():
        cpu, h = r["cpu"], r.get("htp_run") or {}
        cyc = h.get("cycles", {})
        med = r.get("median", {})
        region, share1, est1 = _best1(r)
        rows.append(
            [
                k,
                _f(cpu["floor"]),
                _f(cpu["a8"]),
                _pair(h, "a8"),
                f"{_f(med.get('a8'))} -> {_f(med.get('auto'))}",
                _f(cpu["auto"]),
                r["wide"] + ("" if r["reached"] else " (not reached)"),
                _pair(h, "auto"),
                _auto_cycles(r, cyc),
                f"`{region}`",
                _f(cpu.get("best1")),
                share1,
                _pair(h, "best1"),
                f"{est1} / {_ratio(cyc, 'best1')}",
                _in_budget(r, (budgets or {}).get(k)),
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
        "held-out median A8 -> auto",
        "auto CPU",
        "auto 16-bit",
        "auto crops CPU / HTP",
        "cycles auto/A8 est / HTP",
        "best single region",
        "best1 CPU",
        "best1 16-bit",
        "best1 crops CPU / HTP",
        "cycles best1/A8 est / HTP",
        "best CPU within 1.25x, 1/4",
        "all CPU",
        "all crops CPU / HTP",
        "cycles all/A8",
        "ORT A16W8 CPU",
        "ORT crops CPU / HTP",
        "cycles ORT/A8",
    ]
    return markdown_table(header, rows)


def _aimet_part(ordered: dict) -> str:
    """The peer's paragraph and table when bench.bench_aimet_amp has results, else nothing."""
    if not AIMET_CACHE.exists():
        return ""
    found = json.loads(AIMET_CACHE.read_text())
    found = {k: found[k] for k in ordered if k in found}
    return (
        "\n\nPeer: aimet-onnx 2.42.0 automatic mixed precision (`python -m bench.bench_aimet_amp` in its own "
        "venv): `choose_mixed_precision` over A8W8/A16W8 per quantizer group, HTP v73 config (per-channel int8 "
        "conv weights), SQNR ranges, the same 32 calibration patches, allowed drop 0.05 dB on the same median "
        "of the same 8 held-out crops as ETC's `auto`.\n\n" + render_aimet(found)
    )


def render_aimet(results: dict) -> str:
    """The aimet-onnx AMP peer (bench.bench_aimet_amp): CPU drop, 16-bit share, crops CPU / HTP, cycles over the
    A8 model measured in the same rounds."""
    rows = []
    for k, r in results.items():
        if "error" in r:
            rows.append([k, r["error"], "", "", ""])
            continue
        h = r["htp_run"]
        crops = _pair(h, "aimet")
        if "aimet" in h.get("errors", {}):
            crops += " (HTP refused: " + h["errors"]["aimet"].split(": ", 1)[-1][:90] + ")"
        rows.append([k, _f(r["cpu"]), r["wide"], crops, _ratio(h.get("cycles", {}), "aimet")])
    header = ["model", "aimet AMP CPU", "16-bit (its quantizers)", "crops CPU / HTP", "cycles aimet/A8"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("cpu", "htp", "both", "budget"), default="both")
    parser.add_argument("--only", help="comma-separated keys, e.g. etds_M4C32_x2")
    parser.add_argument("--max-drop", type=float, default=0.05)
    parser.add_argument("--htp-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved HTP cycle rounds")
    parser.add_argument(
        "--more-cycles", action="store_true", help="htp stage: only more cycle rounds (least floor kept)"
    )
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
        if args.stage == "budget" and k in results:
            budgets = json.loads(BUDGET_CACHE.read_text()) if BUDGET_CACHE.exists() else {}
            budgets[k] = budget_stage(*spec, results[k]["singles"])
            BUDGET_CACHE.write_text(json.dumps(budgets, indent=1))
            print(f"{k}: {json.dumps(budgets[k])} ({time.perf_counter() - started:.0f}s)", flush=True)
            continue
        if args.stage in ("cpu", "both"):
            results[k] = cpu_stage(*spec, max_drop=args.max_drop)
            results[k]["max_drop"] = args.max_drop
        if args.stage in ("htp", "both") and k in results:
            earlier = results[k].get("htp_run") if args.more_cycles else None
            results[k]["htp_run"] = htp_stage(k, spec[3], args.htp_size, args.rounds, earlier)
            run = results[k]["htp_run"]
            run["loads"] = [*run.get("loads", [run["load"]] if "load" in run else []), os.getloadavg()[0]]
        CACHE.write_text(json.dumps(results, indent=1))
        print(
            f"{k}: {json.dumps(results.get(k), default=str)} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    ordered = {key(*spec): results[key(*spec)] for spec in MODELS if key(*spec) in results}
    sizes = sorted({r["htp_run"]["size"] for r in ordered.values() if r.get("htp_run")})
    loads = [x for r in ordered.values() for x in (r.get("htp_run") or {}).get("loads", [])]
    rounds = sorted({r["htp_run"].get("rounds", 2) for r in ordered.values() if r.get("htp_run")})
    errors = [
        f"{k} {n}: {e}"
        for k, r in ordered.items()
        for n, e in (r.get("htp_run") or {}).get("errors", {}).items()
    ]
    body = (
        "Commands: `python -m bench.bench_a16 --stage cpu [--only ...]`, then `--stage htp --htp-size "
        f"{'/'.join(map(str, sizes)) or 'n/a'}`, `--stage htp --more-cycles`, `--stage budget` ({machine()}; "
        f"1-minute load average at the end of each model's HTP runs {min(loads, default=0):.1f}-"
        f"{max(loads, default=0):.1f}: the machine was shared with other jobs, and the cycles are noisy). "
        "Calibration as in 'quantize: PSNR and latency': 32 patches of 64x64 LR of the bundled calibration "
        "photos. CPU columns: PSNR-Y drop in dB against FP32 on the five evaluation photos at full size "
        "(astronaut, camera, chelsea, coffee, rocket; the protocol of bench.bench_quant; onnxruntime CPU, "
        f"optimizations off). HTP columns: one centre crop of {'/'.join(map(str, sizes)) or 'n/a'} LR pixels "
        "per evaluation photo (five crops; the simulator is too slow for full size), CPU drop / HTP drop on "
        "those same crops; cycles: HTP's per-node floor at that size (each node's fewest cycles over 3 runs, "
        f"summed), the least of {'/'.join(map(str, rounds)) or 'n/a'} rounds that measure every variant in "
        "turn. `auto` uses "
        f"`--max-drop {next(iter(ordered.values()), {}).get('max_drop', args.max_drop)}` on the median drop "
        "of its 8 held-out 64x64 calibration crops, within the default budget (1.25x the 8-bit cycles as "
        "estimated, a quarter of the tensors); 'est' is that estimate. 'best1': the single region with the "
        "lowest CPU drop of all regions tried alone on the A8 weights. 16-bit shares count the quantized "
        "activation tensors stored in 16 bits. ORT: "
        "`get_qnn_qdq_config(activation_type=QUInt16, weight_type=QInt8, per_channel=True)` + `quantize`.\n\n"
        + render(ordered, json.loads(BUDGET_CACHE.read_text()) if BUDGET_CACHE.exists() else None)
        + ("\n\nHTP refused: " + "; ".join(errors) if errors else "")
        + _aimet_part(ordered)
    )
    print(body)
    if not args.no_write:
        write_section("a16: mixed 8/16-bit activations (issue 20)", body)


if __name__ == "__main__":
    main()
