"""Our pipeline as an onnx-ir pass, usable in ``onnx_ir.passes.PassManager`` and onnxscript's pass lists.

    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass
    from etc.adapters.onnx_ir import EtcPass

    manager = ir.passes.PassManager([EtcPass("fold,rep,et"), RemoveUnusedNodesPass()])
    result = manager(ir.from_proto(model))          # result.model is an ir.Model, result.modified a bool

``EtcPass`` is functional: it never touches the model it is given and always returns a new one (onnx-ir checks
this). The conversion goes through ``ModelProto`` because our rules work on onnx-graphsurgeon graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import onnx_ir as ir

from etc.adapters import PipelineSettings, SettingsKeywords, add_hits, modified
from etc.pipeline import Pass, PipelineResult


class EtcPass(ir.passes.FunctionalPass):
    """Runs ETC passes (names like "fold,rep,et" or Pass objects) on an ``ir.Model``."""

    def __init__(
        self,
        passes: str | Sequence[str | Pass] = "fold,rep,et",
        **settings: Unpack[SettingsKeywords],
    ) -> None:
        self.settings = PipelineSettings.of(passes, **settings)
        self.last_result: PipelineResult | None = None
        self.hits: dict[str, int] = {}  # rule hits summed over every call (a manager may call it repeatedly)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = self.settings.run(ir.to_proto(model))
        self.last_result = result
        add_hits(self.hits, result)
        return ir.passes.PassResult(ir.from_proto(result.model), modified(result))

    def __repr__(self) -> str:
        passes = self.settings.passes
        shown = passes if isinstance(passes, str) else ",".join(getattr(p, "name", str(p)) for p in passes)
        return f"EtcPass({shown!r})"
