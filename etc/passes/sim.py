"""``sim``: onnxsim's simplifier as an optional pass (pip install onnxsim).

Useful before ``fold`` on models with unusual constant subgraphs; ETC's own ``fold`` covers what exporters
leave in super-resolution nets. The numeric instrument checks it like any other pass.
"""

from __future__ import annotations

import onnx

from etc.errors import EtcError
from etc.pipeline import CLEANUP, Pass, PassContext, PassResult, fingerprint


class SimPass(Pass):
    """Runs onnxsim.simplify (no random checks: ETC's instrument verifies)."""

    name = "sim"
    phase = CLEANUP
    rank = 0
    summary = "onnxsim simplifier (optional dependency)"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        try:
            import onnxsim
        except ImportError:
            raise EtcError("pass 'sim' needs onnxsim: pip install onnxsim") from None
        try:
            simplified, _ = onnxsim.simplify(model, check_n=0)
        except Exception as exc:
            raise EtcError(f"pass 'sim': onnxsim failed ({str(exc).splitlines()[0][:200]})") from None
        if fingerprint(simplified) == fingerprint(model):
            return PassResult(model, False)
        return PassResult(simplified, True, {"onnxsim": 1})
