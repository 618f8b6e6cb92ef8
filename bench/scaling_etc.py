"""ETC compile time (`fold,rep,et`, no numeric instrument) on bench/synthetic.py graphs of growing size.

python -m bench.scaling_etc --sizes 1000,4000,10000      # writes "etc: compile time vs graph size"
"""

from __future__ import annotations

import argparse
import time

from bench.common import machine, markdown_table, write_section
from bench.synthetic import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,4000,10000")
    args = parser.parse_args()
    from etc.pipeline import run_pipeline

    rows = []
    for anchor in (True, False):
        for size in (int(s) for s in args.sizes.split(",")):
            model = synthetic(size, anchor=anchor)
            start = time.perf_counter()
            result = run_pipeline(model, "fold,rep,et")
            seconds = time.perf_counter() - start
            rows.append(
                [
                    "image carried to the end" if anchor else "local rewrites only",
                    len(model.graph.node),
                    len(result.model.graph.node),
                    result.rounds,
                    f"{seconds:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    table = markdown_table(["graph family", "nodes in", "nodes out", "pipeline rounds", "seconds"], rows)
    write_section(
        "etc: compile time vs graph size",
        f"Command: `python -m bench.scaling_etc --sizes {args.sizes}` ({machine()}; the machine was shared while "
        "this ran). Measured after rewrites began offering new nodes to the rules within the same sweep (a "
        f"worklist) and cleanup stopped using a recursive sort.\n\n{table}",
    )
    print(table)


if __name__ == "__main__":
    main()
