"""Compile time of ETC's ``fold`` vs onnxsim on the same exported zoo models, side by side in one run.

python -m bench.bench_fold            # writes the "fold: compile time" section of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import warnings

from bench.common import machine, markdown_table, median_seconds, write_section

MODELS = {
    "plain": {},
    "espcn": {},
    "fsrcnn": {},
    "abpn": {"clamp": True},
    "ecbsr": {"clamp": True},
    "ecbsr_train": {},
    "etds": {},
    "etds_dual": {},
}


def run(repeat: int = 3) -> str:
    import onnxsim

    from etc import zoo
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline

    warnings.filterwarnings("ignore")
    rows = []
    for name, kw in MODELS.items():
        net = zoo.build(name, scale=2, seed=0, **kw)
        for exporter in ("legacy", "dynamo"):
            model = export(net, dynamic_hw=True, exporter=exporter)
            nodes = len(model.graph.node)
            ours = run_pipeline(model, "fold").model
            theirs, _ = onnxsim.simplify(model, check_n=0)
            t_ours = median_seconds(lambda m=model: run_pipeline(m, "fold"), repeat)
            t_sim = median_seconds(lambda m=model: onnxsim.simplify(m, check_n=0), repeat)
            rows.append(
                [
                    f"{name} ({exporter})",
                    nodes,
                    len(ours.graph.node),
                    len(theirs.graph.node),
                    f"{t_ours * 1000:.1f}",
                    f"{t_sim * 1000:.1f}",
                    f"{t_ours / t_sim:.2f}",
                ]
            )
            print(rows[-1], flush=True)
    table = markdown_table(
        [
            "model (exporter)",
            "nodes in",
            "nodes after fold",
            "nodes after onnxsim",
            "fold ms",
            "onnxsim ms",
            "fold / onnxsim",
        ],
        rows,
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    table = run(args.repeat)
    body = (
        f"Command: `python -m bench.bench_fold` ({machine()}). Dynamic H/W exports of the zoo models at default "
        f"sizes, scale 2; median of {args.repeat} runs; onnxsim with check_n=0 (no random checks), ETC fold without "
        f"its numeric instrument.\n\n{table}"
    )
    print(table)
    write_section("fold: compile time vs onnxsim", body)


if __name__ == "__main__":
    main()
