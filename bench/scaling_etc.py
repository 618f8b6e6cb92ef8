"""ETC compile time (`fold,rep,et`, no numeric instrument) on bench/synthetic.py graphs of growing size.

python -m bench.scaling_etc --sizes 1000,4000,10000      # writes "etc: compile time vs graph size"

The carried family runs with --max-growth 4 (the default budget declines carrying the image through hundreds of
layers; the carry is what it measures). Besides the total, the first pipeline round (where the rewrites happen) and the last one (which finds nothing and
confirms the fixed point) are timed separately: a round that finds nothing should cost a small fraction.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.common import machine, markdown_table, write_section
from bench.synthetic import synthetic


def round_seconds(records) -> list[float]:
    """Seconds per pipeline round from the per-pass records (a round starts again at the first pass's name)."""
    rounds: list[float] = []
    first = records[0].name if records else None
    previous = None
    for record in records:
        if record.name == first and previous != first:
            rounds.append(0.0)
        rounds[-1] += record.seconds
        previous = record.name
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,4000,10000")
    args = parser.parse_args()
    from etc.pipeline import Options, run_pipeline

    rows = []
    growth = []
    load = os.getloadavg()[0]
    for anchor in (True, False):
        family = []
        for size in (int(s) for s in args.sizes.split(",")):
            model = synthetic(size, anchor=anchor)
            start, cpu_start = time.perf_counter(), time.process_time()
            # the carried family carries past the default 1.25x budget (its chain is the cost being measured)
            options = Options(max_growth=4.0) if anchor else Options()
            result = run_pipeline(model, "fold,rep,et", options=options)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            per_round = round_seconds(result.records)
            family.append((len(model.graph.node), seconds, cpu))
            rows.append(
                [
                    "image carried to the end" if anchor else "local rewrites only",
                    len(model.graph.node),
                    len(result.model.graph.node),
                    result.rounds,
                    f"{seconds:.1f}",
                    f"{cpu:.1f}",
                    f"{per_round[0]:.2f}",
                    f"{per_round[-1]:.2f} ({per_round[-1] / per_round[0]:.0%})",
                ]
            )
            print(rows[-1], flush=True)
        (n0, t0, c0), (n1, t1, c1) = family[0], family[-1]
        growth.append(
            f"{rows[-1][0]}: nodes x{n1 / n0:.1f} -> wall time x{t1 / t0:.1f}, CPU time x{c1 / c0:.1f}"
        )
    table = markdown_table(
        [
            "graph family",
            "nodes in",
            "nodes out",
            "pipeline rounds",
            "seconds",
            "CPU seconds",
            "first round s",
            "last round s",
        ],
        rows,
    )
    write_section(
        "etc: compile time vs graph size",
        f"Command: `python -m bench.scaling_etc --sizes {args.sizes}` ({machine()}; load average "
        f"{load:.1f} on 2 cores at the start). The carried family runs with --max-growth 4 "
        f"(the default budget declines the carry). The last round finds nothing and only "
        f"confirms the fixed point. CPU seconds (this process, all threads) are the steadier figure on a shared "
        f"machine.\n\n{table}\n\n" + "; ".join(growth) + ".",
    )
    print(table)
    print("; ".join(growth))


if __name__ == "__main__":
    main()
