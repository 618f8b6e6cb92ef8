"""Inference latency of training-time exports vs ETC ``fold,rep`` vs onnxsim vs onnxslim, side by side in one run.

python -m bench.bench_rep                 # writes the "rep: latency" section of bench/RESULTS.md
python -m bench.bench_rep --repeat 5 --no-write

Each training-time zoo net (x4, default sizes) is exported once (dynamic H/W); the four variants are timed on
onnxruntime CPU, FP32, default graph optimizations (what a user deploys), input 1x3x360x640. Runs are
interleaved (variant A, B, C, D, A, B, ...) so machine load hits every variant alike; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

from bench.common import machine, markdown_table, write_section

MODELS = ("ecbsr_train", "repvgg", "acnet", "dbb", "sesr")
SIZE = (360, 640)


def build(name: str):
    from etc import zoo

    if name == "ecbsr_train" and zoo.pretrained_dir() is not None:
        return zoo.build(name, scale=4, pretrained=True), "ECBSR_M4C16_x4 weights"
    return zoo.build(name, scale=4, seed=0), "random init"


def variants(model):
    import onnxsim
    import onnxslim

    from etc.pipeline import run_pipeline

    out = {"training-time export": model}
    start = time.perf_counter()
    out["etc fold,rep"] = run_pipeline(model, "fold,rep").model
    compile_s = time.perf_counter() - start
    out["onnxsim"] = onnxsim.simplify(model, check_n=0)[0]
    out["onnxslim"] = onnxslim.slim(model)
    return out, compile_s


def session(model, threads: int):
    """A timing session: onnxruntime's own graph optimizations on, as deployed."""
    from etc import runtime

    return runtime.session(model, optimize=True, threads=threads)


def time_side_by_side(models: dict, repeat: int, threads: int) -> dict[str, float]:
    """Median seconds per variant, runs interleaved; every variant's output is checked against the first."""
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, *SIZE)).astype(np.float32)
    sessions = {k: session(m, threads) for k, m in models.items()}
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    from etc.runtime import compare

    reference = None
    for key, sess in sessions.items():
        y = sess.run(None, feeds[key])[0]
        reference = y if reference is None else reference
        diff = compare(reference, y)
        if not diff.within(1e-5, 1e-5):
            raise AssertionError(f"{key} differs from the training-time export by {diff.max_abs:.3g}")
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeat):
        for key, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feeds[key])
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def run(repeat: int, threads: int, exporter: str) -> str:
    from etc.frontends.torch import export

    warnings.filterwarnings("ignore")
    rows = []
    for name in MODELS:
        net, weights = build(name)
        model = export(net, dynamic_hw=True, exporter=exporter)
        models, compile_s = variants(model)
        convs = {k: sum(n.op_type == "Conv" for n in m.graph.node) for k, m in models.items()}
        median = time_side_by_side(models, repeat, threads)
        base = median["training-time export"]
        for key in models:
            rows.append(
                [
                    f"{name} ({weights})" if key == "training-time export" else "",
                    key,
                    len(models[key].graph.node),
                    convs[key],
                    f"{median[key] * 1000:.1f}",
                    f"{base / median[key]:.2f}x",
                ]
            )
        print(
            f"{name}: fold,rep compiled in {compile_s:.2f} s; "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in median.items())
        )
    table = markdown_table(["model", "variant", "nodes", "convs", "median ms", "speed-up vs export"], rows)
    return (
        f"Command: `python -m bench.bench_rep --repeat {repeat} --threads {threads} --exporter {exporter}` "
        f"({machine()}). Scale 4, default sizes (M4C16; SESR M5C16 with 256-wide linear blocks), {exporter} export "
        f"with dynamic H/W; onnxruntime CPU FP32, default graph optimizations, {threads} intra-op threads, "
        f"input 1x3x{SIZE[0]}x{SIZE[1]}; median of {repeat} interleaved runs after one check run per variant "
        "(every variant's output equals the export's within 1e-5 + 1e-5 x output range).\n\n" + table
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    body = run(args.repeat, args.threads, args.exporter)
    print(body)
    if not args.no_write:
        write_section("rep: latency", body)


if __name__ == "__main__":
    main()
