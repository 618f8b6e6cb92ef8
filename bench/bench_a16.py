"""Mixed 8/16-bit activations on the real weights: the uint8 floor, pure A8, --a16 auto and --a16 all.

    python -m bench.bench_a16 [--only etds_M4C32_x2,...] [--patch 32] [--num 16] [--max-drop 0.05] [--no-write]

Per pretrained model (exported as bench.bench_quant does; anchored ABPN/ECBSR made plain with ``fold,rep,et``
first), ``etc.quantize`` with its defaults (PReLU kept) under ``a16="auto"`` (which also measures the floor and
the pure 8-bit model) and ``a16="all"``. Drops are PSNR-Y on the held-out crops of the bundled calibration photos
that ``etc quantize`` reports (8 patches of ``--patch`` LR pixels), against the FP32 model on onnxruntime CPU:
"CPU" runs the QDQ model on onnxruntime CPU with optimizations off (exact int32 arithmetic; a conv between
16-bit tensors runs in float there), "HTP" on onnxruntime-qnn's HTP simulator. Cycles: HTP execute cycles at
32x32, medians of 3 runs, one session each (the simulator's spread on a loaded machine is in the htp sections).
``16-bit`` is the share of quantized activation tensors stored in 16 bits (a region stores its tensor and the
outputs of its readers).
"""

from __future__ import annotations

import argparse
import time
import warnings

from bench.bench_quant import MODELS, export, key, maybe_plain
from bench.common import machine, markdown_table, write_section

SIZE = (32, 32)


def bench_one(name, m, c, s, *, patch: int, num: int, max_drop: float) -> list[object]:
    from etc import htp
    from etc.cost import conv_macs_per_pixel
    from etc.quant import a16
    from etc.quant.quantizer import quantize
    from etc.quant.summary import heldout_pairs

    model = export(name, m, c, s)
    if name in ("abpn", "ecbsr"):
        model, _ = maybe_plain(model)
    started = time.perf_counter()
    common = dict(num=num, patch=patch, max_drop=max_drop)
    mixed, auto = quantize(model, "samples", a16="auto", **common)
    everything, whole = quantize(model, "samples", a16="all", floor=False, **common)
    a8, _ = quantize(model, "samples", floor=False, **common)
    pairs = heldout_pairs("samples", auto.scale, num=8, patch=patch, seed=1000)
    htp_drops = {k: a16.htp_drop(model, q, pairs, auto.scale) for k, q in (("a8", a8), ("auto", mixed))}
    htp_drops["all"] = a16.htp_drop(model, everything, pairs, auto.scale)
    cycles = {k: htp.median_cycles(q, size=SIZE, runs=3) for k, q in (("a8", a8), ("auto", mixed))}
    cycles["all"] = htp.median_cycles(everything, size=SIZE, runs=3)
    choice = auto.a16
    macs = conv_macs_per_pixel(mixed) / max(conv_macs_per_pixel(model), 1)
    return [
        key(name, m, c, s),
        auto.floor_drop,
        auto.a8_drop,
        htp_drops["a8"],
        auto.heldout_drop,
        htp_drops["auto"],
        "yes" if choice.reached else "no",
        f"{len(choice.wide)}/{choice.candidates}",
        whole.heldout_drop,
        htp_drops["all"],
        f"{cycles['auto'] / cycles['a8']:.2f}",
        f"{cycles['all'] / cycles['a8']:.2f}",
        f"{macs:.2f}",
        f"{time.perf_counter() - started:.0f}",
    ]


HEADER = [
    "model",
    "floor CPU",
    "A8 CPU",
    "A8 HTP",
    "auto CPU",
    "auto HTP",
    "reached",
    "16-bit",
    "all CPU",
    "all HTP",
    "cycles auto/A8",
    "cycles all/A8",
    "MACs auto/FP32",
    "s",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated keys, e.g. etds_M4C32_x2")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--max-drop", type=float, default=0.05)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for spec in MODELS:
        if wanted is not None and key(*spec) not in wanted:
            continue
        row = bench_one(*spec, patch=args.patch, num=args.num, max_drop=args.max_drop)
        print(markdown_table(HEADER, [row]).splitlines()[-1], flush=True)
        rows.append(row)
    command = "python -m bench.bench_a16 " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)
    )
    body = (
        f"`{command}` ({machine()}). Held-out PSNR-Y drop in dB against FP32 (8 crops of the calibration photos, "
        f"{args.patch}x{args.patch} LR); calibration {args.num} patches; `--max-drop {args.max_drop}`.\n\n"
        + markdown_table(HEADER, rows)
    )
    print(body)
    if not args.no_write:
        write_section("a16: mixed 8/16-bit activations (issue 20)", body)


if __name__ == "__main__":
    main()
