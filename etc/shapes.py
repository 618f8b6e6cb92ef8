"""Static shapes: every tensor's shape at a concrete input size, by ONNX shape inference."""

from __future__ import annotations

from collections.abc import Sequence

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


WINDOW_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")


def widest_window(model: onnx.ModelProto, reference: tuple[int, int] = (64, 64)) -> tuple[int, int]:
    """The widest kernel window of the model's Conv/pool layers, in input pixels (a layer after a stride-2
    downsampling sees twice its extent); (1, 1) when nothing is known."""
    shapes = static_shapes(model, reference) or {}
    widest = [1, 1]
    for node in model.graph.node:
        if node.op_type not in WINDOW_OPS or not node.input or len(shapes.get(node.input[0], [])) != 4:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = shapes.get(node.input[1], []) if len(node.input) > 1 else []  # initializers are in shapes
        kernel = attrs.get("kernel_shape") or (weight[2:] if len(weight) == 4 else None)
        if not kernel or len(kernel) != 2:
            continue
        dilations = attrs.get("dilations") or [1, 1]
        strides = attrs.get("strides") or [1, 1]
        for axis in (0, 1):
            here = shapes[node.input[0]][2 + axis]
            if here <= 0:
                continue
            extent = dilations[axis] * (kernel[axis] - 1) + 1
            if node.op_type == "ConvTranspose":
                extent = -(-extent // strides[axis])  # input pixels one output window reads
            widest[axis] = max(widest[axis], -(-extent * reference[axis] // here))
    return widest[0], widest[1]


def fit_windows(model: onnx.ModelProto, sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``sizes`` grown where needed so that the model's widest window fits with room to spare: every layer then
    sees pixels its padding reaches and pixels it does not (a rewrite right only in the interior, or only at
    the border, fails the check). Sizes grow by even steps, so odd sizes stay odd; most models keep ``sizes``."""
    if not any(s.dynamic_hw for s in input_specs(model)):
        return tuple(sizes)
    need = [w + 4 for w in widest_window(model)]
    grown = []
    for size in sizes:
        grown.append(tuple(n + 2 * -(-(m - n) // 2) if n < m else n for n, m in zip(size, need)))
    return tuple(grown)  # type: ignore[return-value]
