"""``et``: the equivalent transformation into plain Conv/ReLU/DepthToSpace graphs (ETDS, ABPN, ECBSR).

Families (see each module for its rules and exactness conditions): et_repeat (anchors and repeats as 1x1
selection convs), et_add (adds of convs as one conv over concatenated inputs), et_d2s (elementwise ops commuted
through DepthToSpace), et_carry (skips carried through Conv+ReLU as identity channels), et_dual (dual streams as
block-triangular convs), et_clip (Clip as two Conv+ReLU), et_prelu (PRelu/LeakyRelu as ReLU on doubled
channels, only with --prelu), et_convtranspose, et_resize, et_slice, et_align (--align-channels).

The families run as rule sets in three phases, each to a fixed point: first everything but et_carry (so ETDS's
streams merge from the last block upward while their tensors become single-reader, instead of being carried as
skips), then everything including et_carry, then et_align on the finished graph, so widths are rounded once, after
every merge has settled the channel counts. Rules that widen (et_add, et_carry, et_dual, et_prelu, et_align,
et_slice and et_repeat's selection convs) declare their added MACs and the pipeline's cost budget (etc.cost)
accepts or declines each.

ABPN + clamp, as exported:                         after et:
    x ─> Conv ─> Relu ─> ... ─> Conv_h ─> Relu ─> Conv_l ─┐      x ─> Conv(3 -> C+3) ─> Relu ─> ...
    x ─> Unsqueeze ─> Tile|Expand ─> Reshape ────────────> Add       ─> Conv_h(-> 3s²+3) ─> Relu
                                     ─> DepthToSpace ─> Clip(0, 1)   ─> Conv(-[W_l | S], 1 - b) ─> Relu
                                                                     ─> Conv1x1(-I, 1) ─> Relu ─> DepthToSpace
(repeat -> 1x1 selection conv S; Add -> conv over Concat(h, x); Concat carried up to the first conv; Clip moved
before DepthToSpace and split into two Conv+ReLU.)
"""

from __future__ import annotations

from etc.pipeline import WIDEN
from etc.rules import RulePass, RuleSet, family_rules

FAMILIES = (
    "etc.passes.et_slice",  # before et_repeat: a channel Slice folds into its producer when it can
    "etc.passes.et_repeat",
    "etc.passes.et_convtranspose",
    "etc.passes.et_resize",
    "etc.passes.et_prelu",
    "etc.passes.et_d2s",
    "etc.passes.et_add",
    "etc.passes.et_carry",
    "etc.passes.et_dual",
    "etc.passes.et_clip",
)
CARRY = "etc.passes.et_carry"
FINISHING = ("etc.passes.et_align",)


class EtPass(RulePass):
    """Rewrites anchors, skips, dual streams, clips and activations into plain Conv/ReLU/DepthToSpace."""

    name = "et"
    phase = WIDEN
    rank = 1
    summary = "anchors, skips, dual streams, clips, PReLU, transposed convs -> Conv/ReLU/DepthToSpace"

    def rule_sets(self) -> list[RuleSet]:
        merge = family_rules([f for f in FAMILIES if f != CARRY])
        return [merge, family_rules(FAMILIES), family_rules(FINISHING)]
