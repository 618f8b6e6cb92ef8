"""``rep``: merge re-parameterizable parallel and sequential linear conv branches (ECB, RepVGG, ACNet, DBB, SESR).

Families (see each module for its rules and exactness conditions): rep_parallel, rep_sequential, rep_concat.
"""

from __future__ import annotations

from etc.pipeline import MERGE
from etc.rules import RulePass

FAMILIES = (
    "etc.passes.rep_parallel",
    "etc.passes.rep_sequential",
    "etc.passes.rep_concat",
)


class RepPass(RulePass):
    """Merges re-parameterizable conv branches into single convs."""

    name = "rep"
    phase = MERGE
    rank = 0
    families = FAMILIES
    summary = "merge parallel/sequential linear conv branches (ECB, RepVGG, ACNet, DBB, SESR)"
