"""The et tests' names for the shared builder and single-family runner (etc.testing)."""

from __future__ import annotations

from etc.testing import GraphBuilder as Builder
from etc.testing import conv_kernels, ops, reasons, run_family

__all__ = ["Builder", "conv_kernels", "ops", "reasons", "run_family"]
