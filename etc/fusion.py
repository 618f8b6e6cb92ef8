"""What onnxruntime makes of a model: its optimized CPU graph, node counts and fused ops.

onnxruntime rewrites a model before running it: Div/Erf/Add/Mul/Mul becomes one ``Gelu``, Conv+Add(+Relu) one
``FusedConv``, Conv chains move to the blocked NCHWc layout (``ReorderInput``/``ReorderOutput`` at the borders).
An exact rewrite that breaks one of these patterns can make the model slower even with fewer MACs, so the forms
ETC returns are compared here by the graph onnxruntime actually runs.

The level is ``ORT_ENABLE_ALL``: the layout level (NCHWc and its reorders) is the one that decides CPU latency,
and ``ORT_ENABLE_EXTENDED`` would stop before it and hide the reorders a broken chain adds (Gelu and FusedConv
are extended-level fusions, so they show at both). The graph is saved through
``SessionOptions.optimized_model_filepath`` as ONNX with contrib (``com.microsoft``, ``com.microsoft.nchwc``)
ops; only op types are read back. Under NCHWc a Conv+Add or Conv+activation pair becomes one NCHWc ``Conv``
carrying the sum input or an ``activation`` attribute, counted with ``FusedConv`` by :attr:`fused_conv`.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass

import onnx

FUSED_OPS = ("Gelu", "FastGelu", "BiasGelu", "FusedConv", "FusedGemm", "FusedMatMul", "QuickGelu")
REORDERS = ("ReorderInput", "ReorderOutput")


@dataclass(frozen=True)
class OptimizedGraph:
    """onnxruntime's optimized graph of a model, summarized: its op histogram (domain dropped) and the convs
    that carry a fused Add or activation (``FusedConv`` or an NCHWc ``Conv`` with a sum input or activation)."""

    ops: Counter
    fused_conv: int

    @property
    def nodes(self) -> int:
        return sum(self.ops.values())

    @property
    def fused(self) -> dict[str, int]:
        return {op: self.ops[op] for op in FUSED_OPS if self.ops[op]}

    @property
    def gelu(self) -> int:
        return self.ops["Gelu"] + self.ops["FastGelu"] + self.ops["BiasGelu"]

    @property
    def reorders(self) -> int:
        return sum(self.ops[op] for op in REORDERS)

    def summary(self) -> str:
        fused = ", ".join(f"{op} {n}" for op, n in self.fused.items()) or "none"
        return f"{self.nodes} nodes (fused: {fused}; convs with a fused add/activation {self.fused_conv}; NCHWc reorders {self.reorders})"


def optimized_model(model: onnx.ModelProto, *, level: str = "all") -> onnx.ModelProto:
    """onnxruntime's optimized CPU graph of ``model`` (``level``: "basic", "extended" or "all")."""
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="etc-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        options.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(path, load_external_data=False)


def optimized_graph(model: onnx.ModelProto, *, level: str = "all") -> OptimizedGraph:
    """The op histogram of onnxruntime's optimized CPU graph of ``model``."""
    optimized = optimized_model(model, level=level)
    ops = Counter(node.op_type for node in optimized.graph.node)
    return OptimizedGraph(ops, sum(_carries_fusion(node) for node in optimized.graph.node))


def _carries_fusion(node: onnx.NodeProto) -> bool:
    if node.op_type == "FusedConv":
        return True
    if node.op_type != "Conv" or node.domain != "com.microsoft.nchwc":
        return False
    has_sum = len(node.input) > 3 and node.input[3] != ""
    return has_sum or any(a.name == "activation" for a in node.attribute)
