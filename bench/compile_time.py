"""Compile time of whole CLI processes: ``etc optimize`` (fold,rep,et, checks included) against onnxsim and
onnxslim on the same file, for every zoo model and every published-pattern model.

python -m bench.compile_time                         # writes the "compile time vs onnxsim" section
python -m bench.compile_time --rounds 1 --only fastvit --no-write

Models: the zoo at its default size (x2, legacy export, 1x3x128x128) and the published-pattern nets of
etc/zoo/published (MobileOne, SPAN, published ECBSR, PLKSR, RepGhost, EDSR-style, Real-ESRGAN compact,
FastViT-t8) at deployment widths, each exported by both exporters with static shapes. Each round runs the three
tools once per model in a fresh seeded random order (interleaved: load drift hits all alike); the table gives
medians of the rounds, the median of the per-round ratios etc/onnxsim, and the share of ETC's own
``optimize`` time spent in numeric checking (its ``--json`` ``timing``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, markdown_table, write_section

SR_SIZE = (128, 128)


def published() -> list[tuple[str, object, tuple[int, int]]]:
    from etc.zoo.published.cost import CompactSR, GhostBottleneckSR, PartialLargeKernelSR, ResBlockSR
    from etc.zoo.published.ecbsr import PublishedECBSR
    from etc.zoo.published.fastvit import FastViT
    from etc.zoo.published.reparam import SPAN, MobileOneStack
    from etc.zoo.published.repvit import RepViT

    return [
        ("mobileone stack 48/96", MobileOneStack(channels=48, kernel=3, branches=4), (224, 224)),
        ("span C48 x4", SPAN(48, 6, 4), SR_SIZE),
        ("published ecbsr M4C16 x4", PublishedECBSR(4, 16, 4), SR_SIZE),
        ("plksr C64 12 blocks k17", PartialLargeKernelSR(64, 12, 17), SR_SIZE),
        ("repghost sr", GhostBottleneckSR(), SR_SIZE),
        ("edsr-style resblocks", ResBlockSR(), SR_SIZE),
        ("compact sr C64x16", CompactSR(64, 16), SR_SIZE),
        ("fastvit-t8", FastViT(), (256, 256)),
        ("repvit-m0.9", RepViT(), (224, 224)),
    ]


def zoo_models() -> list[tuple[str, object, tuple[int, int]]]:
    from etc import zoo

    return [(f"zoo {name}", zoo.build(name, scale=2, seed=1), SR_SIZE) for name in zoo.available()]


def export_all(folder: Path, only: str | None) -> list[tuple[str, str, Path]]:
    import torch

    from etc.frontends.onnx_io import save
    from etc.frontends.torch import export

    files = []
    jobs = [(n, net, s, e) for n, net, s in published() for e in ("legacy", "dynamo")]
    jobs += [(n, net, s, "legacy") for n, net, s in zoo_models()]
    for name, net, (h, w), exporter in jobs:
        if only and not any(part in name for part in only.split(",")):
            continue
        example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        try:
            model = export(net, example, exporter=exporter, dynamic_hw=False)
        except Exception as exc:  # an exporter that cannot take a net is a row, not a crash
            print(f"{name} {exporter}: export failed: {str(exc).splitlines()[0][:120]}", flush=True)
            continue
        path = folder / f"{len(files):02d}.onnx"
        save(model, path)
        files.append((name, exporter, path))
    return files


def commands(src: Path, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "etc": [
            py,
            "-m",
            "etc.cli",
            "optimize",
            str(src),
            "-o",
            str(out / "etc.onnx"),
            "--json",
            "--in-place",
        ],
        "onnxsim": [py, "-m", "onnxsim", str(src), str(out / "sim.onnx")],
        "onnxslim": [py, "-m", "onnxslim", str(src), str(out / "slim.onnx")],
    }


def run_once(command: list[str]) -> tuple[float, float, str | None]:
    """Wall seconds and CPU seconds (user + system, all threads) of a whole process, and its stdout (None when it
    failed). On a shared machine the CPU figure is the steadier one."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, done.stdout if done.returncode == 0 else None


def measure(files, rounds: int, folder: Path, on_row=None) -> list[list[object]]:
    import numpy as np

    order = np.random.default_rng(0)
    rows = []
    for name, exporter, path in files:
        times: dict[str, list[float]] = {"etc": [], "onnxsim": [], "onnxslim": []}
        cpus: dict[str, list[float]] = {"etc": [], "onnxsim": [], "onnxslim": []}
        failed: set[str] = set()
        shares: list[float] = []
        cmds = commands(path, folder)
        for _ in range(rounds):
            for index in order.permutation(len(cmds)):
                tool = list(cmds)[int(index)]
                seconds, cpu, stdout = run_once(cmds[tool])
                if stdout is None:
                    failed.add(tool)
                    continue
                times[tool].append(seconds)
                cpus[tool].append(cpu)
                if tool == "etc":
                    shares.append(json.loads(stdout)["timing"]["checking_share"])
        med = {t: statistics.median(v) if v and t not in failed else None for t, v in times.items()}
        both = not failed & {"etc", "onnxsim"}
        paired = [a / b for a, b in zip(times["etc"], times["onnxsim"])]
        ratio = statistics.median(paired) if paired and both else None
        paired_cpu = [a / b for a, b in zip(cpus["etc"], cpus["onnxsim"])]
        cpu_ratio = statistics.median(paired_cpu) if paired_cpu and both else None
        nodes = _node_count(path)
        rows.append(
            [
                name,
                exporter,
                nodes,
                _fmt(med["etc"]),
                _fmt(med["onnxsim"]),
                _fmt(med["onnxslim"]),
                f"{ratio:.2f}" if ratio is not None else "-",
                _fmt(statistics.median(cpus["etc"]) if cpus["etc"] else None),
                _fmt(
                    statistics.median(cpus["onnxsim"])
                    if cpus["onnxsim"] and "onnxsim" not in failed
                    else None
                ),
                f"{cpu_ratio:.2f}" if cpu_ratio is not None else "-",
                f"{statistics.median(shares):.0%}" if shares else "-",
            ]
        )
        print(rows[-1], flush=True)
        if on_row is not None:
            on_row(rows, len(files))
    return rows


def _summary(rows: list[list[object]], column: int, what: str) -> str:
    ratios = [float(r[column]) for r in rows if r[column] != "-"]  # type: ignore[arg-type]
    if not ratios:
        return f"no {what} ratio"
    return (
        f"etc/onnxsim {what} time: worst {max(ratios):.2f}, median {statistics.median(ratios):.2f} over "
        f"{len(ratios)} files"
    )


def _fmt(seconds: float | None) -> str:
    return f"{seconds:.2f}" if seconds is not None else "fail"


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", default=None, help="only models whose name contains one of these (comma-separated)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()

    def write(rows: list[list[object]], total: int) -> None:
        table, summary = _table(rows)
        partial = "" if len(rows) == total else f" (partial: {len(rows)} of {total} files measured so far)"
        if not args.no_write:
            write_section(
                "compile time vs onnxsim and onnxslim",
                f"Command: `python -m bench.compile_time --rounds {args.rounds}` ({machine()}){partial}. Whole CLI "
                "processes (imports, loading, checks and writing included): `etc optimize` with the default passes "
                "fold,rep,et and its numeric checks, `python -m onnxsim in out`, `python -m onnxslim in out`, on "
                "the same static-shape file; medians of the rounds, tools interleaved in a random order per round; "
                "etc/onnxsim is the median of per-round ratios, of wall time and of CPU time (user + system of the "
                "process and its threads, the steadier figure on a shared machine); checking share is the part of "
                "ETC's optimize time spent running onnxruntime to check equivalence (per pass and final). The "
                f"machine was shared (load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at "
                f"the last row, 2 cores).\n\n{table}\n\n{summary}.",
            )

    with tempfile.TemporaryDirectory(prefix="etc-compile-time-") as tmp:
        folder = Path(tmp)
        files = export_all(folder, args.only)
        rows = measure(files, args.rounds, folder, write)
    table, summary = _table(rows)
    print(table)
    print(summary)


def _table(rows: list[list[object]]) -> tuple[str, str]:
    header = [
        "model",
        "exporter",
        "nodes",
        "etc s",
        "onnxsim s",
        "onnxslim s",
        "etc/onnxsim",
        "etc CPU s",
        "onnxsim CPU s",
        "etc/onnxsim CPU",
        "checking share",
    ]
    summary = "; ".join(_summary(rows, column, what) for column, what in ((6, "wall"), (9, "CPU")))
    return markdown_table(header, rows), summary


if __name__ == "__main__":
    main()
