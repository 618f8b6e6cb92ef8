"""etc verify: are two models the same function?"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from etc.commands.common import (
    TOLERANCE,
    device_option,
    echo_json,
    input_range_option,
    json_option,
    parse_input_ranges,
    runnable_model,
    table,
)
from etc.commands.shapes import input_shape_option, with_input_shapes


@click.command()
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@input_range_option
@input_shape_option
@click.option("--atol", type=TOLERANCE, default=1e-5, show_default=True, help="Absolute tolerance.")
@click.option(
    "--rtol", type=TOLERANCE, default=1e-5, show_default=True, help="Tolerance relative to the output range."
)
@click.option(
    "--images",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also compare on the images in this folder (RGB scaled to [0, 1]).",
)
@click.option("--seeds", type=int, default=2, show_default=True, help="Random input sets per spatial size.")
@click.option(
    "--inputs",
    "input_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Compare on the inputs in this .npz file (one array per model input, named like it) instead of "
    "random ones. Repeatable.",
)
@click.option(
    "--per-layer",
    is_flag=True,
    help="Also compare every intermediate tensor whose name both models share (on the first input set) and "
    "name the first, in the reference's order, that diverges beyond the tolerance.",
)
@device_option
@json_option
def verify(
    reference: Path,
    candidate: Path,
    input_ranges: tuple[str, ...],
    input_shapes: tuple[str, ...],
    atol: float,
    rtol: float,
    images: Path | None,
    seeds: int,
    input_files: tuple[Path, ...],
    per_layer: bool,
    device: str,
    as_json: bool,
) -> None:
    """Check that CANDIDATE computes the same function as REFERENCE.

    Both run in onnxruntime with graph optimizations disabled, on seeded random inputs inside the declared
    input ranges at several spatial sizes (odd ones included: border bugs hide at even sizes), and optionally
    on real images, or on your own inputs (--inputs). Exit codes: 0 equivalent, 1 not equivalent (outputs of
    different shapes are named with both shapes), 2 bad input (including a model onnxruntime cannot run or a
    negative tolerance), 3 internal error.

    With --device htp, CANDIDATE also runs on Qualcomm's HTP (every node on the NPU) on the same random inputs;
    the report adds its max abs difference from onnxruntime CPU (the same model) and from REFERENCE. HTP's
    arithmetic is not the CPU's (FP32 graphs run in reduced precision, INT8 requantizes its own way), so these
    figures are shown, and the verdict stays onnxruntime's.
    """
    from etc.frontends.onnx_io import load
    from etc.runtime import input_sets, input_specs
    from etc.verification import first_divergence, load_npz_inputs
    from etc.verification import verify as verify_models

    a, b = runnable_model(
        with_input_shapes(load(reference), input_shapes),
        reference,
        quiet=as_json,
        also=with_input_shapes(load(candidate), input_shapes),
        also_path=candidate,
    )
    ranges = parse_input_ranges(input_ranges, [s.name for s in input_specs(a)])
    inputs = [load_npz_inputs(a, path) for path in input_files] or None
    report = verify_models(
        a, b, input_ranges=ranges, atol=atol, rtol=rtol, images=images, seeds=seeds, inputs=inputs
    )
    layers = None
    if per_layer:
        feeds = [feed for _, feed in inputs] if inputs else input_sets(a, ranges)[:1]
        layers = first_divergence(a, b, feeds, atol=atol, rtol=rtol)
    on_htp = _htp_differences(a, b, ranges) if device == "htp" else None
    if as_json:
        echo_json(
            {
                **report.as_dict(),
                "per_layer": layers.as_dict() if layers else None,
                **({"htp": on_htp} if on_htp else {}),
            }
        )
    else:
        rows = [
            [r["output"], "-", "-", "-", "FAIL (below)"]
            if r.get("reason")
            else [r["output"], r["max_abs"], r["max_rel"], r["psnr"], "ok" if r["ok"] else "FAIL"]
            for r in report.rows
        ]
        click.echo(table(rows, ["output", "max abs", "max rel", "PSNR dB", "verdict"]))
        click.echo(f"{len(report.probes)} probes: {', '.join(sorted(set(report.probes)))}")
        if on_htp:
            click.echo(
                f"HTP: candidate max abs {on_htp['vs_cpu']:.3g} from onnxruntime CPU, "
                f"{on_htp['vs_reference']:.3g} from the reference, over {on_htp['inputs']} inputs "
                f"({', '.join(on_htp['sizes'])})"
            )
        reasons = [r["reason"] for r in report.rows if r.get("reason")]
        if report.equivalent:
            click.echo("equivalent")
        elif reasons:
            click.echo(f"NOT equivalent: {'; '.join(reasons)}")
        else:
            click.echo(f"NOT equivalent (atol {atol:g}, rtol {rtol:g})")
        if layers is not None:
            click.echo(_layers_text(layers))
    sys.exit(0 if report.equivalent else 1)


def _layers_text(layers) -> str:
    """One line on where the models first part (--per-layer)."""
    if layers.compared == 0:
        return "per layer: the models share no intermediate tensor name; nothing to compare layer by layer"
    head = f"per layer: {layers.compared} tensors with matching names compared"
    first = layers.first
    if first is None:
        return f"{head}; none diverges"
    return (
        f"{head}; first to diverge: '{first['tensor']}' (output of {first['op']}"
        + (f" '{first['node']}'" if first["node"] else "")
        + "), "
        f"max abs {first['max_abs']:.3g} > tolerance {first['tolerance']:.3g}"
    )


def _htp_differences(reference, candidate, ranges) -> dict:
    """max |HTP - CPU| of the candidate, and max |candidate on HTP - reference on CPU|, on seeded inputs."""
    import numpy as np

    from etc import htp, runtime

    feeds = runtime.input_sets(candidate, ranges)
    runner = htp.Runner(candidate)
    ref_session = runtime.session(reference)
    worst_ref = 0.0
    for feed in feeds:
        outputs = runner(feed)
        expected = runtime.run(ref_session, feed)
        for name, value in outputs.items():
            if name in expected and expected[name].shape == value.shape:
                diff = np.abs(value.astype(np.float64) - expected[name].astype(np.float64))
                worst_ref = max(worst_ref, float(diff.max()))
    sizes = [f"{s[0]}x{s[1]}" for s in runner.sessions]
    return {"vs_cpu": runner.max_abs, "vs_reference": worst_ref, "inputs": len(feeds), "sizes": sizes}
