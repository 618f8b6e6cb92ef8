"""``--target cpu`` against the input: the form ETC returns for a CPU is never slower than what it was given.

python -m bench.bench_target                 # writes the "target cpu: latency vs input" section of RESULTS.md
python -m bench.bench_target --no-write --only compact,abpn

For every zoo model (random weights, default sizes, x2, legacy export) and the cost test models
(etc/zoo/published/cost.py), ``etc.optimize(..., target="cpu")`` picks a form; then, independently of that choice's own
measurement, the chosen model and the input are timed again: onnxruntime CPU, default graph optimizations, one
thread, fresh sessions every round, interleaved in a seeded random order (etc.timing), and compared by the median
per-round ratio with a 95% bootstrap interval; a second session of the input is timed alongside, so its ratio to
the input shows the noise floor. The goal is a ratio <= 1.02 on every row ("noise": the median is above, the
interval is not). The last column is the plain (``npu``) form's MACs relative to the best merged (fold/rep) form.
"""

from __future__ import annotations

import argparse
import os
import warnings

from bench.common import interleaved_times, machine, markdown_table, paired_ratio, write_section
from etc.target import latency_runner

SIZE = (128, 128)


def models() -> dict[str, object]:
    """name -> a zero-argument builder of the torch module."""
    from etc import zoo
    from etc.zoo.published.cost import MODELS

    out = {name: (lambda n=name: zoo.build(n, scale=2)) for name in zoo.available()}
    out.update({f"{name} (test)": cls for name, cls in MODELS.items()})
    return out


def row(name: str, build, rounds: int) -> list[object]:
    from etc import api
    from etc.frontends.torch import export
    from etc.info import count_macs
    from etc.pipeline import run_pipeline

    source = export(build(), exporter="legacy", dynamic_hw=True)
    chosen, report = api.optimize(source, target="cpu", verify=False, check_each_pass=False)
    merged = run_pipeline(source, "fold,rep").model
    npu = run_pipeline(source, "fold,rep,et").model
    growth = count_macs(npu, SIZE) / count_macs(merged, SIZE)
    runners = {
        "chosen": latency_runner(chosen, SIZE),
        "input": latency_runner(source, SIZE),
        "input again": latency_runner(source, SIZE),
    }
    times = interleaved_times(runners, rounds, seed=1)
    mid, low, high = paired_ratio(times["chosen"], times["input"])
    noise, nlow, nhigh = paired_ratio(times["input again"], times["input"])
    return [
        name,
        report.cpu.chosen,
        f"{mid:.3f} [{low:.3f}, {high:.3f}]",
        f"{noise:.3f} [{nlow:.3f}, {nhigh:.3f}]",
        "yes" if mid <= 1.02 else ("noise" if low <= 1.02 else "NO"),
        f"{growth:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--only", default="", help="comma-separated names (substring match)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    wanted = [w for w in args.only.split(",") if w]
    rows = []
    for name, build in models().items():
        if wanted and not any(w in name for w in wanted):
            continue
        rows.append(row(name, build, args.rounds))
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    header = [
        "model",
        "chosen form",
        "chosen / input (95% CI)",
        "input / input (noise)",
        "<= 1.02",
        "npu form MACs / merged",
    ]
    table = markdown_table(header, rows)
    load = os.getloadavg()
    body = (
        f"`python -m bench.bench_target --rounds {args.rounds}`; {machine()}; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; input 1x3x{SIZE[0]}x{SIZE[1]}, onnxruntime CPU, 1 thread.\n\n"
        + table
    )
    print(body)
    if not args.no_write:
        write_section("target cpu: latency vs input", body)


if __name__ == "__main__":
    main()
