"""Our pipeline on onnx-graphsurgeon graphs: a ``gs.Graph`` in, a new ``gs.Graph`` out.

    import onnx_graphsurgeon as gs
    from etc.adapters.graphsurgeon import optimize_graph

    plain = optimize_graph(gs.import_onnx(model), "fold,rep,et")

The input graph is not modified. Opset, model-level metadata and input/output names are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
import onnx_graphsurgeon as gs

from etc.adapters import PipelineSettings
from etc.pipeline import Pass, PipelineResult


def graph_to_model(graph: gs.Graph) -> onnx.ModelProto:
    """Exports a graph without touching it; a graph built by hand (no ir_version) gets the lowest IR version
    its opsets allow, not the newest onnx knows (which onnxruntime may not load yet)."""
    model = gs.export_onnx(graph, do_type_check=False)
    if graph.ir_version is None:
        model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return model


def optimize_graph(
    graph: gs.Graph,
    passes: str | Sequence[str | Pass] = "fold,rep,et",
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    align_channels: int = 1,
    prelu_to_relu: bool = False,
    check: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    target: str = "npu",
    max_growth: float = 1.25,
    allow_dense: bool = False,
) -> gs.Graph:
    """Runs ETC passes on ``graph`` and returns the rewritten graph as a new ``gs.Graph``."""
    graph_out, _ = optimize_graph_with_result(
        graph,
        passes,
        input_ranges=input_ranges,
        align_channels=align_channels,
        prelu_to_relu=prelu_to_relu,
        check=check,
        atol=atol,
        rtol=rtol,
        target=target,
        max_growth=max_growth,
        allow_dense=allow_dense,
    )
    return graph_out


def optimize_graph_with_result(
    graph: gs.Graph,
    passes: str | Sequence[str | Pass] = "fold,rep,et",
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    align_channels: int = 1,
    prelu_to_relu: bool = False,
    check: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    target: str = "npu",
    max_growth: float = 1.25,
    allow_dense: bool = False,
) -> tuple[gs.Graph, PipelineResult]:
    """As :func:`optimize_graph`, also returning the pipeline record (passes, rule hits, declines)."""
    settings = PipelineSettings(
        passes,
        dict(input_ranges or {}),
        align_channels,
        prelu_to_relu,
        check,
        atol,
        rtol,
        target,
        max_growth,
        allow_dense,
    )
    result = settings.run(graph_to_model(graph))
    return gs.import_onnx(result.model), result
