"""``et``: the equivalent transformation into plain Conv/ReLU/DepthToSpace graphs (ETDS, ABPN, ECBSR).

Families (see each module for its rules and exactness conditions): et_repeat (anchors and repeats as 1x1
selection convs), et_add (adds of convs as one conv over concatenated inputs), et_d2s (elementwise ops commuted
through DepthToSpace), et_carry (skips carried through Conv+ReLU as identity channels), et_dual (dual streams as
block-triangular convs), et_clip (Clip as two Conv+ReLU), et_prelu (PRelu/LeakyRelu as ReLU on doubled
channels, only with --prelu), et_convtranspose, et_resize, et_slice, et_align (--align-channels).
"""

from __future__ import annotations

from etc.rules import RulePass, RuleSet, load_families

FAMILIES = (
    "etc.passes.et_repeat",
    "etc.passes.et_slice",
    "etc.passes.et_convtranspose",
    "etc.passes.et_resize",
    "etc.passes.et_prelu",
    "etc.passes.et_d2s",
    "etc.passes.et_add",
    "etc.passes.et_carry",
    "etc.passes.et_dual",
    "etc.passes.et_clip",
    "etc.passes.et_align",
)


class EtPass(RulePass):
    """Rewrites anchors, skips, dual streams, clips and activations into plain Conv/ReLU/DepthToSpace."""

    name = "et"
    summary = "anchors, skips, dual streams, clips, PReLU, transposed convs -> Conv/ReLU/DepthToSpace"

    def rule_sets(self) -> list[RuleSet]:
        return [RuleSet([rule for family in load_families(FAMILIES) for rule in family])]
