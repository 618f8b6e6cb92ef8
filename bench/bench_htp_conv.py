"""What one conv costs on HTP, by its channel counts, and whether that explains whole models' INT8 cycles.

    python -m bench.bench_htp_conv grid [--runs 4]          # one Conv+Relu per (in, out) channel pair
    python -m bench.bench_htp_conv models [--only ETDS]     # real forms, node by node
    python -m bench.bench_htp_conv report                   # both -> "htp: what a conv costs" in RESULTS.md

``grid``: a single 3x3 Conv+Relu at 1xCx64x64 for C_in, C_out in {8, 16, 19, 24, 32, 48, 64}, as FP32 and as INT8
QDQ (etc.quant.quantize on random calibration tensors, nearest rounding); the conv node's cycles (QNN's profile,
the fewest over ``--runs`` runs) divided by its MACs. ``models``: the INT8 forms of the pretrained seed models
(merged, ETC's default, official plain), each QNN node's fewest cycles over two sessions of four runs, against
cycles = rate x padded MACs with the rate fitted on two of the models (``FIT``) and the others held out. A conv
measured alone is cheaper per MAC than the same conv inside a network (its cycles overlap the input's
conversion), so the grid gives the shape of the cost (the padding), the real models its rate.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np

from bench.common import machine, markdown_table, write_section

SIZE = (64, 64)
CHANNELS = (8, 16, 19, 24, 32, 48, 64)
LANES = 32  # HTP stores INT8 activations in 32-channel depth slices
DATA = Path(__file__).with_name("htp_conv.json")


def conv_model(cin: int, cout: int, k: int = 3):
    """One Conv(k x k, same padding)+Relu on a dynamic-size cin-channel input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(cin * 100 + cout)
    weight = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.1).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(cout, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, "h", "w"])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def int8(model, channels: int):
    from etc.quant import quantize

    calib = [np.random.default_rng(i).random((1, channels, 32, 32), dtype=np.float32) for i in range(4)]
    return quantize(
        model, calib=calib, rounding="nearest", equalize=False, bias_correction=False, floor=False
    )[0]


def node_floors(model, sessions: int, runs: int) -> dict[str, int]:
    """Each QNN node's fewest cycles over ``sessions`` x ``runs`` runs."""
    from etc import htp

    floors: dict[str, int] = {}
    for _ in range(sessions):
        for name, value in htp.cycles(model, size=SIZE, runs=runs).per_node.items():
            floors[name] = min(value, floors.get(name, value))
    return floors


def conv_cycles(floors: dict[str, int], node: str) -> int:
    from etc.htp import onnx_node_of

    return sum(v for k, v in floors.items() if onnx_node_of(k) == node)


def grid(args) -> None:
    data = _load()
    rows = {}
    for precision in ("fp32", "int8"):
        for cin in CHANNELS:
            for cout in CHANNELS:
                model = conv_model(cin, cout)
                if precision == "int8":
                    model = int8(model, cin)
                cycles = conv_cycles(node_floors(model, 1, args.runs), "conv")
                rows[f"{precision} {cin} {cout}"] = cycles
                print(precision, cin, cout, cycles, f"{cycles / macs(cin, cout):.3f} cycles/MAC", flush=True)
    data["grid"] = rows
    _save(data)


def macs(cin: int, cout: int, k: int = 3) -> int:
    return SIZE[0] * SIZE[1] * k * k * cin * cout


def padded_macs(cin: int, cout: int, taps: int, pixels: int) -> int:
    """MACs with the output channels rounded up to whole 32-channel slices."""
    return pixels * taps * cin * LANES * math.ceil(cout / LANES)


def models(args) -> None:
    from bench.bench_htp_cost import forms, pretrained_models
    from bench.bench_htp_cost import int8 as int8_form
    from etc.shapes import static_shapes

    data = _load()
    found = data.setdefault("models", {})
    wanted = [n for n in args.only.split(",") if n] or list(DEFAULT_MODELS)
    for name in wanted:
        train, official = pretrained_models()[name]
        for form, model in forms(train, official).items():
            if form == "training":
                continue
            q = int8_form(model)
            for i, node in enumerate(q.graph.node):
                node.name = node.name or f"{node.op_type}_{i}"
            shapes = static_shapes(q, SIZE) or {}
            floors = node_floors(q, args.sessions, args.runs)
            convs = conv_shapes(q, shapes)
            found[f"{name}|{form}"] = {"nodes": floors, "convs": convs, "ops": _ops(q)}
            print(name, form, sum(floors.values()), flush=True)
            _save(data)


def features(args) -> None:
    """Stores etc.cost.htp_features of every measured form (CPU only: the forms are rebuilt, not run)."""
    from bench.bench_htp_cost import forms, pretrained_models
    from bench.bench_htp_cost import int8 as int8_form
    from etc.cost import htp_features, htp_integer_prelus, integer_view
    from etc.shapes import static_shapes

    data = _load()
    built: dict[str, dict] = {}
    for key, entry in data.get("models", {}).items():
        name, form = key.split("|")
        if name not in built:
            built[name] = forms(*pretrained_models()[name])
        quantized = int8_form(built[name][form])
        plain, _ = integer_view(quantized)
        entry["features"] = htp_features(
            plain, static_shapes(plain, SIZE) or {}, htp_integer_prelus(quantized)
        )
        print(key, entry["features"], flush=True)
    _save(data)


DEFAULT_MODELS = (
    "ETDS M4C32 x2",
    "ETDS M4C32 x4",
    "ETDS M6C32 x3",
    "ABPN M4C28 x3",
    "ECBSR M4C16 x4",
    "FSRCNN x3",
    "ESPCN x3",
)


def conv_shapes(model, shapes) -> dict[str, list[int]]:
    """Conv node -> [C_in, C_out, taps, output pixels] (weights read through their DequantizeLinear)."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    made = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        weight = node.input[1]
        if weight in made and made[weight].op_type == "DequantizeLinear":
            weight = made[weight].input[0]
        dims, shape = inits.get(weight), shapes.get(node.output[0])
        if dims and shape:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out[node.name] = [dims[1] * group, dims[0], dims[2] * dims[3], shape[2] * shape[3]]
    return out


def _ops(model) -> dict[str, str]:
    return {n.name: n.op_type for n in model.graph.node}


FIT = (
    "ETDS M4C32 x2",
    "ABPN M4C28 x3",
    "FSRCNN x3",
)  # the real models fitted on; every other one is held out


def conv_facts(entry: dict) -> tuple[int, int, int]:
    """(measured conv cycles, MACs, padded MACs) of one measured form."""
    from etc.htp import onnx_node_of

    names = set(entry["convs"])
    measured = sum(v for k, v in entry["nodes"].items() if onnx_node_of(k) in names)
    plain = sum(math.prod(c) for c in entry["convs"].values())
    padded = sum(padded_macs(cin, cout, taps, pixels) for cin, cout, taps, pixels in entry["convs"].values())
    return measured, plain, padded


def node_categories(entry: dict) -> dict[str, int]:
    """A form's node floors summed by what they are: conv, graph input/output, DepthToSpace, float ops with
    their conversions, anything else."""
    from etc.htp import onnx_node_of

    sums = dict.fromkeys(("conv", "io", "depth_to_space", "float_op", "other"), 0)
    for qnn, cycles in entry["nodes"].items():
        base = onnx_node_of(qnn)
        op = entry["ops"].get(base, "")
        if base in entry["convs"]:
            sums["conv"] += cycles
        elif op == "DepthToSpace":
            sums["depth_to_space"] += cycles
        elif base == "input_Q" or qnn.startswith(("Transpose", "Output", "Input")):
            sums["io"] += cycles
        elif op in ("QuantizeLinear", "DequantizeLinear", "PRelu", "Tanh", "Sigmoid"):
            sums["float_op"] += cycles
        else:
            sums["other"] += cycles
    return sums


def fit_rates(entries: list[dict]) -> dict[str, float]:
    """Cycles per unit of every etc.cost.htp_features term, each from the nodes that do that work."""
    cats = [node_categories(e) for e in entries]
    feats = [e["features"] for e in entries]
    fused = [i for i, f in enumerate(feats) if not f["unfused_macs"]]
    padded = sum(cats[i]["conv"] for i in fused) / sum(feats[i]["padded_macs"] for i in fused)
    mixed = [i for i, f in enumerate(feats) if f["unfused_macs"]]
    unfused = sum(cats[i]["conv"] - padded * feats[i]["padded_macs"] for i in mixed) / sum(
        feats[i]["unfused_macs"] for i in mixed
    )
    rates = {"padded_macs": padded, "unfused_macs": unfused}
    for key in ("io", "depth_to_space", "float_op"):
        units = sum(f[key] for f in feats)
        rates[key] = sum(c[key] for c, f in zip(cats, feats) if f[key]) / units if units else 0.0
    return rates


def estimate_rows(forms: dict[str, dict], rates: dict[str, float]) -> tuple[list[list[str]], list[float]]:
    from etc.cost import htp_int8_cycles

    rows, errors = [], []
    for key, entry in forms.items():
        name, form = key.split("|")
        measured = sum(entry["nodes"].values())
        fitted = sum(rates[k] * v for k, v in entry["features"].items()) / measured - 1
        shipped = htp_int8_cycles(entry["features"]) / measured - 1
        held = name not in FIT
        if held:
            errors.append(abs(shipped))
        rows.append(
            [name, form, "yes" if held else "fit", f"{measured:.3g}", f"{fitted:+.0%}", f"{shipped:+.0%}"]
        )
    return rows, errors


def report(args) -> None:
    data = _load()
    grid_rows = []
    for precision in ("int8", "fp32"):
        for cin in CHANNELS:
            cells = [data["grid"].get(f"{precision} {cin} {cout}") for cout in CHANNELS]
            grid_rows.append(
                [precision, cin]
                + [f"{c / macs(cin, cout):.2f}" if c else "-" for c, cout in zip(cells, CHANNELS)]
            )
    forms = data.get("models", {})
    fitted = [conv_facts(e) for k, e in forms.items() if k.split("|")[0] in FIT]
    rate = float(np.median([m / p for m, _, p in fitted])) if fitted else float("nan")
    rows, errors = [], []
    for key, entry in forms.items():
        name, form = key.split("|")
        measured, plain, padded = conv_facts(entry)
        total = sum(entry["nodes"].values())
        error = rate * padded / measured - 1
        held = name not in FIT
        if held:
            errors.append(abs(error))
        rows.append(
            [
                name,
                form,
                "yes" if held else "fit",
                f"{total:.3g}",
                f"{measured / total:.0%}",
                f"{measured / plain:.3f}",
                f"{measured / padded:.3f}",
                f"{error:+.0%}",
            ]
        )
    header = ["model", "form", "held out", "all nodes", "conv share", "cycles / MAC", "cycles / padded MAC"]
    body = "\n\n".join(
        [
            f"Commands: `python -m bench.bench_htp_conv grid`, `... models`, `... report` ({machine()}; "
            f"HTP simulator of onnxruntime-qnn at 1xCx{SIZE[0]}x{SIZE[1]}; other jobs kept the load average at "
            "11-13 on the 2 cores, so each figure is a node's fewest cycles over its runs).",
            "Cycles per MAC of one 3x3 Conv+Relu alone, rows C_in, columns C_out "
            + ", ".join(map(str, CHANNELS))
            + ":",
            markdown_table(["precision", "C_in"] + [str(c) for c in CHANNELS], grid_rows),
            f"INT8 conv nodes of real models (INT8 QDQ of bench.bench_htp_cost) against cycles = rate x padded "
            f"MACs (C_out rounded up to a multiple of {LANES}), the rate fitted on {', '.join(FIT)} "
            f"({rate:.3f} cycles per padded MAC); 'conv share' is the conv nodes' part of the graph's cycles.",
            markdown_table([*header, "conv error"], rows),
            f"Median absolute error on the {len(errors)} held-out forms: {np.median(errors):.0%}."
            if errors
            else "",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("htp: what a conv costs", with_reading("htp: what a conv costs", body))
    measured = {k: e for k, e in forms.items() if "features" in e}
    if measured:
        estimate_section(measured, args)


def estimate_section(forms: dict[str, dict], args) -> None:
    from etc.cost import HTP_CYCLES

    fitted = [
        e for k, e in forms.items() if k.split("|")[0] in FIT and "ConvTranspose" not in e["ops"].values()
    ]
    rates = fit_rates(fitted)  # a ConvTranspose is estimated by its padded MACs, not fitted
    rows, errors = estimate_rows(forms, rates)
    body = "\n\n".join(
        [
            "Command: `python -m bench.bench_htp_conv features` then `report` (the node floors of 'htp: what a "
            "conv costs'). etc.cost.htp_int8_cycles = sum of rate x term over etc.cost.htp_features: conv MACs "
            f"with C_out padded to {LANES} (fused ReLU or none; or feeding an op HTP runs in float), elements of "
            "the graph's inputs and outputs, of DepthToSpace outputs and of float-op outputs (PReLU, Tanh, ...). "
            f"Each rate is fitted on the nodes that do that work in {', '.join(FIT)}; the other models are held out.",
            markdown_table(
                ["term", "fitted here", "etc.cost.HTP_CYCLES"],
                [[k, f"{rates[k]:.3g}", f"{HTP_CYCLES[k]:.3g}"] for k in HTP_CYCLES],
            ),
            markdown_table(
                ["model", "form", "held out", "measured cycles", "error (fitted rates)", "error (etc.cost)"],
                rows,
            ),
            f"Median absolute error of etc.cost's estimate on the {len(errors)} held-out forms: "
            f"{np.median(errors):.0%}.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("htp: an INT8 estimate", with_reading("htp: an INT8 estimate", body))


def with_reading(title: str, body: str) -> str:
    """``body`` followed by the hand-written "Reading it." paragraphs the section already has in RESULTS.md."""
    import re

    from bench.common import RESULTS

    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    start = section.group(0).find("\nReading it.") if section else -1
    return body if start < 0 else f"{body}\n{section.group(0)[start:].rstrip()}"


def _load() -> dict:
    return json.loads(DATA.read_text()) if DATA.exists() else {}


def _save(data: dict) -> None:
    DATA.write_text(json.dumps(data, indent=1, sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["grid", "models", "features", "report"])
    parser.add_argument("--only", default="")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    {"grid": grid, "models": models, "features": features, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
