"""etc eval: PSNR/SSIM on the Y channel of a super-resolution model, with a bicubic baseline row."""

from __future__ import annotations

from pathlib import Path

import click

from etc.commands.common import device_option, echo_json, json_option, model_scale, table, threads_option
from etc.commands.progress import StageProgress


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    default="samples",
    show_default=True,
    help="Images: 'samples' (bundled photos), a name under $ETC_DATA or ./datasets (e.g. Set5), or a folder "
    "of HR images (LR made by bicubic) or HR/LR pairs in the BasicSR layout.",
)
@click.option("--scale", type=int, help="Upscaling factor (default: measured from the model).")
@click.option(
    "--ref",
    "reference",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An FP32 model to compare with (adds a row and a delta column).",
)
@click.option("--limit", type=int, help="Evaluate at most this many images.")
@click.option(
    "--optimize/--no-optimize",
    default=True,
    show_default=True,
    help="Run with onnxruntime graph optimizations (the deployment setting) or exactly as written.",
)
@click.option("--per-image", is_flag=True, help="Also list every image.")
@device_option
@threads_option
@json_option
def evaluate(
    model: Path,
    data: str,
    scale: int | None,
    reference: Path | None,
    limit: int | None,
    optimize: bool,
    per_image: bool,
    device: str,
    threads: int,
    as_json: bool,
) -> None:
    """PSNR and SSIM of MODEL on an image set, Y channel, scale-pixel border crop (BasicSR convention).

    HR images are cropped to a multiple of the scale; LR images are given (BasicSR/DIV2K layouts) or made
    with PIL's bicubic. Outputs are rounded to 8 bits before measuring. Exit codes: 0 ok, 2 bad input
    (including a --scale the model disagrees with, and HR images too small for SSIM after the border crop:
    the message gives the smallest size accepted).

    With --device htp the models run on Qualcomm's HTP simulator (one compiled graph per image size; slow on
    large images, see --limit) and the table adds each model's max abs difference from onnxruntime CPU.
    """
    from etc.errors import EtcError
    from etc.frontends.onnx_io import load
    from etc.quant.calib import load_pairs
    from etc.quant.evaluate import evaluate_models
    from etc.quant.quantizer import infer_scale

    main = load(model)
    scale = model_scale(main, model, scale)
    models = {}
    if reference is not None:
        ref = load(reference)
        if infer_scale(ref) != scale:
            raise EtcError(f"{reference}: upscales by {infer_scale(ref)}, {model} by {scale}")
        models["reference"] = ref
    models["model"] = main
    pairs = load_pairs(data, scale, purpose="eval", limit=limit)
    if not pairs:
        raise EtcError(f"{data}: no images to evaluate")
    _check_sizes(pairs, scale, data)
    bar = StageProgress("eval", not as_json, unit="model")
    bar.stage(f"evaluating on {len(pairs)} image{'s' if len(pairs) != 1 else ''}", len(models))
    htp_diff: dict[str, float] = {}
    try:
        if device == "htp":
            rows = _evaluate_on_htp(models, pairs, scale, reference is not None, bar, htp_diff)
        else:
            rows = evaluate_models(
                models,
                pairs,
                scale,
                reference="reference" if reference is not None else None,
                optimize=optimize,
                threads=threads,
                progress=bar,
            )
    finally:
        bar.close(last=None)
    names = {"model": str(model), "reference": str(reference)}
    htp_diff = {names[k]: v for k, v in htp_diff.items()}
    for row in rows:
        row.model = names.get(row.model, row.model)
    if as_json:
        payload = {
            "data": str(data),
            "scale": scale,
            "images": len(pairs),
            "rows": [r.as_dict() for r in rows],
        }
        if device == "htp":
            payload["htp_max_abs_vs_cpu"] = htp_diff
        echo_json(payload)
        return
    header = ["model", "PSNR-Y dB", "SSIM-Y"] + (["dPSNR vs ref"] if reference is not None else [])
    header += ["HTP vs CPU max abs"] if device == "htp" else []
    lines = []
    for row in rows:
        cells = [row.model, f"{row.psnr:.4f}", f"{row.ssim:.4f}"]
        if reference is not None:
            cells.append(f"{row.delta:+.4f}")
        if device == "htp":
            cells.append(f"{htp_diff[row.model]:.4g}" if row.model in htp_diff else "")
        lines.append(cells)
    where = "on HTP (onnxruntime-qnn)" if device == "htp" else "on onnxruntime CPU"
    click.echo(f"{len(pairs)} images from '{data}', x{scale}, Y channel, {scale}-pixel border crop, {where}")
    click.echo(table(lines, header))
    warning = _target_warning(main, optimize) if device == "cpu" else None
    if warning:
        click.echo(warning, err=True)
    if per_image:
        img_rows = [[r.model, k, f"{p:.4f}", f"{s:.4f}"] for r in rows for k, (p, s) in r.per_image.items()]
        click.echo(table(img_rows, ["model", "image", "PSNR-Y dB", "SSIM-Y"]))


def _check_sizes(pairs, scale: int, data: str) -> None:
    """Exit 2 naming the first HR image too small for SSIM after the border crop, with the smallest size."""
    from etc.errors import EtcError
    from etc.quant.metrics import smallest_hr

    least = smallest_hr(scale)
    for pair in pairs:
        h, w = pair.hr.shape[:2]
        if h < least or w < least:
            raise EtcError(
                f"{data}: image '{pair.name}' is {w}x{h} (HR); x{scale} metrics need at least {least}x{least} "
                f"(an 11x11 SSIM window after the {scale}-pixel border crop); remove it or use larger images"
            )


def _target_warning(model, optimize: bool) -> str | None:
    """A note when an int32-target INT8 model runs on fused kernels that saturate int16 pairs (x86 without
    VNNI): the figures then show this CPU's kernel, not the QDQ graph."""
    from etc.quant import kernels

    if not optimize or kernels.recorded(model) != "int32" or not kernels.kernel_saturates_pairs():
        return None
    return (
        "note: this INT8 model targets exact int32 accumulation, but this CPU's u8s8 kernel adds weight pairs "
        "in saturating int16; use --no-optimize to evaluate the QDQ graph, or quantize with --target native"
    )


def _evaluate_on_htp(
    models, pairs, scale: int, has_reference: bool, bar: StageProgress, max_abs: dict
) -> list:
    """evaluate_models' rows with every model run on HTP; ``max_abs`` receives each model's |HTP - CPU|."""
    import numpy as np

    from etc import htp
    from etc.quant.calib import to_nchw
    from etc.quant.evaluate import bicubic_upscale, evaluate_fn
    from etc.quant.metrics import chw_to_hwc, to_uint8

    rows = [evaluate_fn("bicubic", lambda lr: bicubic_upscale(lr, scale), pairs, scale)]
    for name, model in models.items():
        runner = htp.Runner(model)
        input_name = runner.model.graph.input[0].name

        def upscale(lr, runner=runner, input_name=input_name):
            out = next(iter(runner({input_name: to_nchw(lr)}).values()))
            return to_uint8(chw_to_hwc(np.clip(out, 0.0, 1.0)))

        rows.append(evaluate_fn(name, upscale, pairs, scale))
        max_abs[name] = runner.max_abs
        bar(1)
    if has_reference:
        ref = next(r for r in rows if r.model == "reference")
        for row in rows:
            row.delta = row.psnr - ref.psnr
    return rows
