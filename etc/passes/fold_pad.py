"""A zero Pad in front of Conv becomes Conv padding.

    x ─► Pad(constant 0, H/W only) ─► Conv(pads p)      becomes      x ─► Conv(pads p + pad)

Exact when the Pad is constant mode with value 0, pads only the spatial axes, pads are non-negative, and every
reader of the padded tensor is a Conv (each gets the padding). Reflect/edge padding or a non-zero value differs
from a Conv's zero padding at the border and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from etc.graph import (
    consumers,
    conv_spec,
    is_graph_output,
    pad_operands,
    pads_on_axes,
    producer,
    replace_uses,
)
from etc.rules import Decline, Match, RewriteContext, Rule, RuleSet


def spatial_pads(node: gs.Node) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a 4-D zero Pad, or None if not a Pad we read; raises Decline saying why
    a Pad cannot become Conv padding."""
    pad = pad_operands(node)
    if pad.mode != "constant":
        raise Decline(f"Pad mode '{pad.mode}' differs from Conv zero padding at the border")
    if pad.pads is None:
        return None
    if pad.value is None:
        raise Decline("Pad value is not constant")
    if pad.value != 0.0:
        raise Decline("Pad value is not 0; Conv pads with zeros")
    if pad.axes_dynamic:
        return None
    pads, rank = pad.pads, len(pad.pads) // 2
    if pad.axes is not None:
        pads, rank = pads_on_axes(pads, pad.axes), 4
    if rank != 4:
        return None
    if any(p < 0 for p in pads):
        raise Decline("negative Pad (a crop) cannot become Conv padding")
    if pads[0] or pads[1] or pads[4] or pads[5]:
        raise Decline("Pad touches the batch or channel axis")
    return pads[2], pads[3], pads[6], pads[7]


@dataclass(frozen=True)
class ExtraPads:
    """The (top, left, bottom, right) padding the Convs take over from the Pad."""

    pads: tuple[int, int, int, int]


class PadIntoConv(Rule):
    """Replaces zero Pad -> Conv with Conv carrying the extra padding."""

    name = "pad_into_conv"
    ops = ("Conv",)

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        pad = producer(node.inputs[0])
        if pad is None or pad.op != "Pad":
            return None
        extra = spatial_pads(pad)
        if extra is None:
            return None
        padded = pad.outputs[0]
        readers = consumers(padded)
        if is_graph_output(ctx.graph, padded):
            raise Decline("the padded tensor is a graph output")
        if any(r.op != "Conv" or r.inputs[0] is not padded or conv_spec(r) is None for r in readers):
            raise Decline("the padded tensor is also read by something other than a Conv's data input")
        if any(r.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET") for r in readers):
            raise Decline("Conv uses auto_pad")
        return Match([pad, *readers], ExtraPads(extra))

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        pad, *convs = match.nodes
        extra = match.data.pads
        for conv in convs:
            pads = list(conv_spec(conv).pads)
            conv.attrs["pads"] = [
                pads[0] + extra[0],
                pads[1] + extra[1],
                pads[2] + extra[2],
                pads[3] + extra[3],
            ]
        replace_uses(ctx.graph, pad.outputs[0], pad.inputs[0])  # every reader is one of the convs


rules = RuleSet([PadIntoConv()])
