"""etc quantize: INT8 QDQ with image calibration, exact equalization and error-compensating rounding."""

from __future__ import annotations

import time
from pathlib import Path

import click

from etc.commands.common import (
    check_writable_file,
    device_option,
    echo_json,
    htp_before_after,
    htp_size_option,
    input_range_option,
    json_option,
    model_scale,
    parse_input_ranges,
    parse_size,
    runnable_model,
    table,
    threads_option,
)
from etc.commands.progress import StageProgress

# ops that make a model already quantized: quantizing it again would quantize its rounding errors
QUANTIZED_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "ConvInteger",
    "QLinearMatMul",
    "MatMulInteger",
)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write."
)
@click.option(
    "--calib",
    default="samples",
    show_default=True,
    help="Calibration images: a folder (DIV2K, BasicSR or HR-only layout), a name under $ETC_DATA or "
    "./datasets (e.g. DIV2K), or 'samples' (photos bundled with scikit-image).",
)
@click.option(
    "--scale",
    type=int,
    help="Upscaling factor (default: measured from the model); one that disagrees with the model is exit 2.",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "minmax", "percentile", "entropy"]),
    default="auto",
    show_default=True,
    help="Activation range method; auto picks per tensor the lowest expected quantization error.",
)
@click.option("--num", type=int, default=32, show_default=True, help="Calibration patches.")
@click.option(
    "--patch",
    type=int,
    default=64,
    show_default=True,
    help="Calibration patch size (LR pixels); every calibration image must be at least this large at LR.",
)
@click.option(
    "--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel."
)
@click.option("--equalize/--no-equalize", default=True, show_default=True, help="FP32-exact equalization.")
@click.option(
    "--split",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Up to N copies of an input channel that dominates a weight row (FP32-exact, finer int8 grid, but "
    "more MACs: the report states the growth); 1 = off.",
)
@click.option(
    "--split-budget",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Copy channels by measured activation noise removed per added MAC until the INT8 conv MACs reach "
    "this multiple of the FP32 model's (e.g. 1.05; FP32-exact, staggered; --split N caps the copies, default "
    "2). Off by default.",
)
@click.option(
    "--stagger",
    type=click.FloatRange(min=0.0, max=0.3),
    default=0.03,
    show_default=True,
    help="Copy j of a split channel scaled by 1 - j*STAGGER (FP32-exact) so the copies round differently; "
    "0 = identical copies.",
)
@click.option(
    "--rounding",
    type=click.Choice(["refit", "gptq", "nearest", "reconstruct"]),
    default="refit",
    show_default=True,
    help="Weights: refit = each Conv refitted to the FP32 output from its quantized input, then GPTQ-rounded; "
    "gptq = GPTQ rounding of the FP32 weights; nearest; reconstruct = refit, then each Conv(+Relu) block's "
    "rounding and bias learned against the FP32 block output (torch, slower).",
)
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True)
@click.option(
    "--target",
    type=click.Choice(["int32", "x86-avx2", "native", "htp"]),
    default="int32",
    show_default=True,
    help="Kernel the model is made for: int32 = exact int32 accumulation (NPUs, TFLite, VNNI and ARM CPUs); "
    "x86-avx2 = keep the int16 pair sums of x86 CPUs without VNNI below saturation; native = probe this CPU; "
    "htp = Qualcomm HTP (onnxruntime-qnn): PReLU slopes on a uint8 grid (QNN runs a float slope in float, "
    "slow and off by several steps), 16-bit convs with float16-exact requantization multipliers, and biases "
    "shifted against HTP's downward rounding. Check it with --device htp.",
)
@click.option(
    "--prelu-relu/--keep-prelu",
    "prelu_to_relu",
    default=False,
    show_default=True,
    help="Rewrite PReLU/LeakyReLU as ReLU on doubled channels first (exact, every Conv fuses with a ReLU, but "
    "2x the channels around each PReLU: more MACs). Off by default: PReLUs are kept (HTP runs them) and the "
    "report names this alternative with its measured drop and MACs.",
)
@click.option(
    "--range-search/--no-range-search",
    default=False,
    show_default=True,
    help="Scale each activation range by the factor that minimises the output error (slower).",
)
@click.option(
    "--finetune",
    "finetune_steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tune the int8 weights and biases against the FP32 output for up to N steps (torch); kept only "
    "if held-out calibration patches improve. 0 = off.",
)
@click.option(
    "--summary/--no-summary",
    default=True,
    show_default=True,
    help="End with PSNR drop on held-out calibration patches, MACs growth, INT8/FP32 latency on this CPU.",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="NODE[,NODE...]",
    help="Keep these nodes in float (node names or their output tensors; --sensitivity ranks the candidates): "
    "their weights stay FP32 and their outputs get no Q/DQ pair (a Conv's Relu is a node of its own: name "
    "it too to keep the pair float). Repeatable.",
)
@click.option(
    "--sensitivity",
    is_flag=True,
    help="End with a per-layer table: the output PSNR against FP32 on held-out patches with every layer INT8, "
    "and with each quantized Conv alone kept float (the gain says which to --exclude).",
)
@click.option(
    "--a16",
    default="none",
    show_default=True,
    metavar="none|all|auto|NAME[,NAME...]",
    help="Activations carried in 16 bits with 8-bit weights (A16W8, as HTP runs natively; uint16 Q/DQ at "
    "opset 21): auto = the fewest regions that bring the held-out drop to --max-drop, chosen by drop removed "
    "per cost added; all = the whole model; or tensor names (the range table lists them). onnxruntime's CPU "
    "runs a conv between 16-bit tensors in float: judge these models' speed on the NPU.",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0.0),
    default=0.05,
    show_default=True,
    help="--a16 auto: the held-out PSNR-Y drop (dB) to reach, the median over the held-out crops (the mean "
    "follows near-flat crops where a fraction of a grey level costs dB).",
)
@click.option(
    "--a16-budget",
    type=click.FloatRange(min=1.0),
    default=1.25,
    show_default=True,
    help="--a16 auto: the most cycles the mixed model may take, a multiple of the pure 8-bit model's "
    "(estimated, or measured with --a16-cost htp).",
)
@click.option(
    "--a16-max-share",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=0.25,
    show_default=True,
    help="--a16 auto: the largest share of the quantized activation tensors stored in 16 bits.",
)
@click.option(
    "--a16-cost",
    type=click.Choice(["estimate", "htp"]),
    default="estimate",
    show_default=True,
    help="What --a16 auto ranks regions by: the cost model's estimate, or HTP cycles (onnxruntime-qnn; also "
    "reports the cycles of A8, the mixed model and A16W8 everywhere, and the drop on HTP).",
)
@click.option(
    "--floor/--no-floor",
    default=True,
    show_default=True,
    help="Measure the floor: the held-out drop of uint8 activations alone (weights float), printed next to "
    "the model's drop.",
)
@input_range_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patch crops.")
@device_option
@htp_size_option
@threads_option
@json_option
def quantize(
    model: Path,
    output: Path,
    calib: str,
    scale: int | None,
    method: str,
    num: int,
    patch: int,
    per_channel: bool,
    equalize: bool,
    split: int,
    split_budget: float | None,
    stagger: float,
    rounding: str,
    bias_correction: bool,
    range_search: bool,
    finetune_steps: int,
    summary: bool,
    target: str,
    prelu_to_relu: bool,
    input_ranges: tuple[str, ...],
    seed: int,
    exclude: tuple[str, ...],
    sensitivity: bool,
    a16: str,
    max_drop: float,
    a16_budget: float,
    a16_max_share: float,
    a16_cost: str,
    floor: bool,
    threads: int,
    device: str,
    htp_size: str,
    as_json: bool,
) -> None:
    """Quantize MODEL to INT8 QDQ (uint8 activations, int8 weights) calibrated on images.

    \b
    Steps: exact clip-structure ranges, cross-layer equalization (checked FP32-exact with onnxruntime;
    opt-in channel copies with --split), per-tensor activation ranges, each Conv refitted to the FP32
    output from its quantized input and GPTQ-rounded, bias correction, QDQ placement with Conv+Relu fused
    and DepthToSpace on uint8. The default target is exact int32 accumulation; --target x86-avx2 limits
    the weights for x86 CPUs without VNNI. Ends with the PSNR drop on held-out calibration patches, the MACs
    growth and the INT8/FP32 latency on this CPU. Check on other images with `etc eval OUT.onnx --ref MODEL`.
    Progress goes to stderr (not with --json): a bar per stage (total, ETA) on a terminal, one line per stage
    otherwise.
    Exit codes: 0 ok, 1 the equalization changed the FP32 outputs, 2 bad input (including a model
    onnxruntime cannot run, an already quantized model, a --scale the model disagrees with, images smaller
    than the patch, an -o that cannot be written; all checked before the work), 3 internal error.
    With --device htp the FP32 input and the INT8 output also run on Qualcomm's HTP simulator at --htp-size
    (every node on HTP) and the report gives both cycle counts.
    """
    from etc import runtime
    from etc.errors import EtcError
    from etc.frontends.onnx_io import load, save
    from etc.quant.config import QuantConfig
    from etc.quant.quantizer import quantize_with_config
    from etc.runtime import input_specs

    if output.resolve() == model.resolve():
        raise EtcError(f"{output}: -o is the input file; write the INT8 model elsewhere")
    check_writable_file(output, "-o")
    if device == "htp":
        from etc import htp

        htp.require()
        parse_size(htp_size)
    loaded = load(model)
    _refuse_quantized(loaded, model)
    runtime.use_threads(threads)
    source = runnable_model(loaded, model, quiet=as_json)
    scale = model_scale(source, model, scale)
    ranges = parse_input_ranges(input_ranges, [s.name for s in input_specs(source)])
    exclude = _excluded_nodes(source, exclude, model)
    patch = _patch_for(source, patch, model)
    if summary:
        _check_patch_for_metrics(patch, scale)
    bar = StageProgress("quantize", not as_json, unit="step")
    started = time.perf_counter()
    try:
        config = QuantConfig(
            scale=scale,
            method=method,
            num=num,
            patch=patch,
            per_channel=per_channel,
            equalize=equalize,
            split=split,
            split_budget=split_budget,
            stagger=stagger,
            rounding=rounding,
            bias_correction=bias_correction,
            range_search=range_search,
            finetune_steps=finetune_steps,
            target=target,
            prelu_to_relu=prelu_to_relu,
            input_ranges=ranges,
            seed=seed,
            exclude=tuple(exclude),
            sensitivity=sensitivity,
            a16=a16,
            max_drop=max_drop,
            a16_budget=a16_budget,
            a16_max_share=a16_max_share,
            a16_cost=a16_cost,
            floor=floor,
        )
        qmodel, report = quantize_with_config(source, calib, config, progress=bar)
    except BaseException:
        bar.close(last=None)
        raise
    bar.stage("writing the INT8 model")
    save(qmodel, output)
    figures = None
    if summary:
        from etc.quant.summary import summarize

        bar.stage("summary (held-out PSNR, latency)")
        try:
            figures = summarize(
                source,
                qmodel,
                scale=report.scale,
                calib=calib,
                patch=patch,
                seed=seed,
                seconds=time.perf_counter() - started,
                known_drop=(report.heldout_drop, report.heldout_patches)
                if report.heldout_drop is not None and report.heldout_patches
                else None,
            )
        except Exception as exc:  # the model is written; a figure that cannot be measured is reported
            click.echo(
                f"summary unavailable: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}",
                err=True,
            )
    htp_line, htp_json = None, None
    if device == "htp":
        bar.stage("HTP cycles (simulator)")
        htp_line, htp_json = htp_before_after(source, qmodel, parse_size(htp_size))
    bar.close()
    if as_json:
        payload = report.as_dict()
        if htp_json:
            payload["htp"] = htp_json
        payload["output"] = str(output)
        payload["excluded"] = exclude
        payload["summary"] = figures.as_dict() if figures else None
        echo_json(payload)
        return
    click.echo(
        f"{model}: x{report.scale}, target {report.target}, calibrated on {report.patches} patches of '{report.calib}'"
    )
    rows = [
        [name, f"{lo:.4g}", f"{hi:.4g}", report.methods.get(name, "declared")]
        for name, (lo, hi) in report.ranges.items()
    ]
    click.echo(table(rows, ["tensor", "lo", "hi", "method"]))
    if report.prelu_to_relu:
        click.echo(f"PReLU/LeakyReLU rewritten as ReLU on doubled channels: {report.prelu_to_relu}")
    if report.slopes_snapped:
        click.echo(
            f"PReLU slopes moved onto HTP's uint8 grid before calibration: {report.slopes_snapped} PReLU(s) "
            "(the FP32 reference keeps the original slopes)"
        )
    if report.split:
        sp = [[r.tensor, r.channels, r.added, r.max_copies] for r in report.split]
        click.echo(table(sp, ["widened tensor", "channels", "added", "max copies"]))
    if report.equalized:
        eq = [[r.tensor, r.alpha, f"{r.min_scale:.3g}", f"{r.max_scale:.3g}"] for r in report.equalized]
        click.echo(table(eq, ["equalized tensor", "alpha", "min scale", "max scale"]))
        click.echo(f"equalization FP32 max abs difference: {report.equalize_max_abs:.2e}")
    if report.staggered:
        sg = [[r.tensor, r.groups, r.max_copies, f"{r.min_scale:.3g}"] for r in report.staggered]
        click.echo(table(sg, ["staggered tensor", "copy groups", "max copies", "min scale"]))
    ops = ", ".join(f"{k} x{v}" for k, v in report.ops.items())
    if report.finetune:
        click.echo(f"fine-tuning: {report.finetune}")
    click.echo(f"rounding {report.rounding}, bias corrected convs: {report.bias_corrected}; ops: {ops}")
    if exclude:
        click.echo(f"kept in float (--exclude): {', '.join(exclude)}")
    if report.sensitivity:
        click.echo(_sensitivity_text(report))
    for line in _a16_lines(report):
        click.echo(line)
    click.echo(f"wrote {output}")
    for line in figures.lines() if figures else []:
        click.echo(line)
    if htp_line:
        click.echo(htp_line)


def floor_line(report) -> str | None:
    """ "uint8 activations alone cost X dB here; this model loses Y dB", or None when not measured."""
    if report.floor_drop is None or report.heldout_drop is None:
        return None
    return (
        f"uint8 activations alone cost {report.floor_drop:.3f} dB here; this model loses "
        f"{report.heldout_drop:.3f} dB (held-out PSNR-Y on {report.heldout_patches} patches, onnxruntime CPU)"
    )


def _a16_lines(report) -> list[str]:
    """The floor line and, with --a16, the 16-bit tensors, auto's steps and the HTP figures."""
    out = []
    line = floor_line(report)
    if line:
        out.append(line)
    if report.alternatives:
        alts = "; ".join(
            f"{a.option}: "
            + (f"{a.drop:.3f} dB" if a.drop is not None else "not measured (run it)")
            + f" at {a.macs_ratio:.2f}x MACs"
            + (f", {a.htp_ratio:.2f}x estimated HTP INT8 cycles" if a.htp_ratio is not None else "")
            + f" ({a.note})"
            for a in report.alternatives
        )
        out.append(f"{report.prelus} PReLU/LeakyReLU kept (no extra MACs); alternatives: {alts}")
    choice = report.a16
    if choice is None:
        return out
    share = f"{len(choice.wide)}/{choice.candidates}"
    out.append(
        f"16-bit activations ({choice.mode}): {', '.join(choice.wide) or 'none'} ({share} tensors stored in 16 "
        f"bits, {len(choice.converts)} Convert(s)); a conv between 16-bit tensors runs in float on "
        "onnxruntime's CPU, so CPU latency is not the figure for this model"
    )
    if choice.mode == "auto":
        rows = [
            [
                s.tensor,
                f"{s.alone:.3f}",
                f"+{s.cost:.3f}",
                f"{s.before:.3f}",
                f"{s.after:.3f}",
                "yes" if s.kept else "no (not needed)",
            ]
            for s in choice.steps
        ]
        if rows:
            out.append(
                table(
                    rows,
                    [
                        "16-bit region",
                        "drop alone dB",
                        f"added cycles / 8-bit ({choice.cost_source})",
                        "before",
                        "after",
                        "kept",
                    ],
                )
            )
        if choice.refit_drop is not None:
            kept = "kept" if choice.refit else "not kept: the 8-bit fit was better"
            out.append(
                f"weights refitted with these widths: held-out drop {choice.refit_drop:.3f} dB ({kept})"
            )
        out.append(_auto_line(report, choice))
        if not choice.reached:
            out.append(
                f"--max-drop {report.config.max_drop}: not reached within --a16-budget {choice.budget} and "
                f"--a16-max-share {choice.max_share} ({len(choice.steps)} region(s) taken)"
            )
        elif not choice.steps:
            out.append(f"--max-drop {report.config.max_drop}: the pure 8-bit model is within it already")
    if report.a16_cycles:
        cyc = report.a16_cycles
        base = max(cyc.get("a8", 0), 1)
        out.append(
            "HTP cycles at 32x32: " + ", ".join(f"{k} {v:.4g} ({v / base:.2f}x)" for k, v in cyc.items())
        )
    if report.a16_htp_drop:
        out.append(
            "held-out drop on HTP: " + ", ".join(f"{k} {v:.3f} dB" for k, v in report.a16_htp_drop.items())
        )
    return out


def _auto_line(report, choice) -> str:
    """What --a16 auto achieved: its median held-out drop against the 8-bit model's, the 16-bit share and the
    cycles over the 8-bit model (estimated or measured), each with its limit."""
    drop = "n/a" if choice.drop is None else f"{choice.drop:.3f}"
    cycles = "n/a" if choice.cost is None else f"{1 + choice.cost:.2f}x"
    return (
        f"--a16 auto: median held-out drop {drop} dB (limit {report.config.max_drop}); "
        f"{len(choice.wide)}/{choice.candidates} tensors in 16 bits ({choice.share:.2f}, limit {choice.max_share}); "
        f"cycles {cycles} the 8-bit model's ({choice.cost_source}, limit {choice.budget}x)"
    )


def _patch_for(source, patch: int, path: Path) -> int:
    """The calibration patch size: ``patch``, or the model's own size when its H/W are static and square."""
    from etc.errors import EtcError
    from etc.runtime import input_specs

    shapes = [s.shape for s in input_specs(source) if len(s.shape) == 4 and not s.dynamic_hw]
    if not shapes:
        return patch
    h, w = shapes[0][2], shapes[0][3]
    if h != w:
        raise EtcError(
            f"{path}: the model takes only {h}x{w} inputs (static H/W) and calibration uses square patches; "
            "re-export it with dynamic H/W"
        )
    return h


def _refuse_quantized(model, path: Path) -> None:
    """Exit 2 when ``model`` already holds quantization ops: its float weights are gone."""
    from etc.errors import EtcError

    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if counts:
        found = ", ".join(f"{op} x{n}" for op, n in counts.items())
        raise EtcError(
            f"{path}: already quantized ({found}); quantizing it again would round its rounding errors. "
            "Quantize the FP32 model it was made from"
        )


def _check_patch_for_metrics(patch: int, scale: int) -> None:
    """Exit 2 when the summary's held-out PSNR/SSIM cannot be measured on patches of ``patch`` LR pixels."""
    from etc.errors import EtcError
    from etc.quant.metrics import smallest_hr

    least = smallest_hr(scale) // scale
    if patch < least:
        raise EtcError(
            f"--patch {patch}: the summary's held-out SSIM at x{scale} needs patches of at least {least} LR "
            f"pixels (an 11x11 window after the {scale}-pixel border crop); pass --patch {least} or more, or "
            "--no-summary"
        )


def _excluded_nodes(model, values: tuple[str, ...], path: Path) -> list[str]:
    """The --exclude names, split on commas; exit 2 naming one the model does not have."""
    from etc.errors import EtcError
    from etc.quant.quantizer import named_nodes as quantizer_names

    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    named = quantizer_names(model)  # the names quantization gives unnamed nodes (Op_index) count too
    known = {n.name for n in named.graph.node} | {o for n in model.graph.node for o in n.output}
    for name in names:
        if name not in known:
            convs = [n.name or n.output[0] for n in model.graph.node if n.op_type == "Conv"][:6]
            raise EtcError(
                f"--exclude {name}: {path} has no node or tensor named so (Conv nodes: {', '.join(convs)}"
                f"{', ...' if len(convs) == 6 else ''}; --sensitivity lists the quantized ones)"
            )
    return names


def _sensitivity_text(report) -> str:
    """The --sensitivity table: each quantized Conv kept float alone, largest output-PSNR gain first."""

    def db(value: float) -> str:
        return "identical" if value == float("inf") else f"{value:.2f}"

    rows = [
        [r.node, r.tensor, db(r.psnr_float), f"{r.gain_db:+.2f}" if r.gain_db != float("inf") else "inf"]
        for r in report.sensitivity
    ]
    head = (
        "per-layer sensitivity: output PSNR against FP32 on held-out patches with one Conv kept float "
        f"(all INT8: {db(report.sensitivity_base)} dB); --exclude takes the node or its output"
    )
    return head + "\n" + table(rows, ["kept float", "output", "PSNR dB", "gain dB"])
