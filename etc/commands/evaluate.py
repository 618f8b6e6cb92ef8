"""etc eval: PSNR/SSIM on the Y channel of a super-resolution model, with a bicubic baseline row."""

from __future__ import annotations

from pathlib import Path

import click

from etc.commands.common import echo_json, progress_bar, table


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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(
    model: Path,
    data: str,
    scale: int | None,
    reference: Path | None,
    limit: int | None,
    optimize: bool,
    per_image: bool,
    as_json: bool,
) -> None:
    """PSNR and SSIM of MODEL on an image set, Y channel, scale-pixel border crop (BasicSR convention).

    HR images are cropped to a multiple of the scale; LR images are given (BasicSR/DIV2K layouts) or made
    with PIL's bicubic. Outputs are rounded to 8 bits before measuring. Exit codes: 0 ok, 2 bad input.
    """
    from etc.errors import EtcError
    from etc.frontends.onnx_io import load
    from etc.quant.calib import load_pairs
    from etc.quant.evaluate import evaluate_models
    from etc.quant.quantizer import infer_scale

    if scale is not None and scale < 1:
        raise EtcError("--scale must be a positive integer")
    main = load(model)
    scale = scale or infer_scale(main)
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
    bar = progress_bar("evaluating", not as_json)
    try:
        rows = evaluate_models(
            models,
            pairs,
            scale,
            reference="reference" if reference is not None else None,
            optimize=optimize,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    names = {"model": str(model), "reference": str(reference)}
    for row in rows:
        row.model = names.get(row.model, row.model)
    if as_json:
        echo_json(
            {"data": str(data), "scale": scale, "images": len(pairs), "rows": [r.as_dict() for r in rows]}
        )
        return
    header = ["model", "PSNR-Y dB", "SSIM-Y"] + (["dPSNR vs ref"] if reference is not None else [])
    lines = []
    for row in rows:
        cells = [row.model, f"{row.psnr:.4f}", f"{row.ssim:.4f}"]
        if reference is not None:
            cells.append(f"{row.delta:+.4f}")
        lines.append(cells)
    click.echo(f"{len(pairs)} images from '{data}', x{scale}, Y channel, {scale}-pixel border crop")
    click.echo(table(lines, header))
    warning = _target_warning(main, optimize)
    if warning:
        click.echo(warning, err=True)
    if per_image:
        img_rows = [[r.model, k, f"{p:.4f}", f"{s:.4f}"] for r in rows for k, (p, s) in r.per_image.items()]
        click.echo(table(img_rows, ["model", "image", "PSNR-Y dB", "SSIM-Y"]))


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
