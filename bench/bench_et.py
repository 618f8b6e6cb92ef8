"""Inference latency after ``et``: original export, onnxsim, onnxslim, ETC and the official plain model, side by side.

python -m bench.bench_et              # writes the "et: latency" section of bench/RESULTS.md
python -m bench.bench_et --rounds 5   # quicker, noisier

onnxruntime CPU, FP32, input 1x3x360x640, default graph optimizations (what a deployment uses). The five models of
one network are timed interleaved (one run each per round) so machine load hits them alike; the table reports the
fastest round (the least disturbed by other processes) and the load average after the runs.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from bench.common import machine, markdown_table, write_section

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
    ref = export(zoo.build(official, scale=scale, pretrained=True, M=M, C=C), exporter=exporter)
    return {"original": model, "onnxsim": sim, "onnxslim": slim, "etc": ours, "official": ref}


def latencies(models: dict, rounds: int, threads: int) -> dict[str, float]:
    from etc import runtime

    sessions = {k: runtime.session(m, optimize=True, threads=threads) for k, m in models.items()}
    x = np.random.default_rng(0).uniform(0, 1, size=(1, 3, *SIZE)).astype(np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(2):
            s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def ops_summary(model) -> str:
    from etc.graph import op_histogram

    return " ".join(f"{op}:{n}" for op, n in op_histogram(model).items())


def run(rounds: int, threads: int, exporter: str) -> str:
    warnings.filterwarnings("ignore")
    rows, notes = [], []
    for label, source, kw, official, scale, M, C in NETWORKS:
        models = variants(source, kw, official, scale, M, C, exporter)
        ms = latencies(models, rounds, threads)
        row = [label, *(f"{ms[k] * 1000:.1f}" for k in models)]
        row += [f"{ms['etc'] / ms['official']:.3f}", f"{ms['etc'] / ms['original']:.3f}"]
        rows.append(row)
        notes.append(
            f"- {label}: etc `{ops_summary(models['etc'])}`; official `{ops_summary(models['official'])}`"
        )
        print(row, flush=True)
    header = ["network", "original ms", "onnxsim ms", "onnxslim ms", "etc ms", "official ms"]
    header += ["etc / official", "etc / original"]
    body = (
        f"Command: `python -m bench.bench_et --rounds {rounds} --threads {threads}` ({machine()}). "
        f"onnxruntime CPU FP32, 1x3x{SIZE[0]}x{SIZE[1]}, graph optimizations on, {threads} intra-op threads; "
        f"{exporter} exports with dynamic H/W and real pretrained weights; etc = `fold,rep,et --align-channels 4`; "
        f"fastest of interleaved rounds; load average {os.getloadavg()[0]:.1f} after the runs.\n\n"
        + markdown_table(header, rows)
        + "\n\nOps after conversion:\n"
        + "\n".join(notes)
    )
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "legacy"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    body = run(args.rounds, args.threads, args.exporter)
    print(body)
    if not args.no_write:
        write_section("et: latency", body)


if __name__ == "__main__":
    main()
