"""What onnxruntime runs of ETC's output vs the library's deployed form, for RepViT- and FastViT-style nets.

python -m bench.bench_fusion                      # both exporters, writes the "fusion: ..." section
python -m bench.bench_fusion --rounds 5 --exporters legacy --no-write

The test nets of etc/zoo/published/vit.py at a deployment-like width (48 channels, 4 blocks, 10 classes) on
1x3x224x224. Each is exported in its training form (``input``) and in its deployed form (the library's own
re-parameterization, computed in torch: ``deployed``); etc = ``fold,rep,et`` of the training export with
``--target npu`` (the default, deterministic) and with ``--target cpu`` (measured choice among ETC's forms and the
input). Counted in onnxruntime's optimized graph (etc.fusion, ORT_ENABLE_ALL): nodes, fused Gelu, convs carrying a
fused Add/activation, NCHWc reorders. Timed: onnxruntime CPU FP32, optimizations on, rounds interleaved in a fresh
random order with a new session per model and round (etc.timing); ratios are medians of per-round ratios with a
95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np

from bench.common import image_latencies, machine, markdown_table, paired_ratio, write_section

SIZE = (224, 224)


def networks():
    from etc.zoo.published.vit import FastViTNet, RepViTNet

    return [
        ("RepViT-style (48 ch, 4 blocks, distillation head)", RepViTNet(dim=48, depth=4, distillation=True)),
        ("FastViT-style (48 ch, 4 RepMixer blocks, BN1d head)", FastViTNet(dim=48, depth=4)),
    ]


def forms(net, exporter: str) -> dict:
    import etc
    from etc.frontends.torch import export

    train = export(net, exporter=exporter)
    npu, _ = etc.optimize(train, "fold,rep,et", size=SIZE)
    cpu, report = etc.optimize(train, "fold,rep,et", size=SIZE, target="cpu")
    print(f"  --target cpu: {report.cpu.summary()}", flush=True)
    deployed = export(net.deploy(), exporter=exporter)
    return {"input": train, "deployed": deployed, "deployed again": deployed, "etc npu": npu, "etc cpu": cpu}


def runtime_signature(model) -> list[tuple]:
    """onnxruntime's optimized graph without names: per node its op, domain, input weight shapes, attributes."""
    import onnx

    from etc.fusion import optimized_model

    optimized = optimized_model(model)
    shapes = {init.name: tuple(init.dims) for init in optimized.graph.initializer}
    return [
        (
            node.op_type,
            node.domain,
            tuple(shapes.get(name, "tensor") for name in node.input),
            tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute)),
        )
        for node in optimized.graph.node
    ]


def counts(model) -> str:
    from etc.fusion import optimized_graph

    g = optimized_graph(model)
    return f"{g.nodes} / {g.gelu} / {g.fused_conv} / {g.reorders}"


def run(rounds: int, threads: int, exporters: list[str]) -> str:
    warnings.filterwarnings("ignore")
    rows = []
    for exporter in exporters:
        for label, net in networks():
            print(f"{label} ({exporter})", flush=True)
            models = forms(net, exporter)
            t = image_latencies(models, SIZE, rounds, threads)
            deployed_signature = runtime_signature(models["deployed"])
            for name in models:
                same = "yes" if runtime_signature(models[name]) == deployed_signature else "no"
                vs_deployed = paired_ratio(t[name], t["deployed"])
                vs_input = paired_ratio(t[name], t["input"])
                rows.append(
                    [
                        label,
                        exporter,
                        name,
                        counts(models[name]),
                        same,
                        f"{np.median(t[name]) * 1000:.2f}",
                        "{:.3f} [{:.3f}, {:.3f}]".format(*vs_deployed),
                        "{:.3f} [{:.3f}, {:.3f}]".format(*vs_input),
                    ]
                )
                print("  ", rows[-1], flush=True)
    header = ["network", "exporter", "form", "ORT nodes / Gelu / fused convs / NCHWc reorders"]
    header += ["same ORT graph as deployed", "ms"]
    header += ["/ deployed", "/ input"]
    return (
        f"Command: `python -m bench.bench_fusion --rounds {rounds} --threads {threads} --exporters "
        f"{' '.join(exporters)}` ({machine()}). 1x3x{SIZE[0]}x{SIZE[1]}, onnxruntime CPU FP32, graph "
        f"optimizations on, {threads} intra-op threads; random weights and BN statistics. Counts from "
        "onnxruntime's optimized graph (etc.fusion, ORT_ENABLE_ALL). ms = median of the rounds; ratios = median of "
        "per-round ratios [95% bootstrap interval], all forms of one network timed in the same interleaved rounds. "
        "Same ORT graph: onnxruntime runs the same nodes in the same order with the same weight shapes and "
        "attributes as for the deployed form (names and weight values aside), so their latencies differ by noise "
        "only. 'deployed again' is the deployed model timed a second time as if it were another form: its ratio "
        "to 'deployed' is the noise floor of these measurements. "
        f"The machine was shared (other jobs on its 2 cores; load average {os.getloadavg()[0]:.1f} after the "
        "runs): only the paired ratios are meaningful.\n\n" + markdown_table(header, rows) + "\n\n" + BEFORE
    )


BEFORE = (
    "Before issue 21 (commit 4c5d155, same nets and counts), ETC's `fold,rep,et` output ran in onnxruntime as "
    "RepViT-style 84 / 0 / 4 / 25 (legacy) and 89 / 0 / 4 / 25 (dynamo), FastViT-style 68 / 0 / 0 / 11 and "
    "73 / 0 / 0 / 11: fold/affine_before_conv moved every GELU's `* 0.5` into the next conv, so onnxruntime fused "
    "no Gelu, and the heads kept BatchNormalization x2 + Gemm x2 (RepViT) or BatchNormalization + Gemm (FastViT)."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exporters", nargs="+", default=["legacy", "dynamo"], choices=["legacy", "dynamo"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    body = run(args.rounds, args.threads, args.exporters)
    print(body)
    if not args.no_write:
        write_section("fusion: onnxruntime's graph and latency vs the deployed form", body)


if __name__ == "__main__":
    main()
