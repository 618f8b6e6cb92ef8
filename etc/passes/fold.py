"""``fold``: constant folding, no-op removal and folding of affine ops into Conv.

Families, run in this order (see each module for its rules and their exactness conditions):
  fold_constants  evaluate nodes whose inputs are all constant, shape arithmetic on static shapes
  fold_noop       Identity, Dropout, infinite Clip, zero Pad, full Slice, same-shape Reshape/Expand, x*1, x+0
  fold_relu       Relu(Relu(x)), Max(x, 0), Clip(x, 0, inf) -> Relu
  fold_clip       Clip(Clip(x)), Clip(Relu(x)) -> one Clip on the intersected bounds
  fold_border     a 1x1 conv's bias written into the border of its padded output -> the 1x1 conv padded
  fold_scatter    in-place channel writes (ScatterND of a channel range) -> Slice + Concat
  fold_pad        zero Pad -> Conv pads
  fold_gelu       the erf GELU reordered so onnxruntime fuses it (``* x`` before ``* 0.5``)
  fold_gemm       BatchNormalization (2-D) and per-feature constants into the Gemm/MatMul beside them
  fold_gemm_parallel  Add/Sub of two Gemms reading the same input -> one Gemm (distillation heads)
  fold_bn         BatchNormalization into Conv/ConvTranspose (or a 1x1 depthwise Conv when alone)
  fold_affine     per-channel Mul/Add/Sub/Div constants into Conv weights and bias
  fold_sign       Neg into the Conv producing it or the Add/Sub reading it, Neg(Sub(a, b)) -> Sub(b, a)
"""

from __future__ import annotations

from etc.pipeline import CLEANUP
from etc.rules import RulePass

FAMILIES = (
    "etc.passes.fold_constants",
    "etc.passes.fold_noop",
    "etc.passes.fold_relu",
    "etc.passes.fold_clip",
    "etc.passes.fold_border",
    "etc.passes.fold_scatter",
    "etc.passes.fold_pad",
    "etc.passes.fold_gelu",
    "etc.passes.fold_gemm",
    "etc.passes.fold_gemm_parallel",
    "etc.passes.fold_bn",
    "etc.passes.fold_affine",
    "etc.passes.fold_sign",
)


class FoldPass(RulePass):
    """Constant folding, no-op elimination, BatchNorm/affine/Pad folding into Conv."""

    name = "fold"
    phase = CLEANUP
    rank = 1
    families = FAMILIES
    summary = "constant folding, no-op removal, BatchNorm/affine/Pad folding into Conv"
