"""etc optimize: run passes, print before/after, verify, write atomically."""

from __future__ import annotations

from pathlib import Path

import click

from etc.commands.common import (
    TOLERANCE,
    check_writable_file,
    check_writable_folder,
    device_option,
    echo_json,
    htp_before_after,
    htp_size_option,
    input_range_option,
    json_option,
    parse_input_ranges,
    parse_size,
    runnable_model,
    table,
    threads_option,
)
from etc.commands.shapes import input_shape_option, with_input_shapes


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the result."
)
@click.option(
    "--passes",
    default="fold,rep,et",
    show_default=True,
    help="Comma-separated passes to run. They run in the fixed phase order (cleanup, merge, widen, finish), "
    "whatever order they are named in, and the list repeats until nothing changes. See `etc passes`.",
)
@input_range_option
@input_shape_option
@click.option(
    "--align-channels",
    type=int,
    default=1,
    show_default=True,
    metavar="N",
    help="Round every Conv's output channels up to a multiple of N with zero channels (NPUs like 4).",
)
@click.option(
    "--prelu/--no-prelu",
    "prelu_to_relu",
    default=False,
    show_default=True,
    help="Rewrite PRelu/LeakyRelu as ReLU on doubled channels (exact, costs 2x channels there).",
)
@click.option(
    "--target",
    type=click.Choice(["npu", "cpu", "htp", "htp-estimate"]),
    default="npu",
    show_default=True,
    help="npu: plain Conv/ReLU/DepthToSpace within the cost budget. cpu: measure the forms ETC can build with "
    "onnxruntime on this machine and keep the fastest, never one slower than the input. htp: run those forms, "
    "quantized to INT8, on Qualcomm's HTP simulator (etc-onnx[htp]) at 64x64 and keep the one with the fewest "
    "cycles (FP32 cycles break ties), never one slower than the input or the merged form. htp-estimate: the "
    "same choice by etc.cost's INT8 cycle estimate for HTP (padded channels, float PReLUs; nothing is run, "
    "seconds instead of minutes); a less plain form must be estimated 3% cheaper.",
)
@click.option(
    "--max-growth",
    type=float,
    default=1.25,
    show_default=True,
    metavar="X",
    help="Budget for widening rewrites (carried skips, doubled channels, merged inputs): the result has at "
    "most X times the MACs of the merged (fold/rep) form, unless the Add/Concat a rewrite removes pays for it on "
    "the NPU cost model; declines are listed by --explain.",
)
@click.option(
    "--allow-dense",
    is_flag=True,
    help="Let merges turn grouped/depthwise convs into dense ones (never done otherwise).",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Compare the result with the input model after every pass and at the end.",
)
@click.option(
    "--atol", type=TOLERANCE, default=1e-5, show_default=True, help="Absolute tolerance of verification."
)
@click.option(
    "--rtol", type=TOLERANCE, default=1e-5, show_default=True, help="Tolerance relative to the output range."
)
@click.option(
    "--dump-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every intermediate model here as NN_pass.onnx.",
)
@click.option("--explain", is_flag=True, help="List where a rule looked and declined, and why.")
@click.option("--size", default="360x640", show_default=True, help="Input HxW for the MACs column.")
@click.option("--in-place", is_flag=True, help="Allow -o to be the input file.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write an HTML report: graphs before/after, op histograms, rule hits and where, verification, latency.",
)
@device_option
@htp_size_option
@threads_option
@json_option
def optimize(
    model: Path,
    output: Path | None,
    passes: str,
    input_ranges: tuple[str, ...],
    input_shapes: tuple[str, ...],
    align_channels: int,
    prelu_to_relu: bool,
    target: str,
    max_growth: float,
    allow_dense: bool,
    verify: bool,
    atol: float,
    rtol: float,
    dump_dir: Path | None,
    explain: bool,
    size: str,
    in_place: bool,
    report_path: Path | None,
    threads: int,
    device: str,
    htp_size: str,
    as_json: bool,
) -> None:
    """Rewrite MODEL into an equivalent model made of plainer ops.

    \b
    Passes (run `etc passes` for the rules inside each):
      fold  constant folding, no-op removal, BatchNorm/affine/Pad folding into Conv
      rep   merge re-parameterizable parallel and sequential conv branches
      et    anchors, skips, clips, dual streams, transposed convs -> Conv/ReLU/DepthToSpace
      opt-in: prelu (PReLU -> ReLU, doubles channels), depthwise (diagonal convs -> depthwise),
      equalize (cross-layer scaling for INT8), sim (onnxsim)

    Every pass is checked numerically with onnxruntime (optimizations off); if one changes the outputs the
    command names it, exits 1 and writes nothing. A dynamic-H/W model that onnxruntime runs only at its traced
    size is optimized at that size, with a warning naming the node. Exit codes: 0 ok, 1 not equivalent,
    2 bad input (including a model onnxruntime cannot run and an -o/--report/--dump-dir that cannot be
    written, both checked before the work), 3 internal error (a bug in etc; please report).

    With --device htp the input and the result also run on Qualcomm's HTP simulator at --htp-size (every node
    on HTP) and the report gives both cycle counts; a model HTP refuses is named with QNN's reason.

    Progress goes to stderr: one line per pass run (round, candidates offered to its rules, rewrites, time),
    and on a terminal a status line while a pass runs. The report says how much of the time the numeric
    checking took (timing in --json, whose stdout holds only the JSON).
    """
    from etc import api, runtime
    from etc.errors import EquivalenceError, EtcError
    from etc.frontends.onnx_io import load, save
    from etc.pipeline import parse_pipeline
    from etc.runtime import input_specs

    pass_names = parse_pipeline(passes)
    if align_channels < 1:
        raise EtcError("--align-channels must be at least 1")
    if max_growth < 1.0:
        raise EtcError("--max-growth must be at least 1.0 (the merged form itself)")
    hw = parse_size(size)
    if output is not None and not in_place and output.resolve() == model.resolve():
        raise EtcError(f"{output}: -o is the input file; pass --in-place to overwrite it")
    if report_path is not None and report_path.resolve() in (model.resolve(), output and output.resolve()):
        raise EtcError(f"{report_path}: --report would overwrite a model; choose another path")
    if output is not None:
        check_writable_file(output, "-o")
    if report_path is not None:
        check_writable_file(report_path, "--report")
    if dump_dir is not None:
        check_writable_folder(dump_dir, "--dump-dir")
    if device == "htp":
        from etc import htp

        htp.require()
        parse_size(htp_size)
    runtime.use_threads(threads)
    source = runnable_model(with_input_shapes(load(model), input_shapes), model, quiet=as_json)
    ranges = parse_input_ranges(input_ranges, [s.name for s in input_specs(source)])
    shown = (
        ", ".join(f"{n}=[{lo:g},{hi:g}]" for n, (lo, hi) in ranges.items()) or "float image inputs in [0, 1]"
    )
    if not as_json:
        click.echo(f"{model}: optimizing with passes {','.join(pass_names)}; assuming {shown}", err=True)
    status = ProgressLines()
    recorder = None
    if report_path is not None:
        from etc.tools.report import HitRecorder

        recorder = HitRecorder()
    try:
        result, report = api.optimize(
            source,
            pass_names,
            input_ranges=ranges,
            align_channels=align_channels,
            prelu_to_relu=prelu_to_relu,
            max_growth=max_growth,
            allow_dense=allow_dense,
            target=target,
            check_each_pass=verify,
            verify=verify,
            atol=atol,
            rtol=rtol,
            dump_dir=dump_dir,
            size=hw,
            instruments=[recorder] if recorder is not None else (),
            progress=None if as_json else status.line,
            live=None if as_json else status.live,
        )
    except EquivalenceError as exc:
        status.clear()
        raise EquivalenceError(f"{model}: {exc}; nothing written", exc.pass_name, exc.max_abs) from None
    status.clear()
    if report.verification is not None and not report.verification.equivalent:
        worst = max(r["max_abs"] for r in report.verification.rows)
        raise EquivalenceError(f"{model}: final verification failed (max abs {worst:.3g}); nothing written")
    if not as_json:
        for note in report.notes:
            click.echo(f"warning: {note}" if not note.startswith("--target") else note, err=True)
    if output is not None:
        save(result, output)
    htp_line, htp_json = None, None
    if device == "htp":
        htp_line, htp_json = htp_before_after(source, result, parse_size(htp_size))
    if report_path is not None:
        from etc.tools.report import write_report

        try:
            write_report(
                report_path, source, result, report, sites=recorder.sites, title=model.name, htp=htp_json
            )
        except OSError as exc:
            raise EtcError(f"{report_path}: cannot write --report there ({exc.strerror or exc})") from None
        if not as_json:
            click.echo(f"wrote report {report_path}", err=True)
    if as_json:
        extra = {"htp": htp_json} if htp_json else {}
        echo_json(
            {**_report_dict(report, output), "report": str(report_path) if report_path else None, **extra}
        )
    else:
        click.echo(_report_text(report, explain, output))
        if htp_line:
            click.echo(htp_line)


class ProgressLines:
    """Progress on stderr: one line per pass run; on a terminal also a status line rewritten in place while a
    pass runs (which pass, which sweep, how many candidates)."""

    def __init__(self) -> None:
        import sys

        self.stream = sys.stderr
        self.tty = self.stream.isatty()
        self.shown = False

    def line(self, text: str) -> None:
        self.clear()
        click.echo(f"  {text}", err=True)

    def live(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K  {text}")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _report_dict(report, output) -> dict:
    return {
        "output": str(output) if output else None,
        "before": report.before.as_dict(),
        "after": report.after.as_dict(),
        "passes": [vars(r) for r in report.pipeline.records],
        "rule_hits": report.pipeline.hits,
        "declines": [vars(d) for d in report.pipeline.declines],
        "remaining": report.remaining,
        "verification": report.verification.as_dict() if report.verification else None,
        "cost": report.cost_dict(),
        "timing": report.timing,
    }


def _report_text(report, explain: bool, output) -> str:
    from etc.info import human

    before, after = report.before, report.after
    ops = sorted(set(before.ops) | set(after.ops), key=lambda op: (-before.ops.get(op, 0), op))
    rows = [[op, before.ops.get(op, 0), after.ops.get(op, 0)] for op in ops]
    rows.append(["(nodes)", before.nodes, after.nodes])
    rows.append(["(params)", human(before.params), human(after.params)])
    rows.append([f"(MACs @{before.size[0]}x{before.size[1]})", human(before.macs), human(after.macs)])
    rows.append(["(plain share)", f"{before.plain_share:.0%}", f"{after.plain_share:.0%}"])
    rows.extend(cost_rows(report.cost_before, report.cost_after))
    parts = [table(rows, ["op", "before", "after"])]
    timing = [
        [
            r.name,
            f"{r.seconds * 1000:.1f} ms",
            "yes" if r.modified else "no",
            ", ".join(f"{k} x{v}" for k, v in r.hits.items()) or "-",
        ]
        for r in report.pipeline.records
    ]
    parts.append(table(timing, ["pass", "time", "changed", "rule hits"]))
    if report.timing:
        t = report.timing
        parts.append(
            f"time {t['total_s']:.2f} s: passes {t['passes_s']:.2f} s, numeric checking {t['checking_s']:.2f} s "
            f"({t['checking_share']:.0%}), loading, facts and costs {t['other_s']:.2f} s"
        )
    if report.verification is not None:
        v = report.verification
        vrows = [
            [r["output"], r["max_abs"], r["max_rel"], r["psnr"], "ok" if r["ok"] else "FAIL"] for r in v.rows
        ]
        parts.append(table(vrows, ["output", "max abs", "max rel", "PSNR dB", "verdict"]))
        parts.append(f"verified on {len(v.probes)} inputs ({', '.join(sorted(set(v.probes)))})")
    else:
        parts.append("verification skipped (--no-verify)")
    if report.remaining:
        parts.append("not plain yet:\n" + "\n".join(f"  {line}" for line in report.remaining))
    if explain:
        lines = [f"  {d}" for d in report.pipeline.declines] or ["  no rule declined anywhere"]
        parts.append("declined rewrites:\n" + "\n".join(lines))
        budget = report.budget
        if budget is not None:
            head = f"cost decisions (budget {budget.max_growth:g}x the merged form's MACs):"
            lines = [
                f"  {'accepted' if d.accepted else 'declined'} {d.rule} at {d.node}: "
                + (d.reason or f"{d.what} (to {d.total:.2f}x)")
                for d in budget.decisions
            ] or ["  no widening rewrite was considered"]
            parts.append(head + "\n" + "\n".join(lines))
    parts.append(f"wrote {output}" if output else "no -o given: nothing written")
    return "\n\n".join(parts)


def cost_rows(before, after) -> list[list[object]]:
    """Rows of the before/after table for etc.cost.ModelCost figures (empty when not counted)."""
    from etc.info import human

    if before is None or after is None:
        return []

    def ms(value) -> str:
        return "?" if value is None else f"{value:.2f} ms"

    rows = [
        ["(bytes moved, INT8)", human(before.bytes_moved), human(after.bytes_moved)],
        ["(NPU estimate)", ms(before.npu_ms), ms(after.npu_ms)],
        ["(HTP INT8 cycles, estimate)", human(before.htp_cycles), human(after.htp_cycles)],
    ]
    if before.cpu_ms is not None or after.cpu_ms is not None:
        rows.append(["(CPU measured, 1 thread, --target cpu)", ms(before.cpu_ms), ms(after.cpu_ms)])
    return rows
