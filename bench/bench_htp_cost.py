"""HTP cycles of the zoo in every form, and the analytic ``npu`` model refitted to them.

python -m bench.bench_htp_cost measure            # writes bench/htp_cycles.json (slow: the HTP simulator)
python -m bench.bench_htp_cost measure --only ecbsr
python -m bench.bench_htp_cost report             # fit + tables -> "htp: cycles of the zoo" in RESULTS.md

For every model: the training-time export (legacy exporter, dynamic H/W), its merged form (``fold,rep``), ETC's
default output (``fold,rep,et``) and the official plain form where the authors publish one; each as FP32 and as
INT8 QDQ (etc.quant.quantize, 8 calibration patches, nearest rounding, no equalization: the cycles depend on the
QDQ graph, not on the scales). Cycles: etc.htp.cycles at 1x3x64x64, one warm-up and 5 measured runs per session,
2 sessions, median of the 10 runs. Features for the analytic model (etc.cost.model_cost at the same size): MACs,
bytes moved by non-plain ops, op count.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from bench.common import machine, markdown_table, write_section

SIZE = (64, 64)
DATA = Path(__file__).with_name("htp_cycles.json")


def pretrained_models() -> dict[str, tuple]:
    """name -> (training-time net builder, official plain net builder or None)."""
    from etc import zoo

    def z(name, scale, **kw):
        return lambda: zoo.build(name, scale=scale, pretrained=True, **kw)

    def published_ecbsr():
        from etc.zoo.ecbsr import ECBSRTrain
        from etc.zoo.published.ecbsr import PublishedECBSR

        deploy = zoo.build("ecbsr", scale=4, pretrained="ECBSR_M4C16_x4")
        return PublishedECBSR.from_train(ECBSRTrain.from_deploy(deploy, seed=7), act="relu")

    out = {}
    for m, c in ((4, 32), (6, 32)):
        for s in (2, 3, 4):
            out[f"ETDS M{m}C{c} x{s}"] = (z("etds_dual", s, M=m, C=c), z("etds", s, M=m, C=c))
    out["ETDS M5C16 x4"] = (z("etds_dual", 4, M=5, C=16), z("etds", 4, M=5, C=16))
    out["ABPN M4C28 x3"] = (z("abpn", 3), z("abpn_et", 3))
    out["ECBSR M4C16 x4"] = (z("ecbsr_train", 4), z("ecbsr", 4))
    out["published ECBSR M4C16 x4 (ReLU)"] = (published_ecbsr, z("ecbsr", 4))
    out["ESPCN x3"] = (z("espcn", 3), None)
    out["FSRCNN x3"] = (z("fsrcnn", 3), None)
    return out


def random_models() -> dict[str, tuple]:
    from etc import zoo
    from etc.zoo.published.cost import MODELS

    out = {}
    for name in ("plain", "repvgg", "acnet", "dbb", "sesr", "imdn", "rfdn", "eimn", "ecbsr_et", "abpn_et"):
        out[f"{name} (random)"] = ((lambda n=name: zoo.build(n, scale=2, seed=1)), None)
    for name, cls in MODELS.items():
        out[f"{name} (published pattern)"] = (cls, None)
    return out


def forms(train_builder, official_builder) -> dict[str, object]:
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline

    train = export(train_builder(), exporter="legacy", dynamic_hw=True)
    out = {
        "training": train,
        "merged": run_pipeline(train, "fold,rep").model,
        "etc": run_pipeline(train, "fold,rep,et").model,
    }
    if official_builder is not None:
        out["official"] = export(official_builder(), exporter="legacy", dynamic_hw=True)
    return out


def int8(model):
    from etc.quant import quantize

    return quantize(model, calib="samples", num=8, equalize=False, rounding="nearest", bias_correction=False)[
        0
    ]


def measure_form(model, sessions: int, runs: int) -> dict:
    from etc import htp
    from etc.cost import model_cost

    cost = model_cost(model, SIZE)
    entry = {"macs": cost.macs, "slow_bytes": slow_bytes(model), "ops": cost.ops}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        try:
            graph = model if precision == "fp32" else int8(model)
            found = htp.placement(graph, size=SIZE)
            if not found.all_on_htp:
                entry[precision] = {"refused": found.summary()}
                continue
            totals = []
            for _ in range(sessions):
                totals += htp.cycles(graph, size=SIZE, runs=runs).runs
            entry[precision] = {"cycles": int(np.median(totals)), "runs": totals}
        except Exception as exc:
            entry[precision] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        entry[precision]["seconds"] = round(time.perf_counter() - start, 1)
    return entry


def slow_bytes(model) -> int:
    """Activation elements read and written by non-plain ops (INT8 bytes), as etc.cost.model_cost counts them."""
    from etc.cost import PLAIN_OPS
    from etc.shapes import static_shapes

    shapes = static_shapes(model, SIZE) or {}
    weights = {i.name for i in model.graph.initializer}

    def elements(name: str) -> int:
        shape = shapes.get(name)
        return int(np.prod(shape)) if shape and 0 not in shape else 0

    total = 0
    for node in model.graph.node:
        if node.op_type in PLAIN_OPS or node.op_type == "Constant":
            continue
        total += sum(elements(t) for t in [*node.input[:1], *node.output] if t)
        total += sum(elements(t) for t in node.input[1:] if t and t not in weights)
    return total


def measure(args) -> None:
    warnings.filterwarnings("ignore")
    data = json.loads(DATA.read_text()) if DATA.exists() else {}
    wanted = [w for w in args.only.split(",") if w]
    catalog = {**pretrained_models(), **random_models()}
    for name, (train, official) in catalog.items():
        if wanted and not any(w.lower() in name.lower() for w in wanted):
            continue
        try:
            built = forms(train, official)
        except Exception as exc:
            print(f"{name}: skipped ({type(exc).__name__}: {exc})", flush=True)
            continue
        data[name] = {form: measure_form(m, args.sessions, args.runs) for form, m in built.items()}
        data["_meta"] = {"size": list(SIZE), "machine": machine(), "load": os.getloadavg()[0]}
        DATA.write_text(json.dumps(data, indent=1, sort_keys=True))
        print(
            name,
            {
                f: (e.get("fp32", {}).get("cycles"), e.get("int8", {}).get("cycles"))
                for f, e in data[name].items()
            },
            flush=True,
        )


def _elements(shape) -> int:
    return int(np.prod(shape)) if shape and 0 not in shape else 0


def byte_worth(names=("ECBSR M4C16 x4", "ABPN M4C28 x3", "ETDS M4C32 x2"), runs: int = 8) -> list[list]:
    """What one byte moved by an Add/Concat/Tile is worth in conv MACs on HTP (INT8 merged forms), from QNN's
    per-node cycles (each node's fewest cycles over ``runs`` runs, the least disturbed by load)."""
    import gc
    import tempfile

    from etc import htp, runtime
    from etc.shapes import static_shapes

    out = []
    catalog = pretrained_models()
    for name in names:
        model = int8(forms(*catalog[name])["merged"])
        fp32_shapes = static_shapes(model, SIZE) or {}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "p.csv")
            sess = htp.session(model, size=SIZE, profile_path=path)
            feed = runtime.make_inputs(runtime.input_specs(htp.static_copy(model, SIZE)), size=SIZE)
            for _ in range(runs + 1):
                sess.run(None, feed)
            del sess
            gc.collect()
            profile = htp.read_profile(path)[1:]
        floor = {n: min(r[1].get(n, 0) for r in profile) for n in profile[-1][1]}
        by_name = {n.name: n for n in model.graph.node}
        conv_cycles = conv_macs = slow_cycles = slow_bytes = 0
        for qnn_name, value in floor.items():
            node = by_name.get(htp.onnx_node_of(qnn_name).removesuffix("_pm"))
            if node is None:
                node = next(
                    (n for n in model.graph.node if htp.onnx_node_of(qnn_name).startswith(n.name)), None
                )
            if node is None:
                continue
            if node.op_type == "Conv":
                from etc.cost import node_macs

                conv_cycles += value
                conv_macs += node_macs(node, fp32_shapes) or 0
            elif node.op_type in ("Add", "Sum", "Concat", "Tile", "Sub"):
                slow_cycles += value
                slow_bytes += sum(_elements(fp32_shapes.get(t)) for t in [*node.input, *node.output] if t)
        per_mac = conv_cycles / max(conv_macs, 1)
        per_byte = slow_cycles / max(slow_bytes, 1)
        out.append([name, f"{per_mac:.3g}", f"{per_byte:.3g}", f"{per_byte / per_mac:.3g}"])
        print(out[-1], flush=True)
    return out


DECISIONS = Path(__file__).with_name("htp_decisions.json")
DECIDE_ORDER = (
    "ECBSR M4C16 x4",
    "published ECBSR M4C16 x4 (ReLU)",
    "ETDS M4C32 x2",
    "ABPN M4C28 x3",
    "ETDS M6C32 x2",
    "ETDS M4C32 x4",
    "ETDS M4C32 x3",
    "ETDS M6C32 x3",
    "ETDS M6C32 x4",
)


def placement_rows() -> list[list[str]]:
    """Every zoo model's ETC output (fold,rep,et; x2, random weights, default sizes) on HTP, FP32 and INT8:
    'all on HTP' or each refused node with QNN's reason."""
    from etc import htp, zoo
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline

    rows = []
    for name in zoo.available():
        model = run_pipeline(export(zoo.build(name, scale=2, seed=1), exporter="legacy"), "fold,rep,et").model
        cells = [name]
        for precision in ("fp32", "int8"):
            try:
                graph = model if precision == "fp32" else int8(model)
                found = htp.placement(graph, size=SIZE)
                cells.append("all on HTP" if found.all_on_htp else found.summary()[:200])
            except Exception as exc:
                cells.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}")
        rows.append(cells)
        print(" | ".join(cells), flush=True)
    return rows


def placement(args) -> None:
    warnings.filterwarnings("ignore")
    rows = placement_rows()
    body = (
        "`python -m bench.bench_htp_cost placement`; onnxruntime-qnn 2.7.0 HTP, CPU fallback disabled, 1x3x64x64; "
        "ETC's default output (fold,rep,et) of every zoo model (x2, random weights, default sizes) and its INT8 "
        "QDQ form (etc.quant.quantize's graph).\n\n" + markdown_table(["model", "FP32", "INT8"], rows)
    )
    print(body)
    if not args.no_write:
        write_section("htp: placement of the zoo", body)


def decision_table() -> str:
    """Markdown: ETC's default output against the merged, carried and official forms (from ``decide``)."""
    if not DECISIONS.exists():
        return ""
    data = json.loads(DECISIONS.read_text())
    rows = []
    for name, entry in data.items():
        med = {k: float(np.median(v)) for k, v in entry["cycles"].items()}
        for precision in ("int8", "fp32"):
            m, e, c, o = (med[f"{precision} {f}"] for f in ("merged", "etc", "carried", "official"))
            rows.append(
                [
                    name,
                    precision.upper(),
                    f"{m:.3g}",
                    f"{c:.3g}",
                    f"{e:.3g}",
                    f"{o:.3g}",
                    f"{e / o:.2f}",
                    f"{e / m:.2f}",
                    "merged"
                    if entry["same_as_etc"]["merged"]
                    else ("carried" if entry["same_as_etc"]["carried"] else "neither"),
                    f"{entry['load']:.0f}",
                ]
            )
    header = [
        "model",
        "precision",
        "merged",
        "carried (--max-growth 2)",
        "ETC default",
        "official plain",
        "default / official",
        "default / merged",
        "default is",
        "load",
    ]
    return (
        "`python -m bench.bench_htp_cost decide` (median of 2 interleaved rounds of 3 runs, 1x3x64x64, INT8 by "
        "etc.quant.quantize's graph). 'carried' is fold,rep,et with --max-growth 2 (the decisions the paper-fitted "
        "credit made); where the default *is* the carried graph, the two columns measure the same graph twice and "
        "their gap is the simulator's noise under load (ETDS M4C32 x4 INT8: 6.1e7 against 3.7e7).\n\n"
        + markdown_table(header, rows)
    )


def decide(args) -> None:
    """ETC's default output against the merged, the carried (budget 2x: the official conversion's decisions)
    and the official plain forms, INT8 and FP32, in interleaved rounds (the load drifts; every form sees it)."""
    from etc import htp
    from etc.frontends.torch import example_input, export
    from etc.pipeline import Options, run_pipeline

    warnings.filterwarnings("ignore")
    data = json.loads(DECISIONS.read_text()) if DECISIONS.exists() else {}
    catalog = pretrained_models()
    wanted = [w for w in args.only.split(",") if w]
    for name in DECIDE_ORDER:
        if wanted and not any(w.lower() in name.lower() for w in wanted):
            continue
        train_builder, official_builder = catalog[name]
        # Static 64x64 exports: HTP needs static shapes, and published ECBSR's legacy dynamic export bakes its
        # traced size into an Expand.
        example = example_input(*SIZE)
        train = export(train_builder(), example, exporter="legacy", dynamic_hw=False)
        fp32 = {
            "merged": run_pipeline(train, "fold,rep").model,
            "etc": run_pipeline(train, "fold,rep,et").model,
            "carried": run_pipeline(train, "fold,rep,et", options=Options(max_growth=2.0)).model,
            "official": export(official_builder(), example, exporter="legacy", dynamic_hw=False),
        }
        graphs = {("fp32", k): m for k, m in fp32.items()}
        graphs.update({("int8", k): int8(m) for k, m in fp32.items()})
        cycles: dict[str, list[int]] = {f"{p} {k}": [] for p, k in graphs}
        for _ in range(args.rounds):
            for (precision, form), model in graphs.items():
                cycles[f"{precision} {form}"].append(htp.cycles(model, size=SIZE, runs=3).total)
        same = {k: fp32[k].SerializeToString() == fp32["etc"].SerializeToString() for k in fp32}
        data[name] = {"cycles": cycles, "same_as_etc": same, "load": os.getloadavg()[0]}
        DECISIONS.write_text(json.dumps(data, indent=1, sort_keys=True))
        med = {k: int(np.median(v)) for k, v in cycles.items()}
        print(name, med, same, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--only", default="")
    m.add_argument("--sessions", type=int, default=2)
    m.add_argument("--runs", type=int, default=5)
    sub.add_parser("bytes")
    pl = sub.add_parser("placement")
    pl.add_argument("--no-write", action="store_true")
    d = sub.add_parser("decide")
    d.add_argument("--only", default="")
    d.add_argument("--rounds", type=int, default=2)
    r = sub.add_parser("report")
    r.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.command == "measure":
        measure(args)
    elif args.command == "decide":
        decide(args)
    elif args.command == "placement":
        placement(args)
    elif args.command == "bytes":
        byte_worth()
    else:
        report(args)


HELD_OUT = ("ETDS M4C32 x4", "ETDS M6C32 x4", "ABPN", "ECBSR M4C16 x4", "published ECBSR", "compact", "sesr")


def held_out(name: str) -> bool:
    return any(name.startswith(h) or h in name for h in HELD_OUT)


def samples(data: dict, precision: str) -> list[tuple[str, str, np.ndarray, float]]:
    """(model, form, [MACs, slow bytes, ops], cycles) for every form measured at ``precision``."""
    out = []
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        for form, e in entry.items():
            if precision == "int8" and form == "training":
                continue  # the quantizer leaves a training-time graph's Add/Concat/Clip in float: not what ships
            cycles = e.get(precision, {}).get("cycles")
            if cycles and e["macs"]:
                out.append(
                    (name, form, np.array([e["macs"], e["slow_bytes"], e["ops"]], float), float(cycles))
                )
    return out


def fit(rows) -> np.ndarray:
    """Non-negative least squares on relative error: cycles ~ a*MACs + b*slow bytes + c*ops."""
    from scipy.optimize import nnls

    x = np.array([r[2] / r[3] for r in rows])
    coef, _ = nnls(x, np.ones(len(rows)))
    return coef


def relative_error(coef: np.ndarray, row) -> float:
    return float(coef @ row[2] / row[3] - 1.0)


def report(args) -> None:
    data = json.loads(DATA.read_text())
    lines = []
    fits = {}
    for precision in ("int8", "fp32"):
        rows = samples(data, precision)
        train = [r for r in rows if not held_out(r[0])]
        test = [r for r in rows if held_out(r[0])]
        coef = fit(train)
        fits[precision] = coef
        errors = [abs(relative_error(coef, r)) for r in test]
        train_errors = [abs(relative_error(coef, r)) for r in train]
        lines.append(
            f"- {precision.upper()}: cycles = {coef[0]:.3g} x MACs + {coef[1]:.3g} x slow bytes + {coef[2]:.3g} x ops "
            f"(one slow byte = {coef[1] / max(coef[0], 1e-12):.3g} MACs); fitted on {len(train)} forms (median abs "
            f"error {np.median(train_errors):.0%}), held out {len(test)} forms: median abs error "
            f"{np.median(errors) if errors else float('nan'):.0%}"
        )
    header = [
        "model",
        "form",
        "MACs",
        "FP32 cycles",
        "INT8 cycles",
        "INT8 / official",
        "INT8 / merged",
        "npu model err (INT8)",
        "held out",
    ]
    table = []
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        official = entry.get("official", {}).get("int8", {}).get("cycles")
        merged = entry.get("merged", {}).get("int8", {}).get("cycles")
        for form in ("training", "merged", "etc", "official"):
            e = entry.get(form)
            if e is None:
                continue
            f32 = e["fp32"].get("cycles") or e["fp32"].get("refused") or e["fp32"].get("error", "")
            i8 = e["int8"].get("cycles") or e["int8"].get("refused") or e["int8"].get("error", "")
            err = ""
            if isinstance(i8, int) and e["macs"]:
                feats = np.array([e["macs"], e["slow_bytes"], e["ops"]], float)
                err = f"{fits['int8'] @ feats / i8 - 1:+.0%}"
            table.append(
                [
                    name,
                    form,
                    f"{e['macs'] / 1e6:.1f}M" if e["macs"] else "?",
                    f"{f32:.3g}" if isinstance(f32, int) else str(f32)[:60],
                    f"{i8:.3g}" if isinstance(i8, int) else str(i8)[:60],
                    f"{i8 / official:.2f}" if isinstance(i8, int) and official else "",
                    f"{i8 / merged:.2f}" if isinstance(i8, int) and merged else "",
                    err,
                    "yes" if held_out(name) else "",
                ]
            )
    decisions = decision_table()
    meta = data.get("_meta", {})
    body = (
        f"`python -m bench.bench_htp_cost measure --sessions 1 --runs 4` then `report`; {meta.get('machine', '')}; "
        f"HTP simulator (onnxruntime-qnn 2.7.0) at 1x3x64x64; load average {meta.get('load', 0):.0f} during the "
        'last model (the other jobs\' load inflates cycles, see "htp: cycle determinism").\n\n'
        + "\n".join(lines)
        + "\n\n"
        + markdown_table(header, table)
        + "\n\n"
        + decisions
    )
    print(body)
    if not args.no_write:
        write_section("htp: cycles of the zoo and the npu model", body)


if __name__ == "__main__":
    main()
