"""Inference latency after ``et``: original export, onnxsim, onnxslim, ETC and the official plain model, side by side.

python -m bench.bench_et                        # writes the "et: latency" section of bench/RESULTS.md
python -m bench.bench_et --rounds 10 --no-write # quicker, noisier
python -m bench.bench_et --exporter legacy      # one exporter only

onnxruntime CPU, FP32, input 1x3x360x640, default graph optimizations (what a deployment uses). The six models of
one network (original, onnxsim, onnxslim, etc, etc + the opt-in ``depthwise`` pass, official) are timed
interleaved: one run each per round, in a fresh random order every round, each in a new session warmed up once
(two sessions of the same model differed by up to 10% here, a bias fixed when the session is made). Ratios are the
median of the per-round ratios with a 95% bootstrap interval; pairing runs of the same round cancels the slow
load drift.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np

from bench.common import (
    image_latencies,
    machine,
    markdown_table,
    paired_ratio,
    write_section,
)

#: (label, source zoo name, build kwargs, official zoo name, scale, M, C)
NETWORKS = [
    ("ABPN_M4C28_x4 + clamp", "abpn", {"clamp": True}, "abpn_et", 4, 4, 28),
    ("ABPN_M4C28_x3 + clamp", "abpn", {"clamp": True}, "abpn_et", 3, 4, 28),
    ("ETDS_M5C16_x4 (dual stream)", "etds_dual", {}, "etds", 4, 5, 16),
    ("ECBSR_M4C16_x4 + clamp", "ecbsr", {"clamp": True}, "ecbsr_et", 4, 4, 16),
]
SIZE = (360, 640)


def variants(source: str, kw: dict, official: str, scale: int, M: int, C: int, exporter: str) -> dict:
    import onnxsim
    import onnxslim

    from etc import zoo
    from etc.frontends.torch import export
    from etc.pipeline import Options, run_pipeline

    model = export(zoo.build(source, scale=scale, pretrained=True, M=M, C=C, **kw), exporter=exporter)
    sim, _ = onnxsim.simplify(model, check_n=0)
    slim = onnxslim.slim(model)
    ours = run_pipeline(model, "fold,rep,et", options=Options(align_channels=4)).model
    lowered = run_pipeline(ours, "depthwise").model
    ref = export(zoo.build(official, scale=scale, pretrained=True, M=M, C=C), exporter=exporter)
    return {
        "original": model,
        "onnxsim": sim,
        "onnxslim": slim,
        "etc": ours,
        "etc+dw": lowered,
        "official": ref,
    }


def ratio_cell(a: list[float], b: list[float]) -> str:
    mid, low, high = paired_ratio(a, b)
    return f"{mid:.3f} [{low:.3f}, {high:.3f}]"


def ops_summary(model) -> str:
    from etc.graph import op_histogram

    return " ".join(f"{op}:{n}" for op, n in op_histogram(model).items())


def conv_layout(model) -> list[tuple]:
    """The compute skeleton: op type, weight shape, group, pads, strides of every non-Constant node in order."""
    from onnx import numpy_helper

    shapes = {i.name: tuple(numpy_helper.to_array(i).shape) for i in model.graph.initializer}
    layout = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        attrs = {
            a.name: tuple(a.ints) or a.i for a in node.attribute if a.name in ("group", "pads", "strides")
        }
        weight = shapes.get(node.input[1]) if node.op_type == "Conv" else None
        layout.append((node.op_type, weight, attrs.get("group", 1), attrs.get("pads"), attrs.get("strides")))
    return layout


def structure_note(ours, official) -> str:
    """'identical' when both models run the same ops with the same conv shapes, else the first difference."""
    a, b = conv_layout(ours), conv_layout(official)
    if a == b:
        return "identical ops and conv shapes"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"differs at node {i}: etc {x[0]} {x[1]}, official {y[0]} {y[1]}"
    return f"etc has {len(a)} nodes, official {len(b)}"


def verdicts(rows: list[list[str]]) -> str:
    """The issue's two goals read off the table rows: etc within 2% of official, ETDS <= 0.55x its original."""
    lines = []
    for row in rows:
        label, exporter = row[0], row[1]
        vs_official, vs_original, _, dw_original = (float(cell.split()[0]) for cell in row[8:12])
        line = f"- {label}, {exporter}: etc / official {vs_official:.3f}"
        line += (
            " (within 2%)"
            if abs(vs_official - 1) <= 0.02
            else " (cheaper)"
            if vs_official < 1
            else " (slower)"
        )
        if label.startswith("ETDS"):
            line += f"; etc / original {vs_original:.3f}" + (" <= 0.55" if vs_original <= 0.55 else " > 0.55")
            line += f", etc+dw / original {dw_original:.3f}" + (
                " <= 0.55" if dw_original <= 0.55 else " > 0.55"
            )
        lines.append(line)
    return "\n".join(lines)


def run(rounds: int, threads: int, exporters: list[str]) -> str:
    warnings.filterwarnings("ignore")
    rows, notes = [], []
    for exporter in exporters:
        for label, source, kw, official, scale, M, C in NETWORKS:
            models = variants(source, kw, official, scale, M, C, exporter)
            t = image_latencies(models, SIZE, rounds, threads)
            row = [label, exporter, *(f"{np.median(t[k]) * 1000:.1f}" for k in models)]
            row += [ratio_cell(t["etc"], t["official"]), ratio_cell(t["etc"], t["original"])]
            row += [ratio_cell(t["etc+dw"], t["official"]), ratio_cell(t["etc+dw"], t["original"])]
            rows.append(row)
            if exporter == exporters[0]:
                notes.append(
                    f"- {label}: etc `{ops_summary(models['etc'])}`; "
                    f"official `{ops_summary(models['official'])}`; "
                    f"{structure_note(models['etc'], models['official'])}"
                )
            print(row, flush=True)
    header = ["network", "exporter", "original ms", "onnxsim ms", "onnxslim ms", "etc ms", "etc+dw ms"]
    header += ["official ms", "etc / official", "etc / original", "etc+dw / official", "etc+dw / original"]
    body = (
        f"Command: `python -m bench.bench_et --rounds {rounds} --threads {threads} --exporter "
        f"{','.join(exporters)}` ({machine()}). onnxruntime CPU FP32, 1x3x{SIZE[0]}x{SIZE[1]}, graph "
        f"optimizations on, {threads} intra-op threads; exports with dynamic H/W and real pretrained weights; "
        "etc = `fold,rep,et --align-channels 4`; etc+dw = etc followed by the opt-in `depthwise` pass (the "
        "clamp's Conv1x1(-I, 1) as a depthwise conv). Rounds in random order, a new session per model and round "
        "(warmed up once); ms = median of the rounds; ratios = median of per-round ratios [95% bootstrap "
        f"interval]; load average {os.getloadavg()[0]:.1f} after the runs.\n\n"
        + markdown_table(header, rows)
        + "\n\nGoals (medians of the paired ratios):\n"
        + verdicts(rows)
        + "\n\nOps after conversion:\n"
        + "\n".join(notes)
    )
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exporter", default="legacy,dynamo", help="comma list of torch exporters")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    exporters = [e for e in args.exporter.split(",") if e]
    if not exporters or set(exporters) - {"legacy", "dynamo"}:
        parser.error("--exporter takes legacy, dynamo or both (comma separated)")
    body = run(args.rounds, args.threads, exporters)
    print(body)
    if not args.no_write:
        write_section("et: latency", body)


if __name__ == "__main__":
    main()
