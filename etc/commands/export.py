"""etc export: a PyTorch factory to ONNX."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("factory")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The .onnx file to write.",
)
@click.option("--scale", type=int, default=None, help="Passed to the factory as scale=S when given.")
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "legacy"]),
    default="dynamo",
    show_default=True,
    help="torch.onnx exporter.",
)
@click.option("--opset", type=int, default=None, help="Opset (default 18 for dynamo, 17 for legacy).")
@click.option("--static", "static_hw", is_flag=True, help="Fix H/W to the example size instead of dynamic.")
@click.option("--channels", type=int, default=3, show_default=True, help="Input channels of the example.")
@click.option("--size", default="32x32", show_default=True, help="Example input HxW.")
def export(
    factory: str,
    output: Path,
    scale: int | None,
    exporter: str,
    opset: int | None,
    static_hw: bool,
    channels: int,
    size: str,
) -> None:
    """Export FACTORY (FILE.py:Name or package.module:Name) to ONNX with dynamic H/W.

    The factory is called with no arguments (or scale=S) and must return a torch.nn.Module taking one
    NCHW image. Each step is announced on stderr with the time it started (the export itself takes seconds
    to tens of seconds). Example: etc export examples/my_net.py:build --scale 2 -o net.onnx
    """
    from etc.commands.common import check_writable_file, parse_size
    from etc.commands.progress import StageProgress
    from etc.errors import EtcError
    from etc.frontends.onnx_io import save

    check_writable_file(output, "-o")
    h, w = parse_size(size)
    steps = StageProgress("export", tty=False)
    steps.stage("loading PyTorch")
    try:
        import torch

        from etc.frontends import torch as torch_frontend
    except ImportError:
        raise EtcError("etc export needs PyTorch: pip install 'etc-onnx[torch]'") from None
    steps.stage(f"building {factory}" + (f" with scale={scale}" if scale is not None else ""))
    try:
        build = torch_frontend.load_factory(factory)
    except (ValueError, ImportError, AttributeError, FileNotFoundError) as exc:
        raise EtcError(f"{factory}: {exc}") from None
    module = build(scale=scale) if scale is not None else build()
    if not isinstance(module, torch.nn.Module):
        raise EtcError(f"{factory}: returned {type(module).__name__}, expected a torch.nn.Module")
    example = torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(0))
    kwargs = {"opset": opset} if opset else {}
    hw = "static" if static_hw else "dynamic"
    steps.stage(f"tracing with the {exporter} exporter on a 1x{channels}x{h}x{w} example ({hw} H/W)")
    model = torch_frontend.export(
        module.eval(), example, dynamic_hw=not static_hw, exporter=exporter, **kwargs
    )
    steps.stage(f"writing {output}")
    save(model, output)
    steps.close()
    click.echo(f"wrote {output} ({exporter} exporter, opset {model.opset_import[0].version})")
