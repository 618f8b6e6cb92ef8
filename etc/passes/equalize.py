"""The ``equalize`` pass: FP32-exact cross-layer equalization before INT8 quantization.

Wraps :mod:`etc.quant.equalize` (the algebra, exactness conditions and the choice of scales are documented
there)::

    Conv(W1, b1) -> Relu -> Conv(W2)   ==>   Conv(a·W1, a·b1) -> Relu -> Conv(W2 / a)     (a_c > 0)

Scales come from per-channel activation ranges measured on calibration inputs: ``feeds`` when the quantizer
passes them, else seeded 64x64 patches of the bundled calibration photos. Tensors in ``skip`` (e.g. the input of
a clip conv, whose exact 8-bit grid must not move) are left alone. ``modified=False`` when no pair changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from etc.pipeline import Pass, PassContext, PassResult


class EqualizePass(Pass):
    """Replaces Conv -> Relu -> Conv with an equivalent per-channel rescaled pair that quantizes better."""

    name = "equalize"
    summary = "cross-layer equalization across Conv-ReLU/PReLU-Conv (exact in FP32; helps INT8)"

    def __init__(
        self,
        feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
        skip: frozenset[str] = frozenset(),
        progress: Callable[[int], None] | None = None,
        act_weight: float | None = None,
    ) -> None:
        self.feeds = feeds
        self.skip = skip
        self.progress = progress
        self.act_weight = act_weight  # None: etc.quant.equalize.ACT_WEIGHT
        self.records: list = []

    def _feeds(self, model: onnx.ModelProto, ctx: PassContext) -> list[dict[str, np.ndarray]]:
        if self.feeds is not None:
            return [dict(f) for f in self.feeds]
        from etc.quant.calib import calibration_patches
        from etc.runtime import input_specs

        specs = input_specs(model)
        if len(specs) != 1 or specs[0].shape[1] not in (None, 3):
            from etc.runtime import input_sets

            return input_sets(model, ctx.options.input_ranges, sizes=((32, 32), (48, 40)))
        patches = calibration_patches("samples", 2, num=8, patch=64)
        return [{specs[0].name: p} for p in patches]

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        from etc.quant import equalize, observe

        pairs = [p for p in equalize.find_pairs(model) if p.tensor not in self.skip]
        if not pairs:
            return PassResult(model, False)
        stats = observe.collect(model, self._feeds(model, ctx), [p.tensor for p in pairs], self.progress)
        out, records = equalize.equalize(model, stats, skip=set(self.skip), act_weight=self.act_weight)
        self.records.extend(records)
        if not records:
            return PassResult(model, False)
        return PassResult(out, True, {"equalize": len(records)})


class SplitPass(Pass):
    """Replaces Conv -> Relu -> Conv with an equivalent wider pair whose dominant input channels are copied."""

    name = "split"
    summary = "duplicate channels that dominate a consumer row (exact in FP32; finer int8 weight grids)"

    def __init__(self, skip: frozenset[str] = frozenset(), max_copies: int = 3) -> None:
        self.skip = skip
        self.max_copies = max_copies
        self.records: list = []

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        from etc.quant import split

        out, records = split.split_channels(model, skip=set(self.skip), max_copies=self.max_copies)
        self.records.extend(records)
        if not records:
            return PassResult(model, False)
        return PassResult(out, True, {"split": len(records)})
