"""Latency of ETC's output vs the library's own deployed export, for the published re-parameterizable forms.

python -m bench.bench_published_reparam               # writes the "published reparam: latency" section
python -m bench.bench_published_reparam --rounds 5 --no-write

The test nets of etc/zoo/published/reparam.py at deployment widths: a MobileOne stack (timm's blocks, 4 conv
branches as in mobileone_s0, 48/96 channels) on 1x3x224x224, and SPAN (Conv3XC in SPAB blocks, 48 channels,
6 blocks, x4) with and without its concat tail on 1x3x128x128. Each is exported in its training form and in its
deployed form (the library's fusion, computed in torch); etc = ``fold,rep,et`` of the training export; etc and
deployed are timed (the training form only counted). onnxruntime CPU FP32, graph optimizations on; rounds
interleaved in a fresh random order, a new session per model and round (bench.common.interleaved_times); ratios
are medians of per-round ratios with a 95% bootstrap interval.
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


def networks():
    from etc.zoo.published.reparam import SPAN, MobileOneStack

    return [
        ("MobileOne stack (k=4, 48/96 ch)", MobileOneStack(channels=48, kernel=3, branches=4), (224, 224)),
        ("SPAN C48 x4, 6 SPAB, no concat tail", SPAN(48, 6, 4, concat_tail=False), (128, 128)),
        ("SPAN C48 x4, 6 SPAB (published)", SPAN(48, 6, 4), (128, 128)),
    ]


def forms(net, exporter: str) -> dict:
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline

    train = export(net, exporter=exporter)
    return {
        "training": train,
        "etc": run_pipeline(train, "fold,rep,et").model,
        "deployed": export(net.deploy(), exporter=exporter),
    }


def conv_count(model) -> int:
    return sum(node.op_type == "Conv" for node in model.graph.node)


def macs(model, size: tuple[int, int]) -> float:
    from etc.info import model_info

    return model_info(model, size).macs


def run(rounds: int, threads: int, exporter: str) -> str:
    warnings.filterwarnings("ignore")
    rows = []
    for label, net, size in networks():
        models = forms(net, exporter)
        t = image_latencies({k: models[k] for k in ("etc", "deployed")}, size, rounds, threads)
        mid, low, high = paired_ratio(t["etc"], t["deployed"])
        rows.append(
            [
                label,
                f"{conv_count(models['training'])} / {conv_count(models['etc'])} / {conv_count(models['deployed'])}",
                f"{macs(models['etc'], size) / macs(models['deployed'], size):.3f}",
                *(f"{np.median(t[k]) * 1000:.2f}" for k in t),
                f"{mid:.3f} [{low:.3f}, {high:.3f}]",
            ]
        )
        print(rows[-1], flush=True)
    header = ["network", "convs training / etc / deployed", "MACs etc / deployed", "etc ms"]
    header += ["deployed ms", "etc / deployed"]
    return (
        f"Command: `python -m bench.bench_published_reparam --rounds {rounds} --threads {threads} --exporter "
        f"{exporter}` ({machine()}). onnxruntime CPU FP32, graph optimizations on, {threads} intra-op threads; "
        "random weights and BN statistics; etc = `fold,rep,et` of the training-form export; deployed = export of "
        "the library's own fusion. ms = median of the rounds; ratio = median of per-round ratios [95% bootstrap "
        f"interval]; load average {os.getloadavg()[0]:.1f} after the runs (shared machine).\n\n"
        + markdown_table(header, rows)
        + "\n\nThe first two rows have the deployed form's conv shapes exactly (tests/test_published_reparam.py); "
        "the published SPAN has one conv fewer but more MACs: et/carry_skip carries the concat's other three "
        "inputs through the last Conv3XC and rep composes the 1x1 conv_cat into it, one 3x3 (C, 4C) conv in place "
        "of the deployed 3x3 (C, C) + 1x1 (C, 4C). A MAC budget on widening rewrites (issue 12) declines it."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exporter", default="legacy", choices=["legacy", "dynamo"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    body = run(args.rounds, args.threads, args.exporter)
    print(body)
    if not args.no_write:
        write_section("published reparam: latency", body)


if __name__ == "__main__":
    main()
