"""Our passes inside other toolchains: onnx-ir/onnxscript pass managers, onnxsim, onnx-graphsurgeon.

Each adapter converts the host's model type to an ``onnx.ModelProto``, runs the ordinary pipeline (with the
per-pass numeric check on by default) and converts back. The host libraries are imported only by the adapter
that needs them.

    etc.adapters.onnx_ir.EtcPass("fold,rep,et")          # an onnx_ir.passes.FunctionalPass
    etc.adapters.onnxsim.EtcRewriter("fold,rep,et")      # onnxsim.simplify(..., custom_rewriter=...)
    etc.adapters.graphsurgeon.optimize_graph(graph)      # gs.Graph -> gs.Graph
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from etc.pipeline import Instrument, NumericCheck, Options, Pass, PipelineResult, run_pipeline


@dataclass
class PipelineSettings:
    """What an adapter runs: the pass list, the declared input ranges and the numeric check."""

    passes: str | Sequence[str | Pass] = "fold,rep,et"
    input_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    align_channels: int = 1
    prelu_to_relu: bool = False
    check: bool = True
    atol: float = 1e-5
    rtol: float = 1e-5

    def run(self, model: onnx.ModelProto) -> PipelineResult:
        """Runs the pipeline; with ``check`` an EquivalenceError names the first pass that changed outputs."""
        options = Options(
            dict(self.input_ranges), align_channels=self.align_channels, prelu_to_relu=self.prelu_to_relu
        )
        tools: list[Instrument] = [NumericCheck(self.atol, self.rtol)] if self.check else []
        return run_pipeline(model, self.passes, options=options, instruments=tools)


def modified(result: PipelineResult) -> bool:
    """True when some pass of the run changed the model."""
    return any(r.modified for r in result.records)
