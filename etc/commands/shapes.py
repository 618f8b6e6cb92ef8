"""--input-shape: fix or override the shape of a model's inputs (optimize, info, verify)."""

from __future__ import annotations

from etc.commands.common import repeatable_option
from etc.errors import EtcError

INPUT_SHAPE_HELP = (
    "Fix (or override) an input's shape, [NAME=]N,C,H,W or NxCxHxW, e.g. input=1,3,256,256 (every input when "
    "NAME is left out). Repeatable. Symbolic dims become static; a static dim given another value is "
    "overridden (the declared output shapes are then left to inference)."
)


input_shape_option = repeatable_option("--input-shape", "input_shapes", "[NAME=]DIMS", INPUT_SHAPE_HELP)


def parse_input_shapes(values: tuple[str, ...], model) -> dict[str, tuple[int, ...]]:
    """['input=1,3,64,64'] -> {'input': (1, 3, 64, 64)}; unknown names, wrong ranks, dims < 1 are errors."""
    from etc.runtime import input_specs

    specs = {s.name: s for s in input_specs(model)}
    shapes: dict[str, tuple[int, ...]] = {}
    for text in values:
        name, _, dims_text = text.rpartition("=")
        try:
            dims = tuple(int(d) for d in dims_text.replace("x", ",").split(","))
        except ValueError:
            raise EtcError(
                f"--input-shape '{text}': expected [NAME=]N,C,H,W, e.g. input=1,3,256,256"
            ) from None
        if any(d < 1 for d in dims):
            raise EtcError(f"--input-shape '{text}': every dimension must be at least 1")
        for target in [name] if name else list(specs):
            if target not in specs:
                raise EtcError(
                    f"--input-shape: the model has no input '{target}' (inputs: {', '.join(specs)})"
                )
            rank = len(specs[target].shape)
            if len(dims) != rank:
                raise EtcError(
                    f"--input-shape '{text}': input '{target}' has {rank} dimensions, not {len(dims)}"
                )
            shapes[target] = dims
    return shapes


def with_input_shapes(model, values: tuple[str, ...]):
    """``model`` with the ``--input-shape`` values applied (the model itself when there are none)."""
    import onnx

    shapes = parse_input_shapes(values, model)
    if not shapes:
        return model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    overridden = False
    for value in fixed.graph.input:
        if value.name not in shapes:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                overridden = True
            dim.Clear()
            dim.dim_value = size
    if overridden:  # declared shapes downstream of an overridden dim are stale: let inference redo them
        del fixed.graph.value_info[:]
        for out in fixed.graph.output:
            for k, dim in enumerate(out.type.tensor_type.shape.dim):
                dim.Clear()
                dim.dim_param = f"{out.name}_d{k}"
        try:
            inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(fixed).graph.output}
        except Exception:  # onnxruntime will judge the model; the symbolic outputs stand
            inferred = {}
        for out in fixed.graph.output:
            if out.name in inferred and inferred[out.name].type.tensor_type.HasField("shape"):
                out.type.CopyFrom(inferred[out.name].type)
    return fixed
