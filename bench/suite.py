"""The side-by-side benchmark suite: ETC vs onnxsim, onnxslim and onnxoptimizer, in one run.

    python -m bench                                   # everything (long: run it with nohup)
    python -m bench --quick                           # small sizes, 1 repeat, x4 seeds only: a smoke run
    python -m bench --only compile,scaling            # a subset: compile, scaling, latency, psnr, plot
    python -m bench --only scaling --sizes 100,1000,10000 --limit 600

Stages, each writing its own section of bench/RESULTS.md (bench.common.write_section):

* ``compile``: compile time on every zoo model (legacy export, dynamic H/W, random init at default sizes, x4):
  ETC ``fold,rep,et`` without the numeric instrument, onnxsim (check_n=0), onnxslim, onnxoptimizer (default
  passes); node counts after each; every output checked against the export in onnxruntime (optimizations off).
* ``scaling``: the same tools on bench/synthetic.py graphs of 100..10,000 nodes, each measurement in a fresh
  child process with a time limit; growth exponents between sizes.
* ``profile``: where ETC's time goes on an anchored synthetic graph (``--profile-size``): pass records, cProfile.
* ``latency``: onnxruntime CPU (default graph optimizations, 2 threads), 1x3x360x640, FP32 and INT8
  (``etc.quant.quantize`` on each variant; a failure is recorded, not hidden), for the three seeds that have an
  official plain form (pretrained): the training-time export, the peers' outputs, ETC's output, the official plain
  model. Runs are interleaved across variants; medians reported.
* ``psnr``: PSNR-Y FP32 and INT8 of the same variants on the bundled ``samples`` photos.
* ``plot``: bench/psnr_latency.png, PSNR vs latency (drawn with Pillow: bench/plot.py).

Results are cached in bench/_work/suite.json so ``--only plot`` (or psnr after latency) reuses earlier stages.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bench.common import machine, markdown_table, median_seconds, write_section

WORK = Path(__file__).with_name("_work")
CACHE = WORK / "suite.json"
STAGES = ("compile", "scaling", "profile", "latency", "psnr", "plot")
PEERS = ("onnxsim", "onnxslim", "onnxoptimizer")
TOOLS = ("etc", *PEERS)
SIZES = (100, 300, 1000, 3000, 10000)
QUICK_SIZES = (100, 300, 1000)
LATENCY_HW = (360, 640)


def load_note() -> str:
    """The 1-minute load average when a section is written (other jobs on the machine inflate times)."""
    import os

    return f"load average {os.getloadavg()[0]:.1f} when written"


# --- tools -----------------------------------------------------------------------------------------------------


def run_tool(tool: str, model: onnx.ModelProto) -> onnx.ModelProto:
    """The model after one tool; ETC runs ``fold,rep,et`` without instruments."""
    if tool == "etc":
        from etc.pipeline import run_pipeline

        return run_pipeline(model, "fold,rep,et").model
    if tool == "onnxsim":
        import onnxsim

        return onnxsim.simplify(model, check_n=0)[0]
    if tool == "onnxslim":
        import onnxslim

        return onnxslim.slim(model)
    if tool == "onnxoptimizer":
        import onnxoptimizer

        return onnxoptimizer.optimize(model)
    raise ValueError(f"unknown tool {tool!r}")


def check(reference: onnx.ModelProto, candidate: onnx.ModelProto, sizes=((17, 23), (9, 13))) -> str:
    """'ok', 'DIFFERS <max abs>' or 'ERROR <type>' against the reference in onnxruntime (optimizations off)."""
    from etc.verification import verify

    try:
        report = verify(reference, candidate, sizes=sizes, seeds=1)
    except Exception as exc:  # a peer's output that onnxruntime cannot load is a result, not a crash
        return f"ERROR {type(exc).__name__}"
    worst = max(r["max_abs"] for r in report.rows)
    return "ok" if report.equivalent else f"DIFFERS {worst:.2g}"


def non_plain(model: onnx.ModelProto) -> str:
    from etc.cost import PLAIN_OPS
    from etc.graph import op_histogram

    rest = {op: n for op, n in op_histogram(model).items() if op not in PLAIN_OPS}
    return "plain" if not rest else ", ".join(f"{op} {n}" for op, n in sorted(rest.items()))


# --- compile: zoo -----------------------------------------------------------------------------------------------


def stage_compile(args: argparse.Namespace, results: dict) -> str:
    from etc import zoo
    from etc.frontends.torch import export

    repeat = 1 if args.quick else args.repeat
    names = (
        zoo.available() if not args.quick else ["abpn", "ecbsr_train", "etds_dual", "imdn", "rfdn", "eimn"]
    )
    rows, data = [], {}
    for name in names:
        kw = {"clamp": True} if name in ("abpn", "ecbsr", "ecbsr_train") else {}
        model = export(zoo.build(name, scale=4, seed=0, **kw), exporter=args.exporter)
        entry = {"nodes": len(model.graph.node)}
        for tool in TOOLS:
            try:
                out = run_tool(tool, model)
                seconds = median_seconds(lambda t=tool, m=model: run_tool(t, m), repeat)
                entry[tool] = {"s": seconds, "nodes": len(out.graph.node), "check": check(model, out)}
                if tool == "etc":
                    entry["etc"]["left"] = non_plain(out)
            except Exception as exc:
                entry[tool] = {"s": None, "nodes": None, "check": f"ERROR {type(exc).__name__}: {exc}"[:80]}
        data[name] = entry
        print(f"compile {name}: " + json.dumps(entry), flush=True)
        rows.append(_compile_row(name, entry))
    results["compile"] = data
    header = (
        ["model", "nodes in"] + [f"{t} ms / nodes" for t in TOOLS] + ["etc / fastest peer", "left after etc"]
    )
    bad = [f"{n}/{t}: {e[t]['check']}" for n, e in data.items() for t in TOOLS if e[t]["check"] != "ok"]
    return (
        f"Command: `{args.command}` ({machine()}; {load_note()}). Zoo models at their default sizes, x4, random init (seed 0; "
        f"abpn/ecbsr/ecbsr_train with clamp), {args.exporter} export with dynamic H/W; median of {repeat} run(s) "
        "per tool, in one process; ETC = `fold,rep,et` without the numeric instrument; onnxsim check_n=0; "
        "onnxslim and onnxoptimizer defaults. Every output was run against the export in onnxruntime "
        "(optimizations off, 17x23 and 9x13): "
        + ("all equivalent." if not bad else "not equivalent or not loadable: " + "; ".join(bad) + ".")
        + "\n\n"
        + markdown_table(header, rows)
    )


def _compile_row(name: str, entry: dict) -> list[object]:
    cells = []
    for tool in TOOLS:
        e = entry[tool]
        cells.append("error" if e["s"] is None else f"{e['s'] * 1000:.0f} / {e['nodes']}")
    peers = [entry[t]["s"] for t in PEERS if entry[t]["s"]]
    ratio = f"{entry['etc']['s'] / min(peers):.1f}x" if peers and entry["etc"]["s"] else "-"
    return [name, entry["nodes"], *cells, ratio, entry["etc"].get("left", "-")]


# --- scaling: synthetic graphs ----------------------------------------------------------------------------------


FAMILIES = {"anchored": True, "local": False}  # synthetic graph family -> anchor (image carried to the end)


def _child(tool: str, nodes: int, anchor: bool, queue: mp.Queue) -> None:
    """Build the synthetic graph, warm the tool on a tiny one, then time one run; report (s, nodes in, out)."""
    warnings.filterwarnings("ignore")
    try:
        from bench.synthetic import synthetic

        run_tool(tool, synthetic(100, seed=1, anchor=anchor))
        model = synthetic(nodes, anchor=anchor)
        start = time.perf_counter()
        out = run_tool(tool, model)
        queue.put((time.perf_counter() - start, len(model.graph.node), len(out.graph.node), None))
    except Exception as exc:
        queue.put((None, None, None, f"{type(exc).__name__}: {exc}"[:120]))


def timed_in_child(
    tool: str, nodes: int, anchor: bool, limit: float
) -> tuple[float | None, int | None, int | None, str | None]:
    """One measurement in a fresh process (no caches shared between sizes), killed after ``limit`` seconds."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, nodes, anchor, queue))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None, None, None, f"over {limit:.0f} s"
    return queue.get() if not queue.empty() else (None, None, None, f"exit code {proc.exitcode}")


def growth(sizes: list[int], seconds: list[float | None]) -> list[str]:
    """Log-log slope between consecutive sizes (1.0 = linear)."""
    out = ["-"]
    for (n0, t0), (n1, t1) in zip(zip(sizes, seconds), zip(sizes[1:], seconds[1:])):
        out.append(f"{np.log(t1 / t0) / np.log(n1 / n0):.2f}" if t0 and t1 else "-")
    return out


def measure_family(anchor: bool, sizes: list[int], limit: float) -> dict[str, dict]:
    """Every tool at every size; after a tool runs out of time, its larger sizes are skipped."""
    data: dict[str, dict] = {tool: {} for tool in TOOLS}
    for nodes in sizes:
        for tool in TOOLS:
            previous = [v for v in data[tool].values() if v["error"]]
            if previous:
                data[tool][str(nodes)] = {"s": None, "in": None, "out": None, "error": "skipped"}
                continue
            s, n_in, n_out, err = timed_in_child(tool, nodes, anchor, limit)
            data[tool][str(nodes)] = {"s": s, "in": n_in, "out": n_out, "error": err}
            print(f"scaling anchor={anchor} {nodes} {tool}: {data[tool][str(nodes)]}", flush=True)
    return data


def scaling_rows(data: dict[str, dict], sizes: list[int]) -> list[list[object]]:
    rows = []
    for tool in TOOLS:
        secs = [data[tool][str(n)]["s"] for n in sizes]
        for n, s, slope in zip(sizes, secs, growth(sizes, secs)):
            d = data[tool][str(n)]
            rows.append(
                [
                    tool if n == sizes[0] else "",
                    d["in"] or f"~{n}",
                    d["out"] if d["out"] is not None else "-",
                    f"{s:.2f}" if s is not None else d["error"],
                    f"{s / d['in'] * 1e6:.0f}" if s else "-",
                    slope,
                ]
            )
    return rows


def stage_scaling(args: argparse.Namespace, results: dict) -> str:
    from bench.synthetic import synthetic

    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    )
    out = {"sizes": sizes}
    parts = []
    header = ["tool", "nodes in", "nodes out", "seconds", "µs / node", "slope"]
    for family, anchor in FAMILIES.items():
        data = measure_family(anchor, sizes, args.limit)
        verified = {}
        for nodes in sizes:
            if nodes <= 1000 and data["etc"][str(nodes)]["s"] is not None:
                model = synthetic(nodes, anchor=anchor)
                verified[str(nodes)] = check(model, run_tool("etc", model), sizes=((9, 13),))
        out[family] = {"data": data, "verified": verified}
        etc_s = {n: data["etc"][str(n)]["s"] for n in sizes}
        parts.append(
            f"**{family}** ({'anchor carried through every layer' if anchor else 'no anchor: every rewrite local'})"
            ". ETC's result verified in onnxruntime: "
            + (", ".join(f"{n} nodes {v}" for n, v in verified.items()) or "-")
            + ". "
            + _scaling_summary(sizes, etc_s)
            + "\n\n"
            + markdown_table(header, scaling_rows(data, sizes))
        )
    results["scaling"] = out
    body = (
        f"Command: `{args.command}` ({machine()}; shared with other jobs, {load_note()}, so absolute times are "
        "inflated; the slopes are the point). Graphs from "
        "bench/synthetic.py, 8 channels; per cell: parallel 3x3 + 1x1 + identity merge, ReLU, 3x3 -> "
        "BatchNormalization -> 1x1, ReLU. *anchored*: the input image is added through a channel repeat before "
        "the final DepthToSpace (ABPN-style), so ETC carries it through every layer; *local*: no anchor. One run "
        "per tool, size and family, each in a fresh process after a warm-up on a 100-node graph; time limit "
        f"{args.limit:.0f} s, larger sizes skipped after a tool runs out of time. Slope = log-log growth exponent "
        "from the previous size (1.00 = linear).\n\n" + "\n\n".join(parts)
    )
    return body


def _scaling_summary(sizes: list[int], etc_s: dict[int, float | None]) -> str:
    """ETC against the goals: 10,000 nodes under 20 s, growth from 1,000 nodes no worse than linear."""
    lines = []
    big = max(sizes)
    if etc_s.get(big):
        verdict = "meets" if etc_s[big] < 20 else "MISSES"
        lines.append(f"ETC at {big:,} nodes: {etc_s[big]:.1f} s ({verdict} the 20 s goal).")
    else:
        lines.append(f"ETC at {big:,} nodes: no result within the time limit (MISSES the 20 s goal).")
    done = [n for n in sizes if n > 1000 and etc_s.get(n)]
    if etc_s.get(1000) and done:
        n = max(done)
        ratio = etc_s[n] / etc_s[1000]
        lines.append(
            f"From 1,000 to {n:,} nodes ETC's time grows {ratio:.1f}x for {n / 1000:.0f}x the nodes "
            f"({'no worse than linear' if ratio <= n / 1000 * 1.1 else 'SUPERLINEAR'})."
        )
    return " ".join(lines)


def stage_profile(args: argparse.Namespace, results: dict) -> str:
    """Where ETC's time goes on an anchored synthetic graph: per-pass records, rounds and cProfile's top entries."""
    import cProfile
    import io
    import pstats

    from bench.synthetic import synthetic
    from etc.pipeline import run_pipeline

    nodes, top = args.profile_size, 14
    model = synthetic(nodes, anchor=True)
    prof = cProfile.Profile()
    prof.enable()
    result = run_pipeline(model, "fold,rep,et")
    prof.disable()
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("cumulative").print_stats(top)
    lines = [ln.rstrip() for ln in stream.getvalue().splitlines() if ln.strip()]
    first = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    records = [
        [r.name, f"{r.seconds:.2f}", ", ".join(f"{k} {v}" for k, v in r.hits.items()) or "-"]
        for r in result.records
    ]
    results["profile"] = {"nodes": nodes, "rounds": result.rounds, "hits": result.hits}
    return (
        f"Command: `{args.command}` ({machine()}; {load_note()}; cProfile slows it further). "
        f"ETC `fold,rep,et` on the anchored synthetic graph of {len(model.graph.node)} nodes: "
        f"{result.rounds} pipeline rounds. Per pass run (seconds, rule hits):\n\n"
        + markdown_table(["pass", "s", "hits"], records)
        + f"\n\ncProfile, top {top} by cumulative time:\n\n```\n"
        + "\n".join(lines[first : first + top + 1])
        + "\n```"
    )


# --- latency and PSNR on the seeds with official plain forms ----------------------------------------------------


@dataclass(frozen=True)
class Seed:
    label: str
    original: tuple[str, dict]  # zoo name, build kwargs (pretrained)
    official: tuple[str, dict]


def seeds(scale: int) -> list[Seed]:
    return [
        Seed(f"ETDS_M4C32_x{scale}", ("etds_dual", {"M": 4, "C": 32}), ("etds", {"M": 4, "C": 32})),
        Seed(
            f"ABPN_M4C28_x{scale}", ("abpn", {"M": 4, "C": 28, "clamp": True}), ("abpn_et", {"M": 4, "C": 28})
        ),
        Seed(
            f"ECBSR_M4C16_x{scale}",
            ("ecbsr_train", {"M": 4, "C": 16, "clamp": True}),
            ("ecbsr_et", {"M": 4, "C": 16}),
        ),
    ]


def _export(name: str, kw: dict, scale: int, exporter: str) -> onnx.ModelProto:
    from etc import zoo
    from etc.frontends.torch import export

    return export(zoo.build(name, scale=scale, pretrained=True, **kw), exporter=exporter)


def variants(seed: Seed, scale: int, exporter: str) -> dict[str, onnx.ModelProto]:
    """FP32 models: the training-time export, each tool's output of it, and the official plain model."""
    original = _export(*seed.original, scale, exporter)
    out = {"original": original}
    for tool in TOOLS:
        try:
            out[tool] = run_tool(tool, original)
        except Exception as exc:
            print(f"{seed.label}: {tool} failed: {exc}", flush=True)
    from etc.pipeline import Options, run_pipeline

    aligned = run_pipeline(original, "fold,rep,et", options=Options(align_channels=4)).model
    out["etc align4"] = aligned  # widths rounded up to multiples of 4, as the official plain forms
    out["official plain"] = _export(*seed.official, scale, exporter)
    return out


def quantized(
    models: dict[str, onnx.ModelProto], scale: int
) -> tuple[dict[str, onnx.ModelProto], dict[str, str]]:
    """INT8 via etc.quant.quantize for each variant; failures recorded by variant."""
    from etc.quant import quantize

    out, failed = {}, {}
    for key, model in models.items():
        try:
            out[key], _ = quantize(model, "samples", scale=scale)
        except Exception as exc:
            failed[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
            print(f"quantize {key} failed: {failed[key]}", flush=True)
            traceback.print_exc()
    return out, failed


def interleaved_latency(models: dict[str, onnx.ModelProto], runs: int, threads: int) -> dict[str, float]:
    """Median ms per model at 1x3x360x640, default ORT optimizations, runs interleaved across models."""
    from etc import runtime

    x = np.random.default_rng(0).uniform(0, 1, (1, 3, *LATENCY_HW)).astype(np.float32)
    sessions = {k: runtime.session(m, optimize=True, threads=threads) for k, m in models.items()}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        s.run(None, feeds[k])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def stage_latency(args: argparse.Namespace, results: dict) -> str:
    scale = args.scale
    runs = 2 if args.quick else args.runs
    data = {}
    for seed in seeds(scale)[: 1 if args.quick else None]:
        fp32 = variants(seed, scale, args.exporter)
        int8, failed = quantized(fp32, scale)
        ms32 = interleaved_latency(fp32, runs, args.threads)
        ms8 = interleaved_latency(int8, runs, args.threads) if int8 else {}
        data[seed.label] = {
            k: {
                "nodes": len(m.graph.node),
                "left": non_plain(m),
                "fp32_ms": ms32.get(k),
                "int8_ms": ms8.get(k),
                "int8_error": failed.get(k),
            }
            for k, m in fp32.items()
        }
        _save_models(seed.label, fp32, int8)
        print(f"latency {seed.label}: {json.dumps(data[seed.label])}", flush=True)
    results["latency"] = {"scale": scale, "runs": runs, "threads": args.threads, "data": data}
    rows = []
    for label, by in data.items():
        base = by["original"]["fp32_ms"]
        for k, r in by.items():
            rows.append(
                [
                    label if k == "original" else "",
                    k,
                    r["nodes"],
                    r["left"],
                    f"{r['fp32_ms']:.0f}",
                    f"{r['int8_ms']:.0f}" if r["int8_ms"] else f"failed: {r['int8_error']}",
                    f"{base / r['fp32_ms']:.2f}x",
                    f"{base / r['int8_ms']:.2f}x" if r["int8_ms"] else "-",
                ]
            )
    header = [
        "seed",
        "variant",
        "nodes",
        "non-plain ops",
        "FP32 ms",
        "INT8 ms",
        "FP32 speed-up",
        "INT8 vs FP32 orig",
    ]
    return (
        f"Command: `{args.command}` ({machine()}; shared with other jobs, {load_note()}, so absolute times are "
        f"noisy; runs are interleaved so load hits every variant alike). Pretrained x{scale} weights; original = "
        "the training-time form exported (ETDS: dual stream recovered from the official plain weights; ABPN: "
        "anchor + clamp; ECBSR: ECB branches split from the deploy weights, + clamp), legacy exporter, dynamic "
        f"H/W. onnxruntime CPU, default graph optimizations, {args.threads} threads, input 1x3x{LATENCY_HW[0]}x"
        f"{LATENCY_HW[1]}, median of {runs} runs after a warm-up. etc align4 = `fold,rep,et` with "
        "`align_channels=4` (conv widths rounded up to multiples of 4, as the official plain forms). INT8 = `etc.quantize(model, 'samples')[0]` "
        "of that same variant (QDQ). Speed-ups are against the original in FP32.\n\n"
        + markdown_table(header, rows)
    )


def _save_models(label: str, fp32: dict, int8: dict) -> None:
    folder = WORK / "models" / label
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.onnx"):
        old.unlink()
    for prec, models in (("fp32", fp32), ("int8", int8)):
        for key, model in models.items():
            onnx.save(model, folder / f"{key.replace(' ', '_')}.{prec}.onnx")


def _load_models(label: str, prec: str) -> dict[str, onnx.ModelProto]:
    folder = WORK / "models" / label
    return {
        p.name.split(".")[0].replace("_", " "): onnx.load(p) for p in sorted(folder.glob(f"*.{prec}.onnx"))
    }


def stage_psnr(args: argparse.Namespace, results: dict) -> str:
    from etc.quant.calib import load_pairs
    from etc.quant.evaluate import evaluate_models

    if "latency" not in results:
        raise SystemExit("psnr needs the latency stage's models: run --only latency,psnr")
    scale = results["latency"]["scale"]
    pairs = load_pairs("samples", scale)
    data = {}
    for label in results["latency"]["data"]:
        fp32, int8 = _load_models(label, "fp32"), _load_models(label, "int8")
        models = {f"{k}|fp32": m for k, m in fp32.items()} | {f"{k}|int8": m for k, m in int8.items()}
        rows = evaluate_models(models, pairs, scale, threads=args.threads)
        data[label] = {r.model: r.psnr for r in rows}
        print(f"psnr {label}: {data[label]}", flush=True)
    results["psnr"] = data
    table = []
    for label, by in data.items():
        keys = [k for k in results["latency"]["data"][label] if f"{k}|fp32" in by]
        for k in keys:
            p32, p8 = by.get(f"{k}|fp32"), by.get(f"{k}|int8")
            table.append(
                [
                    label if k == keys[0] else "",
                    k,
                    f"{p32:.3f}",
                    f"{p8:.3f}" if p8 is not None else "failed",
                    f"{p32 - p8:.3f}" if p8 is not None else "-",
                ]
            )
        table.append(["", "bicubic", f"{by['bicubic']:.3f}", "", ""])
    names = ", ".join(p.name for p in pairs)
    return (
        f"Command: `{args.command}` ({machine()}). PSNR-Y (border = scale, outputs rounded to 8 bits) on the "
        f"bundled evaluation photos ({names}; LR by bicubic downscaling), x{scale}; the same FP32 and INT8 models "
        "as the latency section (INT8 calibrated on the disjoint calibration photos).\n\n"
        + markdown_table(["seed", "variant", "FP32 PSNR-Y", "INT8 PSNR-Y", "drop dB"], table)
    )


def stage_plot(args: argparse.Namespace, results: dict) -> str:
    from bench.plot import Point, draw

    if "latency" not in results or "psnr" not in results:
        raise SystemExit("plot needs the latency and psnr stages: run --only latency,psnr,plot")
    points = []
    for label, by in results["latency"]["data"].items():
        psnr = results["psnr"].get(label, {})
        family = label.split("_")[0]
        for key in ("original", "etc", "etc align4", "official plain"):
            r = by.get(key)
            if r is None:
                continue
            for prec in ("fp32", "int8"):
                ms, p = r.get(f"{prec}_ms"), psnr.get(f"{key}|{prec}")
                if ms and p is not None:
                    points.append(Point(ms, p, family, key, prec))
    path = Path(__file__).with_name("psnr_latency.png")
    draw(points, path, title=f"PSNR-Y vs CPU latency, x{results['latency']['scale']}, 1x3x360x640")
    return (
        f"Command: `{args.command}`. ![PSNR vs latency](psnr_latency.png)\n\nbench/psnr_latency.png: one point "
        "per seed (colour), variant (shape: circle = original training-time export, square = ETC fold,rep,et, "
        "diamond = ETC fold,rep,et with --align-channels 4, triangle = official plain) and precision (hollow = FP32, filled = INT8), from the latency and psnr "
        "sections above."
    )


# --- driver ----------------------------------------------------------------------------------------------------

TITLES = {
    "compile": "suite: compile time on the zoo",
    "scaling": "suite: compile time vs graph size",
    "profile": "suite: where ETC's compile time goes",
    "latency": "suite: CPU latency FP32/INT8",
    "psnr": "suite: PSNR FP32 vs INT8",
    "plot": "suite: PSNR vs latency plot",
}
RUNNERS: dict[str, Callable[[argparse.Namespace, dict], str]] = {
    "compile": stage_compile,
    "scaling": stage_scaling,
    "profile": stage_profile,
    "latency": stage_latency,
    "psnr": stage_psnr,
    "plot": stage_plot,
}


def _save_stage(stage: str, results: dict) -> None:
    """Writes this stage's results into the cache, keeping what other (concurrent) runs stored there."""
    if stage not in results:
        return
    stored = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    stored[stage] = results[stage]
    CACHE.write_text(json.dumps(stored, indent=1))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(STAGES), help=f"comma-separated stages from {','.join(STAGES)}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat, one seed")
    parser.add_argument("--repeat", type=int, default=3, help="compile-time repeats per tool (median)")
    parser.add_argument("--runs", type=int, default=5, help="latency runs per variant (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sizes", default="", help="synthetic graph sizes, e.g. 100,1000,10000")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds per scaling measurement")
    parser.add_argument(
        "--profile-size", type=int, default=1000, help="anchored graph size for the profile stage"
    )
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--no-write", action="store_true", help="print sections; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    args.stages = [s for s in args.only.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    args.command = "python -m bench " + " ".join(argv) if argv else "python -m bench"
    return args


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    warnings.filterwarnings("ignore")
    WORK.mkdir(exist_ok=True)
    for stage in STAGES:
        if stage not in args.stages:
            continue
        results = json.loads(CACHE.read_text()) if CACHE.exists() else {}
        start = time.perf_counter()
        body = RUNNERS[stage](args, results)
        _save_stage(stage, results)
        print(f"\n## {TITLES[stage]} ({time.perf_counter() - start:.0f} s)\n\n{body}\n", flush=True)
        if not args.no_write:
            write_section(TITLES[stage], body)
