"""Nearest upsampling by an integer factor as a 1x1 selection Conv plus DepthToSpace.

    x ── Resize(nearest, scale s on H and W) ──► y
becomes
    x ── Conv1x1(S) ── C·s² channels ──► DepthToSpace(s, CRD) ──► y

Weight algebra: S[o, i] = 1 when i = o div s² (repeat_interleave order: s² copies of channel 0, then of
channel 1, ...). DepthToSpace CRD puts channel c·s² + r_h·s + r_w at pixel (s·q + r_h, s·q' + r_w), so every
pixel of the s x s block receives x[c, q, q'], which is y[c, s·q + r_h, s·q' + r_w] for a pure repeat.
(Tile order, channel k·C + c, would need DCR; Tile + CRD mixes channels.) Below opset 11 DepthToSpace has no
mode attribute and is DCR, so there the kernel uses the Tile order i = o mod C.

When is nearest Resize a pure repeat (output row Y = s·q + r reads input row q)? The source coordinate is
rounded by ``nearest_mode``; with integer s and output size s·H:
    half_pixel, half_pixel_symmetric, pytorch_half_pixel:  q + (r + 0.5)/s - 0.5, the fraction lies in
        (-0.5, 0.5) with margin 0.5/s            -> repeat for round_prefer_floor and round_prefer_ceil
    asymmetric:            q + r/s               -> repeat for floor; for round_prefer_floor only when s = 2
                                                    (r/s = 0.5 is a tie, rounded down)
    tf_half_pixel_for_nn:  q + (r + 0.5)/s       -> repeat for floor
    align_corners:         Y·(H-1)/(s·H-1) depends on H; for s = 2 it rounds to q in exact arithmetic, but
                           the margin shrinks like 1/H and float32 breaks it (onnxruntime, measured: wrong
                           from H = 3000 rows), so it is declined
    tf_crop_and_resize, ceil, round_prefer_ceil with asymmetric ... -> not a repeat (declined)
Resize-10 and Upsample-7/9 (nearest) compute asymmetric + floor (checked in onnxruntime).
Every claim is checked numerically in tests/test_et_resize.py.

Exact when: mode nearest, scales (or static sizes) 1 on batch and channels and the same integer s >= 2 on
H and W, a coordinate/rounding combination from the list above, and a known channel count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from etc.convmath import selection_kernel
from etc.graph import (
    ConvSpec,
    const_value,
    input_at,
    make_conv,
    make_node,
    shape_or_conv_channels,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet

ROUND = ("round_prefer_floor", "round_prefer_ceil")
# (coordinate_transformation_mode, nearest_mode) -> scales for which nearest Resize is a pure repeat
REPEAT_WHEN: dict[tuple[str, str], str] = {
    **{
        (mode, rounding): "any"
        for mode in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel")
        for rounding in ROUND
    },
    ("asymmetric", "floor"): "any",
    ("asymmetric", "round_prefer_floor"): "2",
    ("tf_half_pixel_for_nn", "floor"): "any",
}


def graph_opset(ctx: RewriteContext) -> int:
    """The default-domain opset of the graph (11 when unknown)."""
    return int(getattr(ctx.graph, "opset", None) or 11)


def _text(node: gs.Node, key: str, default: str) -> str:
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def is_repeat(coordinate_mode: str, nearest_mode: str, scale: int) -> bool:
    """True when nearest Resize with these attributes and integer ``scale`` copies each pixel s x s times."""
    when = REPEAT_WHEN.get((coordinate_mode, nearest_mode))
    return when == "any" or (when is not None and int(when) == scale)


def _semantics(node: gs.Node, opset: int) -> tuple[str, str]:
    if node.op == "Upsample" or opset < 11:
        return "asymmetric", "floor"
    return _text(node, "coordinate_transformation_mode", "half_pixel"), _text(
        node, "nearest_mode", "round_prefer_floor"
    )


def _input_shape(x: gs.Tensor) -> list[int | None]:
    shape = list(x.shape or [])
    return [int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape]


def _full_scales(node: gs.Node, opset: int) -> np.ndarray:
    """The per-axis scale factors of a 4-D Resize/Upsample; raises Decline when they are unknown."""
    if node.op == "Upsample" and "scales" in node.attrs:
        return np.asarray(node.attrs["scales"], dtype=np.float64)
    scales_at = 1 if (node.op == "Upsample" or opset < 11) else 2
    scales_in = input_at(node, scales_at)
    scales = const_value(scales_in)
    if scales_in is not None and scales is None:
        raise Decline("scales are not constant")
    axes = [int(a) for a in node.attrs.get("axes", range(4))]
    axes = [a + 4 if a < 0 else a for a in axes]
    if scales is not None and scales.size:
        given = np.asarray(scales, dtype=np.float64).reshape(-1)
    else:
        sizes_in = input_at(node, 3) if scales_at == 2 else None
        sizes = const_value(sizes_in)
        if sizes is None:
            raise Decline("neither constant scales nor constant sizes are given")
        if _text(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            raise Decline("sizes with keep_aspect_ratio_policy other than stretch")
        shape = _input_shape(node.inputs[0])
        dims = [shape[a] if a < len(shape) else None for a in axes]
        if len(shape) != 4 or any(d is None for d in dims):
            raise Decline("sizes are given but the input shape is not static")
        given = np.asarray(sizes, dtype=np.float64).reshape(-1) / np.asarray(dims, dtype=np.float64)
    if len(given) != len(axes):
        raise Decline(f"{len(given)} scales for {len(axes)} axes")
    full = np.ones(4)
    full[axes] = given
    return full


@dataclass(frozen=True)
class Upsampling:
    """The integer factor of a nearest Resize and the channel count of its input."""

    scale: int
    channels: int


class NearestResizeToConvD2S(Rule):
    """Replaces nearest Resize/Upsample by an integer factor with a 1x1 selection Conv and DepthToSpace."""

    name = "nearest_resize_to_conv_d2s"
    ops = ("Resize", "Upsample")

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        mode = _text(node, "mode", "nearest")
        if mode != "nearest":
            raise Decline(f"mode {mode} is not a repeat (only nearest is)")
        opset = graph_opset(ctx)
        scales = _full_scales(node, opset)
        if len(scales) != 4:
            raise Decline(f"input rank is {len(scales)}, not 4")
        if scales[0] != 1 or scales[1] != 1:
            raise Decline(f"scales {scales.tolist()} change the batch or channel axis")
        sh, sw = scales[2], scales[3]
        if sh != sw:
            raise Decline(f"scales {sh:g} and {sw:g} differ; DepthToSpace has one block size")
        if sh != round(sh) or sh < 2:
            raise Decline(f"scale {sh:g} is not an integer >= 2")
        s = int(sh)
        coordinate_mode, nearest_mode = _semantics(node, opset)
        if not is_repeat(coordinate_mode, nearest_mode, s):
            raise Decline(
                f"coordinate_transformation_mode={coordinate_mode} with nearest_mode={nearest_mode} at scale {s} "
                "is not a pure pixel repeat"
            )
        count = shape_or_conv_channels(node.inputs[0])
        if count is None:
            raise Decline("channel count of the input is unknown")
        return Match([node], Upsampling(s, count))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        (node,) = match.nodes
        s, count = match.data.scale, match.data.channels
        x, y = node.inputs[0], node.outputs[0]
        base = node.name or "resize"
        crd = graph_opset(ctx) >= 11  # DepthToSpace-1 has no mode attribute: DCR
        copies = np.arange(count * s * s)
        kernel = selection_kernel(copies // (s * s) if crd else copies % count, count)
        spec = ConvSpec(kernel=(1, 1), pads=(0, 0, 0, 0))
        conv = make_conv(ctx.graph, ctx.namer, x, kernel, None, spec, name=f"{base}_copies")
        attrs = {"blocksize": s, "mode": "CRD"} if crd else {"blocksize": s}
        make_node(
            ctx.graph, ctx.namer, "DepthToSpace", conv.outputs, attrs=attrs, output=y, name=f"{base}_d2s"
        )


rules = RuleSet([NearestResizeToConvD2S()])
