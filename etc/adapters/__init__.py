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
from typing import TypedDict

import onnx

from etc.pipeline import Instrument, NumericCheck, Options, Pass, PipelineResult, run_pipeline


class SettingsKeywords(TypedDict, total=False):
    """The keywords every adapter takes after the pass list (the fields of :class:`PipelineSettings`)."""

    input_ranges: Mapping[str, tuple[float, float]] | None
    align_channels: int
    prelu_to_relu: bool
    check: bool
    atol: float
    rtol: float
    target: str
    max_growth: float
    allow_dense: bool


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
    target: str = "npu"  # "cpu": measure the candidate forms and keep the fastest (etc.target)
    max_growth: float = 1.25  # cost budget of widening rewrites (etc.cost)
    allow_dense: bool = False

    @classmethod
    def of(cls, passes: str | Sequence[str | Pass] = "fold,rep,et", **settings) -> PipelineSettings:
        """The settings of an adapter call: ``passes`` and the :class:`SettingsKeywords` it was given."""
        settings["input_ranges"] = dict(settings.get("input_ranges") or {})
        return cls(passes, **settings)

    def run(self, model: onnx.ModelProto) -> PipelineResult:
        """Runs the pipeline; with ``check`` an EquivalenceError names the first pass that changed outputs."""
        from etc.api import TARGETS, choose_cpu_candidate
        from etc.errors import EtcError

        if self.target not in TARGETS:
            raise EtcError(f"unknown target '{self.target}'; choose one of {', '.join(TARGETS)}")
        options = Options(
            dict(self.input_ranges),
            align_channels=self.align_channels,
            prelu_to_relu=self.prelu_to_relu,
            max_growth=self.max_growth,
            allow_dense=self.allow_dense,
            target=self.target,
        )
        tools: list[Instrument] = [NumericCheck(self.atol, self.rtol)] if self.check else []
        result = run_pipeline(model, self.passes, options=options, instruments=tools)
        if self.target != "npu":
            choice = choose_cpu_candidate(model, result, self.passes, options, self.target)
            result.notes.append(choice.summary())
        return result


def modified(result: PipelineResult) -> bool:
    """True when some pass of the run changed the model."""
    return any(r.modified for r in result.records)


def add_hits(total: dict[str, int], result: PipelineResult) -> None:
    """Adds a run's rule hits to ``total`` (an adapter may be called many times by its host)."""
    for rule, count in result.hits.items():
        total[rule] = total.get(rule, 0) + count
