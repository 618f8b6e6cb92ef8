"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
import math
import sys

import click

from etc.errors import EtcError
from etc.text import table as table  # re-exported: the commands print their tables with it

INPUT_RANGE_HELP = (
    "Value range of an input, NAME=LO,HI (or LO,HI for every input). Repeatable. "
    "Default: [0, 1] for float image inputs. Rules that need a sign fact (e.g. carrying a skip through ReLU) "
    "rely on it, and verification samples inside it."
)


def input_range_option(func):
    return click.option(
        "--input-range", "input_ranges", multiple=True, metavar="NAME=LO,HI", help=INPUT_RANGE_HELP
    )(func)


def parse_input_ranges(values: tuple[str, ...], input_names: list[str]) -> dict[str, tuple[float, float]]:
    """['input=0,1', '-1,1'] -> {'input': (0.0, 1.0)}; unknown names and lo > hi are errors."""
    ranges: dict[str, tuple[float, float]] = {}
    for text in values:
        name, _, bounds = text.rpartition("=")
        parts = bounds.split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise EtcError(f"--input-range '{text}': expected NAME=LO,HI or LO,HI, e.g. input=0,1") from None
        if not lo <= hi or math.isnan(lo) or math.isnan(hi):
            raise EtcError(f"--input-range '{text}': LO must not exceed HI")
        targets = [name] if name else input_names
        for target in targets:
            if target not in input_names:
                raise EtcError(
                    f"--input-range: the model has no input '{target}' (inputs: {', '.join(input_names)})"
                )
            ranges[target] = (lo, hi)
    return ranges


def parse_size(text: str) -> tuple[int, int]:
    """'360x640' -> (360, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EtcError(f"--size '{text}': expected HxW, e.g. 360x640") from None
    if h <= 0 or w <= 0:
        raise EtcError(f"--size '{text}': sizes must be positive")
    return h, w


def progress_bar(desc: str, enabled: bool):
    """A tqdm bar on stderr (None when disabled or stderr is not a terminal)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit="run", file=sys.stderr, leave=False)


def echo_json(payload: object) -> None:
    click.echo(json.dumps(payload, indent=2, default=_json_default))


def _json_default(value: object):
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    return str(value)


def runnable_model(model, path: object, *, quiet: bool = False, also=None, also_path: object = None):
    """``model`` (and ``also``) as given, or pinned to the one size onnxruntime runs them at, with a warning.

    A dynamic-H/W export that baked its traced size into a shape constant runs only at that size; ETC then
    works at that size and says so, naming the node. A model onnxruntime cannot run at any size ETC finds is
    a user error (exit 2) that names the node and says what to do.
    """
    from etc import runtime
    from etc.errors import UnrunnableModelError

    failure = _run_failure(model)
    if failure is None:
        return model if also is None else (model, _check_runs(also, also_path))
    where, at = failure.where, _at_size(failure)
    size = runtime.runnable_size(model) if failure.size != (0, 0) else None
    if size is None:
        raise UnrunnableModelError(
            f"{path}: onnxruntime cannot run {where}{at}: {failure.message}. Check the model runs in "
            "onnxruntime; if it was exported with dynamic H/W and a shape got baked in, re-export with static "
            "H/W (legacy exporter: no dynamic_axes on H/W) or with dynamo=True"
        )
    if not quiet:
        click.echo(
            f"etc: warning: {path}: {where} fails{at} ({failure.message}); the model runs only at "
            f"{size[0]}x{size[1]} (a shape baked in at export), so ETC works at that static size. Re-export "
            "with dynamo=True or static H/W to choose the size yourself",
            err=True,
        )
    pinned = runtime.pin_hw(model, size)
    return pinned if also is None else (pinned, _check_runs(runtime.pin_hw(also, size), also_path))


def _check_runs(model, what: object):
    """``model`` if onnxruntime runs it at the sizes ETC checks, else exit 2 naming the node."""
    from etc.errors import UnrunnableModelError

    failure = _run_failure(model)
    if failure is None:
        return model
    raise UnrunnableModelError(
        f"{what}: onnxruntime cannot run {failure.where}{_at_size(failure)}: {failure.message}"
    )


def _run_failure(model):
    """Where onnxruntime fails to run ``model`` at the sizes ETC checks (runtime's and verification's), or None."""
    from etc import runtime
    from etc.verification import VERIFY_SIZES

    return runtime.run_failure(model, tuple(dict.fromkeys((*runtime.DEFAULT_SIZES, *VERIFY_SIZES))))


def _at_size(failure) -> str:
    """The ' at input size HxW' of a failure at a size; empty for one at session creation."""
    return f" at input size {failure.size[0]}x{failure.size[1]}" if failure.size != (0, 0) else ""


DEVICE_HELP = (
    "Where to run: 'cpu' (onnxruntime) or 'htp' (Qualcomm's NPU through onnxruntime-qnn, its graph compiler "
    "and cycle simulator; needs etc-onnx[htp]). Every node must run on HTP: CPU fallback is disabled."
)


def device_option(func):
    return click.option(
        "--device",
        type=click.Choice(["cpu", "htp"]),
        default="cpu",
        show_default=True,
        help=DEVICE_HELP,
    )(func)


def htp_size_option(func):
    return click.option(
        "--htp-size",
        default="64x64",
        show_default=True,
        help="Input HxW for HTP cycles (the simulator takes ~10 s per FP32 run of a small SR net at 180x320).",
    )(func)


def htp_lines(model, size: tuple[int, int], runs: int = 5) -> tuple[list[str], dict]:
    """Placement table and HTP cycles (total and per op type) of ``model``: printable lines and a JSON dict."""
    from etc import htp

    found = htp.placement(model, size=size)
    counts: dict[str, list[int]] = {}
    for node in found.nodes:
        on, off = counts.setdefault(node.op, [0, 0])
        counts[node.op] = [on + node.on_htp, off + (not node.on_htp)]
    lines = [f"HTP placement at {size[0]}x{size[1]} (CPU fallback disabled):"]
    lines.append(table([[op, on, off] for op, (on, off) in counts.items()], ["op", "on HTP", "refused"]))
    payload: dict = {"size": list(size), "placement": found.as_dict()}
    if not found.all_on_htp:
        lines += [f"refused: {n.node} ({n.op}): {n.reason}" for n in found.refused]
        if found.error:
            lines.append(f"HTP session failed: {found.error}")
        lines.append("cycles: not measured (HTP cannot run the whole model)")
        return lines, payload
    measured = htp.cycles(model, size=size, runs=runs)
    payload["cycles"] = measured.as_dict()
    lines.append(
        f"HTP cycles {measured.total:,} (median of {runs} runs after a warm-up; run-to-run spread "
        f"{measured.spread:.0%}; per-node floor {measured.floor:,})"
    )
    total = max(sum(measured.per_op.values()), 1)
    rows = [[op, f"{c:,}", f"{c / total:.1%}"] for op, c in measured.per_op.items()]
    lines.append(table(rows, ["op", "cycles", "share"]))
    return lines, payload
