"""Our pipeline on onnx-graphsurgeon graphs: a ``gs.Graph`` in, a new ``gs.Graph`` out.

    import onnx_graphsurgeon as gs
    from etc.adapters.graphsurgeon import optimize_graph

    plain = optimize_graph(gs.import_onnx(model), "fold,rep,et")

The input graph is not modified. Opset, model-level metadata and input/output names are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import onnx
import onnx_graphsurgeon as gs

from etc.adapters import PipelineSettings, SettingsKeywords
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
    **settings: Unpack[SettingsKeywords],
) -> gs.Graph:
    """Runs ETC passes on ``graph`` and returns the rewritten graph as a new ``gs.Graph``."""
    return optimize_graph_with_result(graph, passes, **settings)[0]


def optimize_graph_with_result(
    graph: gs.Graph,
    passes: str | Sequence[str | Pass] = "fold,rep,et",
    **settings: Unpack[SettingsKeywords],
) -> tuple[gs.Graph, PipelineResult]:
    """As :func:`optimize_graph`, also returning the pipeline record (passes, rule hits, declines)."""
    result = PipelineSettings.of(passes, **settings).run(graph_to_model(graph))
    return gs.import_onnx(result.model), result
