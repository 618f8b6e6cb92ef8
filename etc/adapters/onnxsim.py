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
from typing import Unpack

import onnx

from etc.adapters import PipelineSettings, SettingsKeywords, add_hits, modified
from etc.pipeline import Pass, PipelineResult


class EtcRewriter:
    """A ``custom_rewriter`` for ``onnxsim.simplify`` running ETC passes on every fixed-point round."""

    def __init__(
        self,
        passes: str | Sequence[str | Pass] = "fold,rep,et",
        **settings: Unpack[SettingsKeywords],
    ) -> None:
        self.settings = PipelineSettings.of(passes, **settings)
        self.calls = 0
        self.hits: dict[str, int] = {}

    def __call__(self, model: onnx.ModelProto) -> onnx.ModelProto | bool:
        self.calls += 1
        result: PipelineResult = self.settings.run(model)
        add_hits(self.hits, result)
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
