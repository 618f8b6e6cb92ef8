"""How repeatable are HTP's simulated cycles? Spread over runs and over sessions, FP32 and INT8 QDQ.

python -m bench.bench_htp                    # writes the "htp: cycle determinism" section of RESULTS.md
python -m bench.bench_htp --no-write --sessions 2 --runs 5

Models: ``etc demo``'s training-time export, its plain form (fold,rep,et) and that form quantized by
``etc quantize`` (INT8 QDQ, default settings), plus the official ETDS M4C32 x2 weights in their plain form and
INT8 when /work/shared/pretrained (or $ETC_PRETRAINED) has them. Each model gets ``--sessions`` fresh QNN
sessions at 1x3xHxW; each session does one warm-up run and ``--runs`` measured ones (etc.htp.cycles). Reported:
the median over all runs, the run-to-run spread inside a session ((max - min) / median, the worst session),
the spread of the per-session medians, and the same for the per-node floor (each QNN node's fewest cycles over a
session's runs, summed), which drops the waits the other processes' load adds.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np

from bench.common import machine, markdown_table, write_section

SIZE = (64, 64)


def demo_models() -> dict[str, object]:
    """training-time / plain / INT8 forms of the demo model (as ``etc demo`` builds them)."""
    import onnx

    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline
    from etc.quant import quantize
    from etc.tools import demo

    train = export(demo.build_model(), dynamic_hw=True)
    plain = run_pipeline(train, "fold,rep,et").model
    int8, _ = quantize(plain, calib="samples", scale=2, num=16)
    assert isinstance(train, onnx.ModelProto)
    return {"demo training-time FP32": train, "demo plain FP32": plain, "demo plain INT8": int8}


def etds_models() -> dict[str, object]:
    from etc import zoo
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline
    from etc.quant import quantize
    from etc.zoo.weights import pretrained_dir

    if pretrained_dir() is None:
        return {}
    net = zoo.build("etds_dual", scale=2, pretrained=True, M=4, C=32)
    plain = run_pipeline(export(net, dynamic_hw=True), "fold,rep,et").model
    return {
        "ETDS M4C32 x2 plain FP32": plain,
        "ETDS M4C32 x2 INT8": quantize(plain, calib="samples", scale=2)[0],
    }


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / max(float(np.median(values)), 1.0)


def row(name: str, model, size: tuple[int, int], sessions: int, runs: int) -> list[object]:
    from etc import htp

    measured = [htp.cycles(model, size=size, runs=runs, seed=0) for _ in range(sessions)]
    every_run = [r for m in measured for r in m.runs]
    medians = [m.total for m in measured]
    floors = [m.floor for m in measured]
    return [
        name,
        f"{np.median(every_run):.4g}",
        f"{max(m.spread for m in measured):.1%}",
        f"{spread(medians):.1%}",
        f"{np.median(floors):.4g}",
        f"{spread(floors):.1%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    size = tuple(int(v) for v in args.size.split("x"))
    models = {**demo_models(), **etds_models()}
    load_before = os.getloadavg()[0]
    rows = []
    for name, model in models.items():
        rows.append(row(name, model, size, args.sessions, args.runs))
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    load_after = os.getloadavg()[0]
    header = [
        "model",
        "median cycles",
        "run spread (worst session)",
        "session-median spread",
        "node floor",
        "floor spread",
    ]
    body = (
        f"`python -m bench.bench_htp --sessions {args.sessions} --runs {args.runs} --size {args.size}`; "
        f"{machine()}; onnxruntime-qnn HTP simulator, 1x3x{size[0]}x{size[1]}; load average "
        f"{load_before:.1f} before, {load_after:.1f} after (2 cores shared with other jobs).\n\n"
        + markdown_table(header, rows)
    )
    print(body)
    if not args.no_write:
        write_section("htp: cycle determinism", body)


if __name__ == "__main__":
    main()
