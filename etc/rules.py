"""Rewrite rules and the pass that applies a family of them to a fixed point.

A rule is a small object: ``match`` only reads the graph and returns a :class:`Match` (the nodes it replaces and
a dataclass of what it computed), raises :class:`Decline` naming the exactness condition that failed (reported by
``--explain``; helpers deep in a match raise it too), or returns None when the node is not its business;
``rewrite`` builds the replacement. The driver calls :meth:`Rule.find`, which turns a Decline into a
:class:`NoMatch` record, and after a rewrite retires the matched nodes nothing reads any more (a rewrite that
only takes over a node's output need not retire it). A family file ends with ``rules = RuleSet([...])`` and a
:class:`RulePass` exposes it under a short name.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import onnx
import onnx_graphsurgeon as gs

from etc.graph import Namer, cleanup, is_retired, retire, shape_view, to_gs, to_onnx
from etc.idioms import split_idiom
from etc.pipeline import Options, Pass, PassContext, PassResult

if TYPE_CHECKING:
    from etc.cost import Widening


@dataclass
class Match:
    """What a rule found: the nodes it will replace, the rule's own dataclass of what it computed while checking
    (``data``), and what the rewrite would add to the model's cost (``widening``)."""

    nodes: list[gs.Node]
    data: Any = None  # each rule's own frozen dataclass
    widening: Widening | None = None


class Decline(Exception):
    """Raised by a rule's ``match`` (or a helper it calls) when the node has the rule's shape but an exactness
    condition fails; ``reason`` says which, ``node`` names where the match failed (default: the matched root)."""

    def __init__(self, reason: str, node: gs.Node | str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node.name if isinstance(node, gs.Node) else node


@dataclass
class NoMatch:
    """The record of a :class:`Decline`: the node has the rule's shape but an exactness condition fails."""

    reason: str
    node: str | None = None


class RewriteContext:
    """What a rule sees: the graph, a namer, the user's options and (lazily) value ranges."""

    def __init__(self, graph: gs.Graph, options: Options) -> None:
        self.graph = graph
        self.options = options
        self.namer = Namer.for_graph(graph)
        self._ranges = None

    @property
    def ranges(self):
        """Interval facts per tensor (see etc.ranges); rewrites preserve values so facts stay true."""
        if self._ranges is None:
            from etc.ranges import ValueRanges

            self._ranges = ValueRanges(self.graph, self.options.input_ranges)
        return self._ranges


class Rule:
    """Replaces one pattern with an equivalent one. Subclasses set ``ops`` (root op types) and a docstring."""

    name: ClassVar[str] = ""
    ops: ClassVar[tuple[str, ...]] = ()

    def match(self, ctx: RewriteContext, node: gs.Node) -> Match | None:
        """A Match, None (not this rule's business), or raises :class:`Decline`."""
        raise NotImplementedError

    def find(self, ctx: RewriteContext, node: gs.Node) -> Match | NoMatch | None:
        """``match`` with a raised :class:`Decline` returned as its :class:`NoMatch` record; a match that takes
        some but not all nodes of an activation or normalization idiom (etc.idioms) is declined too."""
        try:
            found = self.match(ctx, node)
        except Decline as declined:
            return NoMatch(declined.reason, declined.node)
        if isinstance(found, Match):
            split = split_idiom(found.nodes)
            if split is not None:
                return NoMatch(
                    f"would split a {split.kind} idiom (kept whole: runtimes fuse or pattern-match it as a unit)"
                )
        return found

    def rewrite(self, ctx: RewriteContext, match: Match) -> None:
        raise NotImplementedError

    @property
    def rule_name(self) -> str:
        return self.name or type(self).__name__


ANY_OP = "*"  # a rule with ops = (ANY_OP,) is offered every node


class RuleSet:
    """An ordered family of rules, indexed by root op type."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.by_op: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for op in rule.ops:
                self.by_op.setdefault(op, []).append(rule)

    def offered(self, op: str) -> tuple[Rule, ...]:
        """The rules offered a node of type ``op``, in the order the driver tries them: its own, then ANY_OP's."""
        return (*self.by_op.get(op, ()), *self.by_op.get(ANY_OP, ()))

    def __add__(self, other: RuleSet) -> RuleSet:
        return RuleSet([*self.rules, *other.rules])

    def __iter__(self):
        return iter(self.rules)


def apply_rules(
    graph: gs.Graph,
    rules: RuleSet,
    options: Options,
    *,
    pass_ctx: PassContext | None = None,
    pass_name: str = "",
    max_sweeps: int = 50,
) -> dict[str, int]:
    """Sweeps the graph in topological order applying the first matching rule per node, until nothing matches.

    Nodes a rewrite creates are offered to the rules right away (a worklist), so a cascade such as a skip carried
    up through many layers completes in one sweep instead of one layer per sweep. Returns hit counts per rule.
    Retired nodes are skipped; cleanup runs between sweeps.
    """
    hits: dict[str, int] = {}
    ctx = RewriteContext(graph, options)
    tracer = pass_ctx.tracer if pass_ctx is not None else None
    status = _Status(pass_ctx, pass_name)
    for sweep in range(1, max_sweeps + 1):
        changed = False
        queue = deque(graph.nodes)
        # rewrites per sweep; a rule pair undoing each other stops here
        limit = budget = 20 * len(queue) + 1000
        while queue:
            node = queue.popleft()
            if is_retired(node):
                continue
            offered = rules.offered(node.op)
            if offered:
                status.offered(sweep, len(queue), hits)
            for rule in offered:
                found = rule.find(ctx, node)
                if isinstance(found, Match) and not _admitted(pass_ctx, pass_name, rule, node, found):
                    continue
                if isinstance(found, Match):
                    if tracer is not None:
                        tensors = (tuple(t.name for t in node.inputs), tuple(t.name for t in node.outputs))
                        tracer.hit(pass_name, rule.rule_name, _where(node), node.op, *tensors)
                    created_from = len(graph.nodes)
                    rule.rewrite(ctx, found)
                    retire_unread(graph, found.nodes)
                    hits[rule.rule_name] = hits.get(rule.rule_name, 0) + 1
                    changed = True
                    budget -= 1
                    if budget > 0:
                        queue.extendleft(reversed(graph.nodes[created_from:]))
                    break
                if isinstance(found, NoMatch) and tracer is not None:
                    tracer.decline(pass_name, rule.rule_name, found.node or node.name, found.reason)
            if budget <= 0:
                _limit(pass_ctx, f"pass '{pass_name}' stopped a sweep after {limit} rewrites")
                break
        if not changed:
            break
        cleanup(graph)
    else:
        if _pending(ctx, rules, pass_ctx):
            _limit(pass_ctx, f"pass '{pass_name}' still had rewrites to make after {max_sweeps} sweeps")
    return hits


class _Status:
    """Counts the candidates (nodes offered to rules) of a pass context and, at most twice a second, tells its
    ``live`` status line where the sweep is."""

    def __init__(self, pass_ctx: PassContext | None, pass_name: str) -> None:
        self.pass_ctx, self.pass_name = pass_ctx, pass_name
        self.live = pass_ctx.live if pass_ctx is not None else None
        self.shown = time.perf_counter()

    def offered(self, sweep: int, left: int, hits: dict[str, int]) -> None:
        if self.pass_ctx is None:
            return
        self.pass_ctx.candidates += 1
        if self.live is not None and time.perf_counter() - self.shown > 0.5:
            self.shown = time.perf_counter()
            self.live(
                f"{self.pass_name}: sweep {sweep}, {self.pass_ctx.candidates} candidates offered, {left} queued, "
                f"{sum(hits.values())} rewrites"
            )


def retire_unread(graph: gs.Graph, nodes: Sequence[gs.Node]) -> None:
    """Retires the nodes (a match's) whose outputs no live node reads any more and that produce no graph
    output, repeatedly, so a chain the rewrite replaced goes as a whole. The driver calls it after every rewrite."""
    outputs = {id(t) for t in graph.outputs}
    left = list(nodes)
    while True:
        unread = [n for n in left if not any(id(t) in outputs or t.outputs for t in n.outputs)]
        if not unread:
            return
        retire(unread)  # a node that handed its output on (adopt_output) lets go of its inputs here
        left = [n for n in left if not any(n is u for u in unread)]


def _pending(ctx: RewriteContext, rules: RuleSet, pass_ctx: PassContext | None) -> bool:
    """Whether some rule would still rewrite some node (matching only; nothing changes)."""
    for node in list(ctx.graph.nodes):
        if is_retired(node):
            continue
        for rule in rules.offered(node.op):
            found = rule.find(ctx, node)
            if isinstance(found, Match) and not _budgeted(pass_ctx, found):
                return True
    return False


def _limit(pass_ctx: PassContext | None, message: str) -> None:
    """A sweep limit was hit: a LimitWarning (and a note in the run's report), never a quiet stop."""
    text = (
        f"{message}; the result is equivalent but may not be fully rewritten (two rules may undo each other)"
    )
    if pass_ctx is not None:
        pass_ctx.warn(text)
    else:
        import warnings

        from etc.errors import LimitWarning

        warnings.warn(text, LimitWarning, stacklevel=3)


def _admitted(pass_ctx: PassContext | None, pass_name: str, rule: Rule, node: gs.Node, found: Match) -> bool:
    """Whether the run's cost budget lets a widening match (``found.widening``, etc.cost.Widening) go ahead;
    a decline is recorded with its figure. Without a budget (a rule applied outside a pipeline) every match is."""
    if not _budgeted(pass_ctx, found):
        return True
    reason = pass_ctx.budget.admit(found.widening, rule.rule_name, _where(node))
    if reason is None:
        return True
    pass_ctx.tracer.decline(pass_name, rule.rule_name, _where(node), reason)
    return False


def _budgeted(pass_ctx: PassContext | None, found: Match) -> bool:
    """Whether a match answers to the run's cost budget: it widens and the run has a budget."""
    return found.widening is not None and pass_ctx is not None and pass_ctx.budget is not None


def _where(node: gs.Node) -> str:
    """A node's name for hit and decline records (its first output's name when it has none)."""
    return node.name or (node.outputs[0].name if node.outputs else "")


class RulePass(Pass):
    """A pass made of one or more rule families: ``families`` names their modules (run as one rule set, in
    that order), or ``rules`` holds the rules themselves; override ``rule_sets`` to run several sets in turn."""

    rules: RuleSet = RuleSet([])
    families: tuple[str, ...] = ()

    def rule_sets(self) -> Sequence[RuleSet]:
        return [family_rules(self.families)] if self.families else [self.rules]

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        graph = _graph_for(model, ctx)
        hits: dict[str, int] = {}
        for family in self.rule_sets():
            for rule, count in apply_rules(
                graph, family, ctx.options, pass_ctx=ctx, pass_name=self.name
            ).items():
                hits[rule] = hits.get(rule, 0) + count
        if not hits:
            return PassResult(model, False)
        result = to_onnx(graph, model)
        _remember_graph(result, graph, ctx)
        return PassResult(result, True, hits)


_GRAPH_KEY = "rules.graph"


def _graph_for(model: onnx.ModelProto, ctx: PassContext) -> gs.Graph:
    """The graph of ``model``: the one a previous rule pass of this run left, or a fresh import.

    Importing dominates compile time on large models; consecutive rule passes hand the graph on instead. The
    cache holds the model object itself, so any other pass that returns a new model invalidates it.
    """
    cached = ctx.cache.get(_GRAPH_KEY)
    if cached is not None and cached[0] is model:
        return cached[1]
    graph = to_gs(model)
    ctx.cache[_GRAPH_KEY] = (model, graph)
    return graph


def _remember_graph(model: onnx.ModelProto, graph: gs.Graph, ctx: PassContext) -> None:
    """Caches ``graph`` as the graph of ``model``, with tensor shapes re-inferred as a fresh import would see."""
    try:
        inferred = onnx.shape_inference.infer_shapes(shape_view(model), strict_mode=False, data_prop=True)
    except Exception:
        ctx.cache.pop(_GRAPH_KEY, None)
        return
    infos = {v.name: v for v in inferred.graph.value_info}
    outputs = {t.name for t in graph.outputs}
    for name, tensor in graph.tensors().items():
        if isinstance(tensor, gs.Constant) or name in outputs or any(t is tensor for t in graph.inputs):
            continue
        info = infos.get(name)
        if info is None:
            tensor.shape = None
            continue
        ttype = info.type.tensor_type
        tensor.shape = (
            [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in ttype.shape.dim]
            if ttype.HasField("shape")
            else None
        )
        if ttype.elem_type:
            tensor.dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
    ctx.cache[_GRAPH_KEY] = (model, graph)


def load_families(modules: Sequence[str]) -> list[RuleSet]:
    """The ``rules`` RuleSet of each family module, in order; a module that is missing or has no RuleSet
    named ``rules`` is an error (a pass must not quietly lose a family)."""
    import importlib

    families = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise ModuleNotFoundError(
                f"rule family module '{name}' is missing from this build", name=name
            ) from None
        if not isinstance(getattr(module, "rules", None), RuleSet):
            raise TypeError(f"rule family module '{name}' has no RuleSet named 'rules'")
        families.append(module.rules)
    return families


def family_rules(modules: Sequence[str]) -> RuleSet:
    """One RuleSet of every rule of the family ``modules``, in their order."""
    return RuleSet([rule for family in load_families(modules) for rule in family])
