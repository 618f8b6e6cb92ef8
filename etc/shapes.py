"""Static shapes: every tensor's shape at a concrete input size, by ONNX shape inference."""

from __future__ import annotations

import onnx

from etc.graph import shape_view
from etc.runtime import concrete_shape, input_specs


def static_shapes(model: onnx.ModelProto, size: tuple[int, int]) -> dict[str, list[int]] | None:
    """Every tensor's shape with the inputs' dynamic H/W set to ``size`` (0 where unknown), or None."""
    static = shape_view(model)  # the weights' values are not needed to infer shapes
    specs = {s.name: s for s in input_specs(model)}
    for value in static.graph.input:
        if value.name in specs:
            shape = concrete_shape(specs[value.name], size)
            for dim, n in zip(value.type.tensor_type.shape.dim, shape):
                dim.Clear()
                dim.dim_value = n
    del static.graph.value_info[:]
    for out in static.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        static = onnx.shape_inference.infer_shapes(static, data_prop=True)
    except Exception:
        return None
    shapes = {}
    for v in [*static.graph.value_info, *static.graph.input, *static.graph.output]:
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
    for init in static.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes
