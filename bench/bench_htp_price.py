"""What the budget's price of a removed byte decides, judged by HTP cycles on a quiet machine.

python -m bench.bench_htp_price [--only ECBSR,ABPN] [--sessions 2] [--runs 3] [--no-write]

For each pretrained model (training-time form, static 1x3x64x64 legacy export): the merged form (``fold,rep``),
ETC's default output with the budget's current price of an Add/Concat byte (etc.cost.MACS_PER_SLOW_BYTE, fitted
to the ETDS paper), the output with HTP's measured price (``HTP_PRICE`` conv MACs per byte), and the official
plain form; each in FP32 and in INT8 (etc.quant.quantize's QDQ graph). Cycles: HTP's per-node floor (each QNN
node's fewest cycles over a session's runs, summed; it repeats within 0.1% INT8 / 3% FP32 on a quiet machine),
median over sessions. Writes "htp: the byte price, judged on HTP" in RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import warnings
from contextlib import contextmanager

import numpy as np

from bench.bench_htp_cost import SIZE, int8, pretrained_models
from bench.common import machine, markdown_table, write_section

HTP_PRICE = 0.7  # conv MACs per Add/Concat byte on HTP ("htp: what an Add or Concat byte is worth")
MODELS = (
    "ECBSR M4C16 x4",
    "published ECBSR M4C16 x4 (ReLU)",
    "ABPN M4C28 x3",
    "ETDS M4C32 x2",
    "ETDS M4C32 x4",
    "ETDS M5C16 x4",
)


@contextmanager
def byte_price(price: float):
    """The budget's price of a removed byte set to ``price`` for the duration."""
    from etc import cost

    saved = cost.MACS_PER_SLOW_BYTE
    cost.MACS_PER_SLOW_BYTE = price
    try:
        yield
    finally:
        cost.MACS_PER_SLOW_BYTE = saved


def forms(name: str) -> dict[str, object]:
    from etc.frontends.torch import example_input, export
    from etc.pipeline import run_pipeline

    train_builder, official_builder = pretrained_models()[name]
    example = example_input(*SIZE)
    train = export(train_builder(), example, exporter="legacy", dynamic_hw=False)
    out = {
        "merged": run_pipeline(train, "fold,rep").model,
        "paper price": run_pipeline(train, "fold,rep,et").model,
    }
    with byte_price(HTP_PRICE):
        out["HTP price"] = run_pipeline(train, "fold,rep,et").model
    out["official"] = export(official_builder(), example, exporter="legacy", dynamic_hw=False)
    return out


def floors(model, sessions: int, runs: int) -> float:
    from etc import htp

    return float(np.median([htp.cycles(model, size=SIZE, runs=runs).floor for _ in range(sessions)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from etc.cost import conv_macs

    load = os.getloadavg()[0]
    wanted = [w for w in args.only.split(",") if w]
    rows = []
    for name in MODELS:
        if wanted and not any(w.lower() in name.lower() for w in wanted):
            continue
        fp32 = forms(name)
        same = fp32["HTP price"].SerializeToString() == fp32["paper price"].SerializeToString()
        macs = {k: conv_macs(m, SIZE)[0] for k, m in fp32.items()}
        for precision in ("int8", "fp32"):
            graphs = {k: (int8(m) if precision == "int8" else m) for k, m in fp32.items()}
            cyc = {k: floors(g, args.sessions, args.runs) for k, g in graphs.items()}
            row = [name, precision.upper()]
            row += [f"{cyc[k]:.3g}" for k in ("merged", "paper price", "HTP price", "official")]
            row += [
                f"{cyc['paper price'] / cyc['official']:.2f}",
                f"{cyc['HTP price'] / cyc['official']:.2f}",
            ]
            row += [
                f"{macs['paper price'] / macs['merged']:.2f}",
                f"{macs['HTP price'] / macs['merged']:.2f}",
            ]
            row += ["same" if same else "differs"]
            rows.append(row)
            print(row, flush=True)
    header = [
        "model",
        "precision",
        "merged",
        "default (paper price)",
        "HTP price",
        "official",
        "paper / official",
        "HTP price / official",
        "MACs paper / merged",
        "MACs HTP / merged",
        "outputs",
    ]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_write:
        write_section(
            "htp: the byte price, judged on HTP",
            f"Command: `python -m bench.bench_htp_price --sessions {args.sessions} --runs {args.runs}` ({machine()}; "
            f"HTP simulator of onnxruntime-qnn at 1x3x{SIZE[0]}x{SIZE[1]}, load average {load:.1f} at the start). "
            "Cycles are HTP's per-node floor, median over sessions; INT8 is etc.quant.quantize's QDQ graph. "
            f"'HTP price' is ETC's output with a removed Add/Concat byte priced at {HTP_PRICE} conv MACs (HTP's "
            "measured figure) instead of the paper-fitted ~178.\n\n" + table,
        )


if __name__ == "__main__":
    main()
