"""etc demo: the whole job on the built-in x2 model, ending in one table."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the three ONNX models (default: a fresh temporary folder, printed).",
)
@click.option(
    "--size",
    default="180x320",
    show_default=True,
    help="Input HxW for the latency and MACs columns.",
)
@click.option("--runs", type=int, default=5, show_default=True, help="Timed runs per graph (median).")
@click.option("--threads", type=int, default=2, show_default=True, help="onnxruntime intra-op threads.")
@click.option(
    "--calib", "calib_patches", type=int, default=16, show_default=True, help="INT8 calibration patches."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the table as strict JSON (progress still on stderr); a figure that is not a finite number is null.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def demo(
    out_dir: Path | None, size: str, runs: int, threads: int, calib_patches: int, as_json: bool, quiet: bool
) -> None:
    """Run the whole job on a small SR model trained by this project and shipped with it.

    \b
    The model (x2; ECB blocks with Sobel/Laplacian branches, ReLU, an anchor skip, PixelShuffle, clamp) is
      1. built in PyTorch from etc/data/demo_x2.npz (examples/train_demo_model.py made it),
      2. exported to ONNX (dynamo exporter, dynamic H/W),
      3. optimized with fold,rep,et (channels aligned to 4), each pass checked numerically,
      4. verified against the exported graph with onnxruntime (optimizations off),
      5. quantized to INT8 (calibrated on scikit-image photos),
      6. evaluated (PSNR-Y vs bicubic) on a held-out photo, and
      7. timed with onnxruntime (optimizations on).

    Exit codes: 0 ok, 1 the optimized graph is not equivalent.
    """
    from etc.commands.common import check_writable_folder, echo_json, parse_size
    from etc.errors import EquivalenceError, EtcError
    from etc.tools import demo as demo_lib

    hw = parse_size(size)
    if out_dir is not None:
        check_writable_folder(out_dir, "--out")
    if runs < 1 or threads < 1 or calib_patches < 1:
        raise EtcError("--runs, --threads and --calib must be at least 1")
    say = None if quiet else (lambda text: click.echo(text, err=True))
    result = demo_lib.run_demo(
        out_dir,
        latency_size=hw,
        latency_runs=runs,
        threads=threads,
        calib_patches=calib_patches,
        progress=say,
    )
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(result.table())
    if not result.ok:
        raise EquivalenceError("demo: the optimized graph is not equivalent to the exported one")
