"""Loading and saving ONNX models safely.

Loading checks what ETC relies on (readable protobuf, supported opset, external data inside the model's folder,
float image-like input) and turns every failure into a one-line :class:`BadModelError`. Saving is atomic: the
model is written to a temporary file in the destination folder and renamed over the target, so a crash never
leaves a half-written output. The input file is never modified.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from etc.errors import BadModelError, EtcError

MIN_OPSET = 11
MAX_OPSET = 23
_TWO_GB = 2**31 - 1
_MAX_INPUT_ELEMENTS = 2**28  # 1 GB of float32: far beyond any real image batch


def load(path: str | os.PathLike, *, check: bool = True) -> onnx.ModelProto:
    """Reads an ONNX model (with external data) and validates it; raises BadModelError naming the file."""
    path = Path(path)
    if not path.exists():
        raise BadModelError(f"{path}: no such file")
    if path.is_dir():
        raise BadModelError(f"{path}: is a folder, expected an .onnx file")
    if path.stat().st_size == 0:
        raise BadModelError(f"{path}: empty file, expected an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise BadModelError(f"{path}: not a readable ONNX model ({_short(exc)}); re-export it") from None
    if not model.graph.node and not model.graph.output:
        raise BadModelError(f"{path}: not an ONNX model (no graph found); re-export it")
    _load_external_data(model, path)
    if check:
        validate(model, str(path))
    return model


def as_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """``model_or_path`` validated as it is, or loaded (and validated) from its path."""
    if isinstance(model_or_path, onnx.ModelProto):
        validate(model_or_path)
        return model_or_path
    return load(model_or_path)


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Checks every external tensor (inside the folder, present, within its file, under 2 GB in all), then reads."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = path.parent.resolve()
    total = 0
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if base not in target.parents and target != base:
            raise BadModelError(
                f"{path}: tensor '{tensor.name}' points to external data '{location}' outside the model's "
                "folder; refusing to read it"
            )
        if not target.is_file():
            raise BadModelError(
                f"{path}: external data file '{location}' for tensor '{tensor.name}' is missing; "
                "copy it next to the model"
            )
        declared = _declared_bytes(tensor)
        if declared is not None and declared >= _TWO_GB:
            raise BadModelError(
                f"{path}: tensor '{tensor.name}' declares {_gb(declared)} of data; ETC handles models up to 2 GB"
            )
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise BadModelError(
                f"{path}: tensor '{tensor.name}' has a malformed external data offset/length; re-export it"
            ) from None
        size = target.stat().st_size
        needed = length if length is not None else (declared if declared is not None else size - offset)
        if offset < 0 or needed < 0 or offset + needed > size:
            raise BadModelError(
                f"{path}: tensor '{tensor.name}' reads bytes {offset}..{offset + needed} of external data "
                f"'{location}', which has only {size}; the file is truncated or the model is corrupt"
            )
        if declared is not None and length is not None and length != declared:
            raise BadModelError(
                f"{path}: tensor '{tensor.name}' declares {declared} bytes but its external data length is "
                f"{length}; the model is corrupt"
            )
        total += needed
        if total >= _TWO_GB:
            raise BadModelError(
                f"{path}: external data totals over {_gb(total)}; ETC handles models up to 2 GB "
                "(super-resolution nets are far smaller: is this the right file?)"
            )
    try:
        onnx.load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise BadModelError(f"{path}: cannot read external data ({_short(exc)})") from None


def _declared_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's dims and type call for (None for strings/unknown types)."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * itemsize


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset version of the model."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise BadModelError("model imports no default-domain opset")


def validate(model: onnx.ModelProto, where: str = "model") -> None:
    """Checks the facts ETC relies on; raises BadModelError with one actionable line."""
    try:
        opset = opset_of(model)
    except BadModelError as exc:
        raise BadModelError(f"{where}: {exc}") from None
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise BadModelError(
            f"{where}: opset {opset} is not supported (ETC handles {MIN_OPSET}..{MAX_OPSET}); "
            "re-export with opset 17 or 18"
        )
    if model.ir_version < 3 or model.ir_version > onnx.IR_VERSION:
        raise BadModelError(
            f"{where}: IR version {model.ir_version} is not supported by onnx {onnx.__version__}"
        )
    try:
        if model.ByteSize() < _TWO_GB:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise BadModelError(f"{where}: invalid ONNX graph ({_short(exc)})") from None
    try:  # types and shapes must agree (an int weight, an Add of 3 and 4 channels, ...)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise BadModelError(
            f"{where}: invalid ONNX graph, types or shapes disagree ({_short(exc)})"
        ) from None
    _check_conv_channels(inferred, where)
    inits = {i.name for i in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in inits]
    if not real_inputs:
        raise BadModelError(f"{where}: the graph has no inputs; ETC expects an image-like input")
    for value in real_inputs:
        elem = value.type.tensor_type.elem_type
        if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            name = onnx.TensorProto.DataType.Name(elem)
            raise BadModelError(
                f"{where}: input '{value.name}' is {name}; ETC expects float image inputs (N, C, H, W)"
            )
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise BadModelError(f"{where}: input '{value.name}' is not 4-D (N, C, H, W); no image-like input")
        static = [int(d.dim_value) for d in dims if d.HasField("dim_value")]
        if any(d < 0 for d in static):
            raise BadModelError(f"{where}: input '{value.name}' declares a negative dimension; re-export it")
        elements = 1
        for d in static:
            elements *= max(d, 1)
        if elements > _MAX_INPUT_ELEMENTS:
            shape = "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in dims)
            raise BadModelError(
                f"{where}: input '{value.name}' declares shape {shape}, too large for an image "
                f"(over {_MAX_INPUT_ELEMENTS:.0e} elements); re-export with dynamic or smaller H/W"
            )


def _check_conv_channels(model: onnx.ModelProto, where: str) -> None:
    """Conv input channels must equal weight channels x group (onnx's shape inference does not check it)."""
    graph = model.graph
    channels: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            channels[value.name] = int(dims[1].dim_value)
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        shape = weights[node.input[1]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        c = channels.get(node.input[0])
        if len(shape) >= 2 and c is not None and c != shape[1] * group:
            raise BadModelError(
                f"{where}: invalid ONNX graph, types or shapes disagree: Conv '{node.name or node.output[0]}' "
                f"reads {c} channels but its weights expect {shape[1]} x group {group}"
            )


def save(model: onnx.ModelProto, path: str | os.PathLike, *, overwrite_input: str | None = None) -> Path:
    """Writes the model atomically. Models over 2 GB get one external data file next to them."""
    path = Path(path)
    if overwrite_input is not None and Path(overwrite_input).resolve() == path.resolve():
        raise BadModelError(f"{path}: output is the input file; pass --in-place to overwrite it")
    large = model.ByteSize() >= _TWO_GB
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the user's path, not the temporary file
        raise EtcError(f"{path}: cannot write there ({_os_reason(exc)})") from None
    os.close(fd)
    try:
        # mkstemp makes 0600; the output gets the permissions of any new file
        os.chmod(tmp, 0o666 & ~_umask())
        if large:
            data_name = path.name + ".data"
            onnx.save_model(
                model, tmp, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
            )
        else:
            with open(tmp, "wb") as handle:
                handle.write(model.SerializeToString())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EtcError(f"{path}: cannot write there ({_os_reason(exc)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """What the system said (``Permission denied``), else the exception's own text, else its type."""
    return exc.strerror or str(exc) or type(exc).__name__
