"""PyTorch frontend: export an ``nn.Module`` to an in-memory ONNX model, and load model factories by name.

Both exporters are supported and quiet:

* ``exporter="dynamo"`` (default, opset 18): ``torch.onnx.export(..., dynamo=True, dynamic_shapes=...)``; the
  result is already optimized by the exporter (e.g. a zero ``Pad`` before a conv is folded into its ``pads``).
* ``exporter="legacy"`` (opset 17): TorchScript-based ``torch.onnx.export(..., dynamo=False, dynamic_axes=...)``;
  the result keeps ``Constant`` nodes and ``Shape``/``Slice``/``Concat`` chains.

With ``dynamic_hw`` the input's dims 2 and 3 are symbolic (``height``, ``width``); the batch dim stays static.

What the rules see (torch 2.13), e.g. for the anchor ``repeat_interleave(x, s², dim=1)``:

    dynamo:  Unsqueeze(x, [2]) -> Expand([1,1,s²,1,1]) ; Shape(x, start=2) ; Concat([1], [-1], shape)
             -> Reshape                                                   (constants are initializers)
    legacy:  Unsqueeze(x, Constant [2]) -> Tile(Constant [1,1,s²,1,1]) -> Shape -> Slice[0:1], Slice[3:5]
             -> Concat(., Constant [-1], .) -> Reshape
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import onnx
import torch
from torch import nn

Exporter = Literal["dynamo", "legacy"]
DEFAULT_OPSET: dict[str, int] = {"dynamo": 18, "legacy": 17}
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch._export", "torch.fx", "onnxscript")


def example_input(height: int = 17, width: int = 19, seed: int = 0) -> torch.Tensor:
    """A deterministic 1x3xHxW image in [0, 1]; odd, unequal sizes keep H and W from being specialized."""
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def export(
    module: nn.Module,
    example: torch.Tensor | None = None,
    *,
    dynamic_hw: bool = True,
    exporter: Exporter = "dynamo",
    opset: int | None = None,
    input_name: str = "input",
    output_name: str = "output",
) -> onnx.ModelProto:
    """Export ``module`` (run in eval mode) to ONNX and return the model, weights embedded, no files left."""
    if exporter not in DEFAULT_OPSET:
        raise ValueError(f"unknown exporter {exporter!r}; use 'dynamo' or 'legacy'")
    example = example_input() if example is None else example
    opset = DEFAULT_OPSET[exporter] if opset is None else opset
    was_training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="etc-export-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            with _quiet():
                if exporter == "dynamo":
                    _export_dynamo(module, example, path, dynamic_hw, opset, input_name, output_name)
                else:
                    _export_legacy(module, example, path, dynamic_hw, opset, input_name, output_name)
            model = onnx.load(path, load_external_data=True)
        if exporter == "legacy":
            with torch.no_grad():
                result = module(example)
            if isinstance(result, torch.Tensor):
                _pin_static_dims(model, tuple(result.shape), dynamic_hw)
    finally:
        module.train(was_training)
    _check_names(model, input_name, output_name)
    return model


def _pin_static_dims(model: onnx.ModelProto, shape: tuple[int, ...], dynamic_hw: bool) -> None:
    """Give the output its static sizes where the legacy exporter left invented names (e.g. after a Reshape)."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        return
    for i, dim in enumerate(dims):
        if dim.HasField("dim_param") and not (dynamic_hw and i in (2, 3)):
            dim.dim_value = shape[i]


def _export_dynamo(
    module: nn.Module, example: torch.Tensor, path: str, dynamic_hw: bool, opset: int, inp: str, out: str
) -> None:
    shapes = None
    if dynamic_hw:
        shapes = ({2: torch.export.Dim("height"), 3: torch.export.Dim("width")},)
    torch.onnx.export(
        module,
        (example,),
        path,
        dynamo=True,
        input_names=[inp],
        output_names=[out],
        dynamic_shapes=shapes,
        opset_version=opset,
        external_data=False,
        verbose=False,
    )


def _export_legacy(
    module: nn.Module, example: torch.Tensor, path: str, dynamic_hw: bool, opset: int, inp: str, out: str
) -> None:
    axes = None
    if dynamic_hw:
        axes = {inp: {2: "height", 3: "width"}, out: {2: "out_height", 3: "out_width"}}
    torch.onnx.export(
        module,
        (example,),
        path,
        dynamo=False,
        input_names=[inp],
        output_names=[out],
        dynamic_axes=axes,
        opset_version=opset,
        verbose=False,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter prints, warnings and log records for the duration of an export."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_names(model: onnx.ModelProto, inp: str, out: str) -> None:
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in inits]
    if inputs[:1] != [inp] or [v.name for v in graph.output][:1] != [out]:
        raise RuntimeError(f"exported graph has inputs {inputs} and outputs {[v.name for v in graph.output]}")


def load_factory(spec: str) -> Callable[..., Any]:
    """Return the callable named by ``"path/to/file.py:Name"`` or ``"package.module:Name"``.

    ``Name`` may be dotted (``"mod:Class.build"``). Raises ValueError for a malformed spec, a missing file or
    module, a missing attribute or a non-callable target.
    """
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ValueError(f"bad factory spec {spec!r}: expected 'file.py:Name' or 'package.module:Name'")
    module = _load_file(where) if _looks_like_path(where) else _import(where)
    target: Any = module
    for part in attr.split("."):
        if not part.isidentifier() or not hasattr(target, part):
            raise ValueError(f"bad factory spec {spec!r}: {where} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"bad factory spec {spec!r}: {attr!r} is a {type(target).__name__}, not callable")
    return target


def _looks_like_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _load_file(where: str) -> Any:
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"factory file not found: {where}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"_etc_factory_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {where} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


def _import(where: str) -> Any:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as err:
        raise ValueError(f"factory module not found: {where} ({err})") from err
