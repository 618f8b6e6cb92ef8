"""Our pipeline as an onnxsim ``custom_rewriter``.

onnxsim 0.8 accepts ``simplify(model, custom_rewriter=f)`` with ``f: ModelProto -> ModelProto | None | False``
and runs ``f`` inside its own fixed point, between its optimizer, shape inference and constant folding, so each
side can unlock the other. :class:`EtcRewriter` is such a callable; it returns ``False`` when none of our passes
changed anything, which lets onnxsim skip copying the model back.

    import onnxsim
    from etc.adapters.onnxsim import EtcRewriter

    simplified, ok = onnxsim.simplify(model, custom_rewriter=EtcRewriter("fold,rep,et"))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from etc.adapters import PipelineSettings, modified
from etc.pipeline import Pass, PipelineResult


class EtcRewriter:
    """A ``custom_rewriter`` for ``onnxsim.simplify`` running ETC passes on every fixed-point round."""

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
        self.calls = 0
        self.hits: dict[str, int] = {}

    def __call__(self, model: onnx.ModelProto) -> onnx.ModelProto | bool:
        self.calls += 1
        result: PipelineResult = self.settings.run(model)
        for rule, count in result.hits.items():
            self.hits[rule] = self.hits.get(rule, 0) + count
        return result.model if modified(result) else False


def simplify(
    model: onnx.ModelProto,
    passes: str | Sequence[str | Pass] = "fold,rep,et",
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    **onnxsim_kwargs,
) -> tuple[onnx.ModelProto, bool]:
    """``onnxsim.simplify`` with our passes plugged in as its custom rewriter; returns what onnxsim returns."""
    import onnxsim

    rewriter = EtcRewriter(passes, input_ranges=input_ranges)
    return onnxsim.simplify(model, custom_rewriter=rewriter, **onnxsim_kwargs)
