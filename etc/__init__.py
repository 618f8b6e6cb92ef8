"""ETC, the Equivalent Transformation Compiler.

Rewrites ONNX conv nets into equivalent plain Conv/ReLU/DepthToSpace graphs, proves the rewrite numerically
with onnxruntime and quantizes the result to INT8 QDQ. Heavy modules load lazily so ``import etc`` stays fast;
``dir(etc)`` lists the lazy names too.

    import etc
    plain, report = etc.optimize("model.onnx", passes="fold,rep,et")
    int8, qreport = etc.quantize(plain, calib="samples")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "optimize": "etc.api",
    "verify": "etc.api",
    "OptimizeReport": "etc.api",
    "BudgetReport": "etc.api",
    "write_report": "etc.tools.report",
    "HitRecorder": "etc.tools.report",
    "quantize": "etc.quant",
    "QuantConfig": "etc.quant",
    "QuantReport": "etc.quant",
    "Pass": "etc.pipeline",
    "PassResult": "etc.pipeline",
    "PassContext": "etc.pipeline",
    "Options": "etc.pipeline",
    "register_pass": "etc.pipeline",
    "available_passes": "etc.pipeline",
    "run_pipeline": "etc.pipeline",
    "model_cost": "etc.cost",
    "Rule": "etc.rules",
    "RuleSet": "etc.rules",
    "RulePass": "etc.rules",
    "EtcError": "etc.errors",
    "BadModelError": "etc.errors",
    "UnknownPassError": "etc.errors",
    "EquivalenceError": "etc.errors",
    "OscillationError": "etc.errors",
    "PassContractError": "etc.errors",
    "UnrunnableModelError": "etc.errors",
    "LimitWarning": "etc.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'etc' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's own names and the lazy ones, so tab completion offers ``etc.optimize`` before first use."""
    return sorted((set(globals()) - {"Any", "annotations"}) | set(_LAZY))
