"""etc quantize: INT8 QDQ with image calibration, exact equalization and error-compensating rounding."""

from __future__ import annotations

import time
from pathlib import Path

import click

from etc.commands.common import (
    echo_json,
    input_range_option,
    parse_input_ranges,
    progress_bar,
    runnable_model,
    table,
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
@click.option("--scale", type=int, help="Upscaling factor (default: measured from the model).")
@click.option(
    "--method",
    type=click.Choice(["auto", "minmax", "percentile", "entropy"]),
    default="auto",
    show_default=True,
    help="Activation range method; auto picks per tensor the lowest expected quantization error.",
)
@click.option("--num", type=int, default=32, show_default=True, help="Calibration patches.")
@click.option("--patch", type=int, default=64, show_default=True, help="Calibration patch size (LR pixels).")
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
    type=click.Choice(["int32", "x86-avx2", "native"]),
    default="int32",
    show_default=True,
    help="Kernel the model is made for: int32 = exact int32 accumulation (NPUs, TFLite, VNNI and ARM CPUs); "
    "x86-avx2 = keep the int16 pair sums of x86 CPUs without VNNI below saturation; native = probe this CPU.",
)
@click.option(
    "--prelu-to-relu/--keep-prelu",
    default=True,
    show_default=True,
    help="Rewrite PReLU/LeakyReLU as ReLU on doubled channels first (exact), so every Conv fuses with a ReLU.",
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
@input_range_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patch crops.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
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
    Exit codes: 0 ok, 1 the equalization changed the FP32 outputs, 2 bad input (including a model
    onnxruntime cannot run), 3 internal error.
    """
    from etc.errors import EtcError
    from etc.frontends.onnx_io import load, save
    from etc.quant.config import QuantConfig
    from etc.quant.quantizer import quantize_with_config
    from etc.runtime import input_specs

    if output.resolve() == model.resolve():
        raise EtcError(f"{output}: -o is the input file; write the INT8 model elsewhere")
    if scale is not None and scale < 1:
        raise EtcError("--scale must be a positive integer")
    source = runnable_model(load(model), model, quiet=as_json)
    ranges = parse_input_ranges(input_ranges, [s.name for s in input_specs(source)])
    patch = _patch_for(source, patch, model)
    bar = progress_bar("calibrating", not as_json)
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
        )
        qmodel, report = quantize_with_config(
            source, calib, config, progress=bar.update if bar is not None else None
        )
    finally:
        if bar is not None:
            bar.close()
    save(qmodel, output)
    figures = None
    if summary:
        from etc.quant.summary import summarize

        try:
            figures = summarize(
                source,
                qmodel,
                scale=report.scale,
                calib=calib,
                patch=patch,
                seed=seed,
                seconds=time.perf_counter() - started,
            )
        except Exception as exc:  # the model is written; a figure that cannot be measured is reported
            click.echo(
                f"summary unavailable: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}",
                err=True,
            )
    if as_json:
        payload = report.as_dict()
        payload["output"] = str(output)
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
    click.echo(f"wrote {output}")
    for line in figures.lines() if figures else []:
        click.echo(line)


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
