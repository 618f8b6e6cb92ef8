"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import click

from etc.errors import EtcError
from etc.text import json_safe
from etc.text import table as table  # re-exported: the commands print their tables with it

INPUT_RANGE_HELP = (
    "Value range of an input, NAME=LO,HI (or LO,HI for every input). Repeatable. "
    "Default: [0, 1] for float image inputs. Rules that need a sign fact (e.g. carrying a skip through ReLU) "
    "rely on it, and verification samples inside it."
)


def repeatable_option(flag: str, dest: str, metavar: str, help_text: str):
    """A click option that may be given several times, collected as a tuple under ``dest``."""
    return click.option(flag, dest, multiple=True, metavar=metavar, help=help_text)


input_range_option = repeatable_option("--input-range", "input_ranges", "NAME=LO,HI", INPUT_RANGE_HELP)


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


class _Tolerance(click.FloatRange):
    """A finite number >= 0 (a negative or NaN tolerance would fail every comparison)."""

    name = "tolerance"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number >= 0", param, ctx)
        return number


TOLERANCE = _Tolerance(min=0.0)

JSON_HELP = (
    "Print the result as strict JSON (RFC 8259). A figure that is not a finite number is null: a PSNR of "
    "null means the outputs are identical (infinite PSNR); an error figure of null means the outputs could "
    "not be compared (see the row's reason)."
)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(func)


def echo_json(payload: object) -> None:
    """``payload`` as strict JSON: infinities and NaN become null (documented in JSON_HELP)."""
    click.echo(json.dumps(json_safe(payload), indent=2, allow_nan=False))


# ---------------------------------------------------------------- output paths


def check_writable_file(path: Path, option: str) -> None:
    """Exit 2 naming ``path`` (given as ``option``) when a file cannot be created there; nothing is left behind.

    Checked before any work, by creating and removing a probe file in the folder the output will go to (or
    in its nearest existing ancestor when the folder is still to be created): permission bits lie for root
    and for pseudo file systems such as /sys and /proc.
    """
    if path.is_dir():
        raise EtcError(f"{path}: {option} is a folder; give a file name")
    _probe_folder(path.parent, path, option)


def check_writable_folder(path: Path, option: str) -> None:
    """Exit 2 naming ``path`` (given as ``option``) when it is a file or files cannot be created in it."""
    if path.exists() and not path.is_dir():
        raise EtcError(f"{path}: {option} is a file, expected a folder")
    _probe_folder(path, path, option)


def _probe_folder(folder: Path, shown: Path, option: str) -> None:
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise EtcError(f"{shown}: cannot write {option} there: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".etc-write-check.", dir=existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EtcError(f"{shown}: cannot write {option} there ({reason}); choose a writable path") from None
    os.close(fd)
    os.unlink(probe)


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
    if failure.size == (0, 0):
        custom = custom_domain_ops(model)
        if custom:
            raise UnrunnableModelError(
                f"{path}: onnxruntime does not know {', '.join(custom)}: load that op's kernel library into "
                "onnxruntime, or export the model with standard ONNX ops only"
            )
        raise UnrunnableModelError(
            f"{path}: onnxruntime cannot load the model: {failure.message}. Check that onnxruntime supports its "
            "ops and opset (re-export with opset 17 or 18)"
        )
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


# operator domains onnxruntime's CPU build registers kernels for
ORT_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.ms.internal.nhwc",
        "ai.onnx.preview.training",
        "ai.onnx.training",
        "com.microsoft.experimental",
    }
)


def custom_domain_ops(model) -> list[str]:
    """ "Op (domain 'd', node 'n')" for every op type from a domain onnxruntime has no kernels for and the model
    does not define as a local function; empty when there is none."""
    local = {(f.domain, f.name) for f in model.functions}
    seen: dict[tuple[str, str], str] = {}
    for node in model.graph.node:
        key = (node.domain, node.op_type)
        if node.domain not in ORT_DOMAINS and key not in local and key not in seen:
            seen[key] = node.name or node.output[0]
    return [f"{op} (domain '{domain}', node '{name}')" for (domain, op), name in seen.items()]


def _check_runs(model, what: object):
    """``model`` if onnxruntime runs it at the sizes ETC checks, else exit 2 naming the node."""
    from etc.errors import UnrunnableModelError

    failure = _run_failure(model)
    if failure is None:
        return model
    custom = custom_domain_ops(model) if failure.size == (0, 0) else []
    if custom:
        raise UnrunnableModelError(
            f"{what}: onnxruntime does not know {', '.join(custom)}: load that op's kernel library into "
            "onnxruntime, or export the model with standard ONNX ops only"
        )
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


# ---------------------------------------------------------------- super-resolution facts


def model_scale(model, path: object, scale: int | None) -> int:
    """The model's upscaling factor, measured on one probe; a ``--scale`` that disagrees is exit 2 (before any
    work), and a model whose output is not an integer upscaling of its input needs ``--scale`` to agree."""
    from etc import runtime

    if scale is not None and scale < 1:
        raise EtcError("--scale must be a positive integer")
    specs = runtime.input_specs(model)
    if len(specs) != 1:
        raise EtcError(f"{path}: quantize/eval need a model with one image input ({len(specs)} found)")
    feed = runtime.make_inputs(specs, size=(16, 16))
    out = next(iter(runtime.run(model, feed).values()))
    (ih, iw), (oh, ow) = next(iter(feed.values())).shape[2:], out.shape[2:] if out.ndim == 4 else (0, 0)
    measured = oh // ih if out.ndim == 4 and oh % ih == 0 and ow == iw * (oh // ih) else None
    if scale is None and measured is None:
        raise EtcError(
            f"{path}: output {list(out.shape)} is not an integer upscaling of input [1, C, {ih}, {iw}]; "
            "is this a super-resolution model?"
        )
    if scale is not None and scale != measured:
        found = f"x{measured}" if measured else "no integer upscaling"
        raise EtcError(
            f"{path}: --scale {scale} does not match the model, which maps {ih}x{iw} to {oh}x{ow} ({found}); "
            + (f"pass --scale {measured} or leave it out" if measured else "check the model")
        )
    return scale or measured  # type: ignore[return-value]


THREADS_HELP = "onnxruntime intra-op threads for the runs this command makes (0 = onnxruntime's default)."


def threads_option(func):
    return click.option(
        "--threads", type=click.IntRange(min=0), default=0, show_default=True, help=THREADS_HELP
    )(func)


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


def htp_before_after(before, after, size: tuple[int, int], runs: int = 3) -> tuple[str, dict]:
    """HTP cycles (per-node floor over ``runs``) of a command's input and output at ``size``: a report line and
    a JSON dict. A model HTP refuses is named with QNN's reason instead of a figure."""
    from etc import htp

    counted: dict[str, int | None] = {}
    refused: dict[str, str] = {}
    for key, model in (("before", before), ("after", after)):
        try:
            counted[key] = htp.cycles(model, size=size, runs=runs).floor
        except htp.HtpRefusedError as exc:
            counted[key], refused[key] = None, str(exc).splitlines()[0][:300]
    payload = {"size": list(size), **counted, **({"refused": refused} if refused else {})}
    where = f"HTP cycles at {size[0]}x{size[1]} (simulator, per-node floor over {runs} runs):"
    if refused:
        return f"{where} " + "; ".join(f"{k}: refused ({v})" for k, v in refused.items()), payload
    ratio = counted["after"] / counted["before"] if counted["before"] else float("nan")  # type: ignore[operator]
    payload["ratio"] = ratio
    return f"{where} before {counted['before']:.4g}, after {counted['after']:.4g} ({ratio:.2f}x)", payload


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
