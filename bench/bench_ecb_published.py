"""ECB as published (bias written into the border by slice assignment) vs the deployed ECBSR, after fold,rep,et.

python -m bench.bench_ecb_published            # writes the "ecb as published" section of bench/RESULTS.md

Pretrained ECBSR_M4C16_x4 deploy weights split into the published ECB branches (the split of etc.zoo.ecbsr),
exported by both exporters with static H/W at 360x640; the deployed form (``rep_params``, one conv per block) is
exported the same way. Both go through ``fold,rep,et``; the table gives op counts and onnxruntime CPU latency.
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench.common import image_latencies, write_section

SIZE = (360, 640)


def models(exporter: str) -> dict:
    """Exports and their fold,rep,et results: {name: (model, compile seconds or None)}."""
    import time

    import torch

    from etc import zoo
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline
    from etc.zoo.ecbsr import ECBSRTrain
    from etc.zoo.published.ecbsr import PublishedECBSR

    deploy = zoo.build("ecbsr", scale=4, pretrained="ECBSR_M4C16_x4")
    published = PublishedECBSR.from_train(ECBSRTrain.from_deploy(deploy, seed=7))
    example = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, net in (("published", published), ("deployed", deploy)):
        model = export(net, example=example, exporter=exporter, dynamic_hw=False)
        out[f"{name} export"] = (model, None)
        start = time.perf_counter()
        optimized = run_pipeline(model, "fold,rep,et").model
        out[f"{name} + etc"] = (optimized, time.perf_counter() - start)
    return out


def conv_shapes(model) -> list[tuple[int, ...]]:
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]


def run(exporter: str, rounds: int, threads: int) -> list[list[str]]:
    """One table row per variant; only the two optimized forms are timed (the raw exports take seconds)."""
    from etc.graph import op_histogram
    from etc.testing import op_types

    variants = models(exporter)
    timed = {k: m for k, (m, seconds) in variants.items() if seconds is not None}
    times = image_latencies(timed, SIZE, rounds, threads)
    base = statistics.median(times["deployed + etc"])
    got, want = variants["published + etc"][0], variants["deployed + etc"][0]
    same = op_types(got) == op_types(want) and conv_shapes(got) == conv_shapes(want)
    rows = []
    for name, (model, seconds) in variants.items():
        ops = op_histogram(model)
        shown = ", ".join(f"{op} {n}" for op, n in sorted(ops.items()) if op != "Constant")
        if name in times:
            median = statistics.median(times[name])
            ms, ratio = f"{median * 1000:.1f}", f"{median / base:.3f}"
        else:
            ms, ratio = "-", "-"
        compiled = f"{seconds:.1f}" if seconds is not None else "-"
        ident = ("yes" if same else "NO") if name == "published + etc" else ""
        rows.append([exporter, name, str(ops.get("Conv", 0)), shown, compiled, ms, ratio, ident])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exporters", default="legacy,dynamo")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = [row for exporter in args.exporters.split(",") for row in run(exporter, args.rounds, args.threads)]
    header = (
        "| exporter | model | Conv | ops | etc s | ms | / deployed + etc | same ops and conv shapes |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    table = header + "\n".join("| " + " | ".join(r) + " |" for r in rows)
    load = os.getloadavg()[0]
    body = (
        f"Command: `python -m bench.bench_ecb_published --rounds {args.rounds} --threads {args.threads}` "
        f"(load average {load:.1f} when run). Pretrained ECBSR_M4C16_x4 split into ECB branches written as "
        "published (1x1 output zero-padded, bias written into the border by slice assignment); static 360x640 "
        "exports; etc s = time of fold,rep,et; onnxruntime CPU FP32, default graph optimizations, 1x3x360x640, "
        "median of interleaved runs, fresh session per round (the raw exports are not timed).\n\n" + table
    )
    print(body)
    if not args.no_write:
        write_section("ecb as published", body)


if __name__ == "__main__":
    main()
