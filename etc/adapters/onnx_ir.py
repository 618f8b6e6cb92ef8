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

from collections.abc import Mapping, Sequence

import onnx_ir as ir

from etc.adapters import PipelineSettings, modified
from etc.pipeline import Pass, PipelineResult


class EtcPass(ir.passes.FunctionalPass):
    """Runs ETC passes (names like "fold,rep,et" or Pass objects) on an ``ir.Model``."""

    def __init__(
        self,
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
    ) -> None:
        self.settings = PipelineSettings(
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
        self.last_result: PipelineResult | None = None
        self.hits: dict[str, int] = {}  # rule hits summed over every call (a manager may call it repeatedly)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = self.settings.run(ir.to_proto(model))
        self.last_result = result
        for rule, count in result.hits.items():
            self.hits[rule] = self.hits.get(rule, 0) + count
        return ir.passes.PassResult(ir.from_proto(result.model), modified(result))

    def __repr__(self) -> str:
        passes = self.settings.passes
        shown = passes if isinstance(passes, str) else ",".join(getattr(p, "name", str(p)) for p in passes)
        return f"EtcPass({shown!r})"
