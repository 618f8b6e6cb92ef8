"""ETC, the Equivalent Transformation Compiler.

Rewrites ONNX conv nets into equivalent plain Conv/ReLU/DepthToSpace graphs, proves the rewrite numerically
with onnxruntime and quantizes the result to INT8 QDQ. Heavy modules load lazily so ``import etc`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
