"""etc info: what is in a model."""

from __future__ import annotations

from pathlib import Path

import click

from etc.commands.common import device_option, echo_json, htp_size_option, json_option, parse_size, table
from etc.commands.shapes import input_shape_option, with_input_shapes


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--size",
    default="360x640",
    show_default=True,
    help="Input HxW used to count MACs (a model with static H/W, or fixed by --input-shape, uses its own).",
)
@input_shape_option
@device_option
@htp_size_option
@json_option
def info(
    model: Path, size: str, input_shapes: tuple[str, ...], device: str, htp_size: str, as_json: bool
) -> None:
    """Show inputs, outputs, opset, op histogram, parameters, MACs, bytes moved, estimated NPU time and
    plainness of MODEL.

    Plainness is the share of nodes that are Conv, Relu or DepthToSpace, the ops mobile NPUs run fastest.
    With --device htp it also shows which nodes Qualcomm's HTP accepts (QNN's reason for each refused one)
    and the simulated HTP cycles at --htp-size, in total and per op type.
    """
    from etc.cost import model_cost
    from etc.frontends.onnx_io import load
    from etc.info import human, model_info

    loaded = with_input_shapes(load(model), input_shapes)
    hw = _static_hw(loaded) or parse_size(size)
    facts = model_info(loaded, hw)
    cost = model_cost(loaded, hw)
    htp_text, htp_json = [], None
    if device == "htp":
        from etc.commands.common import htp_lines

        htp_text, htp_json = htp_lines(loaded, parse_size(htp_size))
    if as_json:
        echo_json({**facts.as_dict(), "cost": cost.as_dict(), **({"htp": htp_json} if htp_json else {})})
        return
    for kind, values in (("input", facts.inputs), ("output", facts.outputs)):
        for v in values:
            click.echo(f"{kind:7s} {v['name']}: {v['dtype']} [{', '.join(str(d) for d in v['shape'])}]")
    click.echo(f"opset   {facts.opset}")
    click.echo(f"nodes   {facts.nodes}")
    click.echo(f"params  {human(facts.params)} ({facts.params})")
    click.echo(f"MACs    {human(facts.macs)} at {facts.size[0]}x{facts.size[1]}")
    click.echo(f"moved   {human(cost.bytes_moved)}B of activations and weights (INT8)")
    npu = "?" if cost.npu_ms is None else f"{cost.npu_ms:.2f} ms"
    click.echo(
        f"NPU     {npu} estimated (etc.cost: constants fitted to the ETDS paper's Dimensity 8100 figures)"
    )
    htp = "?" if cost.htp_cycles is None else human(cost.htp_cycles)
    click.echo(
        f"HTP     {htp} cycles estimated for the INT8 model (etc.cost: fitted to Qualcomm's HTP simulator)"
    )
    click.echo(f"plain   {facts.plain_share:.0%} of nodes are Conv/Relu/DepthToSpace")
    if facts.qdq:
        marks = ", ".join(f"{op} x{n}" for op, n in facts.qdq.items())
        click.echo(f"int8    QDQ model, counted as the integer model it is ({marks} not counted as ops)")
    click.echo(f"depth   {facts.depth} nodes on the longest path; {facts.forks} branch points")
    click.echo(table([[op, n] for op, n in facts.ops.items()], ["op", "count"]))
    for line in htp_text:
        click.echo(line)


def _static_hw(model) -> tuple[int, int] | None:
    """The H/W of the model's 4-D image input when they are static, else None."""
    from etc.runtime import input_specs

    for spec in input_specs(model):
        if len(spec.shape) == 4 and not spec.dynamic_hw:
            return int(spec.shape[2]), int(spec.shape[3])  # type: ignore[arg-type]
    return None
