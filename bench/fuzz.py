"""The long differential fuzzing campaign: random graphs -> fold,rep,et -> onnxruntime against the original.

python -m bench.fuzz --n 10000        # writes the "fuzz campaign" section of bench/RESULTS.md

Counts graphs tried, clean refusals, miscompiles, oscillations, crashes and invalid generated graphs (a generator
bug), and which rules fired. Every distinct failure (same kind, pass and place) is shrunk to a minimal spec and
saved as tests/regressions/<kind>_<pass>_<hash>.onnx, which tests/test_fuzz.py replays.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

from bench.common import machine, markdown_table, write_section

REGRESSIONS = Path(__file__).resolve().parent.parent / "tests" / "regressions"


def campaign(n: int, seed: int, max_layers: int, passes: str, progress_every: int = 500) -> dict:
    """Runs n hypothesis-generated graphs; returns counts, rule hits, first spec per failure signature, time."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from etc.tools import fuzz

    counts: collections.Counter = collections.Counter()
    hits: collections.Counter = collections.Counter()
    failures: dict[tuple, tuple] = {}
    start = time.perf_counter()

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz.graph_specs(max_layers=max_layers))
    def one(spec):
        outcome = fuzz.check_spec(spec, passes)
        counts["tried"] += 1
        counts[outcome.kind] += 1
        hits.update(outcome.hits)
        if outcome.failed:
            failures.setdefault(outcome.signature, (spec, outcome))
            failures[(*outcome.signature, "count")] = failures.get((*outcome.signature, "count"), 0) + 1
        if counts["tried"] % progress_every == 0:
            elapsed = time.perf_counter() - start
            print(f"{counts['tried']} graphs, {dict(counts)} ({elapsed:.0f} s)", flush=True)

    one()
    seconds = time.perf_counter() - start
    distinct = {k: v for k, v in failures.items() if k[-1] != "count"}
    tallies = {k[:-1]: v for k, v in failures.items() if k[-1] == "count"}
    return {"counts": counts, "hits": hits, "failures": distinct, "tallies": tallies, "seconds": seconds}


def shrink_and_save(result: dict, passes: str, budget: int, folder: Path) -> list[dict]:
    from etc.tools import fuzz

    saved = []
    for signature, (spec, outcome) in result["failures"].items():
        t0 = time.perf_counter()
        small = fuzz.shrink_failure(spec, outcome, passes, budget)
        final = fuzz.check_spec(small, passes)
        path = fuzz.save_regression(small, final, folder)
        saved.append(
            {
                "signature": signature,
                "count": result["tallies"].get(signature, 1),
                "path": path,
                "nodes": len(fuzz.build(small).graph.node),
                "message": final.message,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"shrunk {signature} -> {path} ({saved[-1]['nodes']} nodes): {final.message[:160]}", flush=True)
    return saved


def _shown(path: Path) -> Path:
    root = REGRESSIONS.parent.parent
    return path.resolve().relative_to(root) if root in path.resolve().parents else path


def report(result: dict, saved: list[dict], args) -> str:
    c = result["counts"]
    rows = [
        ["graphs tried", c["tried"]],
        ["ok (equivalent)", c["ok"]],
        ["clean refusals (EtcError)", c["refused"]],
        ["miscompiles", c["miscompile"]],
        ["oscillations", c["oscillation"]],
        ["crashes", c["crash"]],
        ["invalid generated graphs", c["invalid"]],
        ["time", f"{result['seconds']:.0f} s ({1000 * result['seconds'] / max(c['tried'], 1):.0f} ms/graph)"],
    ]
    parts = [
        f"Command: `python -m bench.fuzz --n {args.n} --seed {args.seed}` ({machine()}). Passes `{args.passes}`; "
        f"random graphs of up to {args.max_layers} layers/motifs (Conv with varied kernels, pads, strides, groups, "
        "dilations, auto_pad, bias on/off; Add/Sum trees, Concat, Tile/Concat/repeat_interleave anchors, Relu, "
        "PRelu, LeakyRelu, Clip in every input form, Max/Min, DepthToSpace CRD/DCR/default, ConvTranspose, "
        "BatchNormalization, per-channel Mul/Add/Sub/Div, Slice, Split, Pad, Resize), channels <= 8, spatial "
        "sizes 1..12 (static, or dynamic H/W checked at two sizes), opsets 11/13/17/18, input ranges [0,1], "
        "[-1,1], [-0.5,2], --prelu and --align-channels drawn at random. Signed sums: Sub and Neg of tensors, "
        "residuals x - f(x), f(x) - x and x + (-f(x)), RepMixer's x + s·(dw_k(x) - dw_1(x)), Conv+LeakyRelu "
        "layers joined with their input by Add, Sub or Concat. Border writes: a 1x1 conv's output padded and "
        "per-channel values written into its border strips (ScatterND or Concat, including missing strips, "
        "interior rows and values other than the bias). In-place channel writes (ScatterND of a channel range, "
        "plain or between Transposes). Miscompile = max abs > 1e-5 x max(1, "
        "output range) after any pass, in onnxruntime with graph optimizations off.",
        markdown_table(["measure", "value"], rows),
    ]
    if saved:
        frows = [
            [
                " / ".join(str(s) for s in item["signature"] if s),
                item["count"],
                f"`{_shown(item['path'])}`",
                item["nodes"],
                item["message"][:140].replace("|", "/"),
            ]
            for item in saved
        ]
        parts.append("Failures, shrunk to minimal models (replayed by tests/test_fuzz.py):")
        parts.append(markdown_table(["failure", "graphs", "minimal model", "nodes", "message"], frows))
    else:
        parts.append("No failure: zero miscompiles, zero crashes.")
    hit_rows = [[rule, n] for rule, n in sorted(result["hits"].items(), key=lambda kv: (-kv[1], kv[0]))]
    parts.append("Rule hits over the campaign (how much of the pipeline the graphs exercised):")
    parts.append(markdown_table(["rule", "hits"], hit_rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="graphs to try")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (campaigns are reproducible)")
    parser.add_argument("--max-layers", type=int, default=8)
    parser.add_argument("--passes", default="fold,rep,et")
    parser.add_argument("--shrink-budget", type=int, default=1000, help="checks spent shrinking each failure")
    parser.add_argument("--out", type=Path, default=REGRESSIONS, help="where minimal failing models go")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args(argv)

    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
    warnings.filterwarnings("ignore")
    result = campaign(args.n, args.seed, args.max_layers, args.passes)
    saved = shrink_and_save(result, args.passes, args.shrink_budget, args.out)
    body = report(result, saved, args)
    print(body)
    if not args.no_write:
        write_section("fuzz campaign", body)
    return 1 if saved else 0


if __name__ == "__main__":
    sys.exit(main())
