"""ETC, the Equivalent Transformation Compiler.

Rewrites ONNX conv nets into equivalent plain Conv/ReLU/DepthToSpace graphs, proves the rewrite numerically
with onnxruntime and quantizes the result to INT8 QDQ. Heavy modules load lazily so ``import etc`` stays fast.

    import etc
    plain, report = etc.optimize("model.onnx", passes="fold,rep,et")
"""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "optimize": "etc.api",
    "verify": "etc.api",
    "OptimizeReport": "etc.api",
    "write_report": "etc.report",
    "HitRecorder": "etc.report",
    "quantize": "etc.quant",
    "Pass": "etc.pipeline",
    "PassResult": "etc.pipeline",
    "PassContext": "etc.pipeline",
    "Options": "etc.pipeline",
    "register_pass": "etc.pipeline",
    "available_passes": "etc.pipeline",
    "run_pipeline": "etc.pipeline",
    "Rule": "etc.rules",
    "RuleSet": "etc.rules",
    "RulePass": "etc.rules",
    "EtcError": "etc.errors",
}

__all__ = ["__version__", *_LAZY]


class _Package(types.ModuleType):
    """The ``etc`` package object. Loading the submodule etc.verify would normally bind ``etc.verify`` to that
    module and hide the API function of the same name; this keeps the function. The module stays importable
    (``from etc.verify import verify``), but ``import etc.verify as m`` yields the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'etc' has no attribute {name!r}")
