"""Passes, their registry and the pipeline that runs them to a fixed point under instruments.

A pass maps a model to a model and reports honestly: ``modified=False`` means the returned model is the input
object, byte-identical. The pipeline runs the named passes in a canonical phase order (cleanup, merge, widen,
finish; :func:`canonical_order`), so the order a user names them in does not matter, repeats the list until a
whole round changes nothing and stops with :class:`OscillationError` when a model it already produced comes back.
Widening passes answer to a cost budget (etc.cost). Running out of rounds (or a rule driver out of sweeps) warns
with :class:`LimitWarning`; nothing stops quietly. Instruments (numeric check, timing, dumping) wrap every pass
instead of living inside them.
"""

from __future__ import annotations

import hashlib
import importlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from etc.errors import EquivalenceError, LimitWarning, OscillationError, PassContractError, UnknownPassError

if TYPE_CHECKING:
    from etc.cost import CostBudget


@dataclass
class DeclineNote:
    """A rule that looked at a node and refused, with the reason (shown by ``--explain``)."""

    pass_name: str
    rule: str
    node: str
    reason: str

    def __str__(self) -> str:
        return f"{self.pass_name}/{self.rule} declined at {self.node}: {self.reason}"


@dataclass(frozen=True)
class HitSite:
    """Where a rule fired: the pass, the rule, the name and op type of the node it matched at, and the tensors
    that node read and wrote then (so a node the pass itself created can still be placed in a drawn graph)."""

    pass_name: str
    rule: str
    node: str
    op: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass
class Tracer:
    """What the rules of one run did: where each fired (``hits``) and where each refused and why
    (``declines``, shown by ``--explain``). The rule driver reports to the tracer of its PassContext."""

    hits: list[HitSite] = field(default_factory=list)
    declines: list[DeclineNote] = field(default_factory=list)

    def hit(
        self,
        pass_name: str,
        rule: str,
        node: str,
        op: str,
        inputs: tuple[str, ...] = (),
        outputs: tuple[str, ...] = (),
    ) -> None:
        self.hits.append(HitSite(pass_name, rule, node, op, inputs, outputs))

    def decline(self, pass_name: str, rule: str, node: str, reason: str) -> None:
        """Records a decline unless the same one was recorded lately (a rule re-offered the node each sweep)."""
        entry = DeclineNote(pass_name, rule, node, reason)
        if not any(vars(d) == vars(entry) for d in self.declines[-50:]):
            self.declines.append(entry)


@dataclass
class Options:
    """What the user declared; passes read it, never mutate it."""

    input_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    align_channels: int = 1
    prelu_to_relu: bool = False
    max_growth: float = 1.25  # final MACs at most this times the merged form's (etc.cost.CostBudget)
    allow_dense: bool = False  # grouped/depthwise convs may become dense when a merge needs it
    # False: every widening rewrite that adds MACs is declined (--target cpu's "plain-kept")
    widen: bool = True
    target: str = "npu"


@dataclass
class PassContext:
    """Shared by every pass of one pipeline run."""

    options: Options = field(default_factory=Options)
    tracer: Tracer = field(default_factory=Tracer)  # hits and declines of every rule in the run
    notes: list[str] = field(default_factory=list)
    cache: dict[str, object] = field(default_factory=dict)  # state passes share within one run (e.g. a graph)
    budget: CostBudget | None = None  # set once a widening phase has started
    live: Callable[[str], None] | None = None  # progress inside a long pass (a terminal's status line)
    candidates: int = 0  # nodes offered to rules in this run (rule passes count them)

    @property
    def declines(self) -> list[DeclineNote]:
        return self.tracer.declines

    def warn(self, message: str) -> None:
        """A limit was hit or a budget overrun was accepted: kept in ``notes`` and raised as a LimitWarning."""
        if message not in self.notes:
            self.notes.append(message)
            warnings.warn(message, LimitWarning, stacklevel=3)


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool
    hits: dict[str, int] = field(default_factory=dict)


# Phases: the pipeline runs the named passes in this order whatever order they were named in.
CLEANUP, MERGE, WIDEN, FINISH = 0, 1, 2, 3


class Pass:
    """A model-to-model transformation. Subclasses set ``name`` and ``summary`` and implement ``run``.

    The contract of ``run`` (the pipeline checks it after every run, :func:`run_checked`): it returns a
    :class:`PassResult`; it leaves its input model as it was; ``modified=False`` means the result is the input
    object itself; ``modified=True`` means the result differs from the input.

    ``phase`` places the pass in the canonical schedule (CLEANUP, MERGE, WIDEN, FINISH); passes of a phase at
    or after WIDEN are judged by the cost budget (etc.cost). ``rank`` orders the built-in passes within their
    phase; a pass without one runs after them, in the order given, and may be named twice to run twice.
    """

    name: str = ""
    summary: str = ""
    phase: int = WIDEN
    rank: int | None = None

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


# ---------------------------------------------------------------- registry

_BUILTIN: dict[str, str] = {
    "fold": "etc.passes.fold:FoldPass",
    "sim": "etc.passes.sim:SimPass",
    "rep": "etc.passes.rep:RepPass",
    "et": "etc.passes.et:EtPass",
    "prelu": "etc.passes.prelu:PReluPass",
    "equalize": "etc.quant.equalize:EqualizePass",
    "depthwise": "etc.passes.depthwise:DepthwisePass",
}
_REGISTERED: dict[str, type[Pass] | Callable[[], Pass]] = {}
ENTRY_POINT_GROUP = "etc.passes"


def register_pass(name: str | None = None):
    """Class decorator (or call) registering a pass under a short lowercase name."""

    def decorate(cls):
        key = (name or cls.name).strip().lower()
        if not key or not key.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"pass name {key!r} must be short, lowercase, alphanumeric")
        if not getattr(cls, "name", ""):
            cls.name = key
        _REGISTERED[key] = cls
        return cls

    return decorate


def _entry_points() -> dict[str, object]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_passes() -> list[str]:
    """Every pass name: built in, registered at run time and from the ``etc.passes`` entry points."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def get_pass(name: str) -> Pass:
    key = name.strip().lower()
    if key in _REGISTERED:
        return _instantiate(_REGISTERED[key], key)
    if key in _BUILTIN:
        module, attr = _BUILTIN[key].split(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("etc."):
                raise UnknownPassError(f"pass '{key}' is not built into this version of etc") from None
            raise UnknownPassError(
                f"pass '{key}' needs the package '{exc.name}'; install it (pip install {exc.name})"
            ) from None
        return _instantiate(cls, key)
    eps = _entry_points()
    if key in eps:
        return _instantiate(eps[key].load(), key)  # type: ignore[attr-defined]
    raise UnknownPassError(f"unknown pass '{name}'; available: {', '.join(available_passes())}")


def _instantiate(factory, key: str) -> Pass:
    obj = factory() if callable(factory) else factory
    if not isinstance(obj, Pass) and not hasattr(obj, "run"):
        raise UnknownPassError(f"pass '{key}' does not provide run(model, ctx)")
    if not getattr(obj, "name", ""):
        obj.name = key
    return obj


def parse_pipeline(text: str | Sequence[str]) -> list[str]:
    """'fold,rep,et' -> ['fold', 'rep', 'et']; validates every name."""
    names = (
        [p.strip().lower() for p in text.split(",")] if isinstance(text, str) else [p.lower() for p in text]
    )
    names = [n for n in names if n]
    if not names:
        raise UnknownPassError("empty pass list; try --passes fold,rep,et")
    local = set(_BUILTIN) | set(_REGISTERED)
    if set(names) <= local:
        return names  # no need to scan the installed packages' entry points (~20 ms)
    known = available_passes()
    for name in names:
        if name not in known:
            raise UnknownPassError(f"unknown pass '{name}'; available: {', '.join(known)}")
    return names


# ---------------------------------------------------------------- instruments


class Instrument:
    """Hooks around the pipeline and every pass."""

    def before_pipeline(self, model: onnx.ModelProto, ctx: PassContext) -> None: ...

    def before_pass(self, pass_name: str, model: onnx.ModelProto) -> None: ...

    def after_pass(self, pass_name: str, result: PassResult, step: int) -> None: ...


@dataclass
class PassRecord:
    name: str
    seconds: float
    modified: bool
    hits: dict[str, int]


class Timing(Instrument):
    """Wall time of every pass run."""

    def __init__(self) -> None:
        self.records: list[PassRecord] = []
        self._start = 0.0

    def before_pass(self, pass_name: str, model: onnx.ModelProto) -> None:
        self._start = time.perf_counter()

    def after_pass(self, pass_name: str, result: PassResult, step: int) -> None:
        self.records.append(
            PassRecord(pass_name, time.perf_counter() - self._start, result.modified, dict(result.hits))
        )


class Dump(Instrument):
    """Writes each intermediate model to ``folder`` as NN_pass.onnx."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def before_pipeline(self, model: onnx.ModelProto, ctx: PassContext) -> None:
        from etc.frontends.onnx_io import save

        self.folder.mkdir(parents=True, exist_ok=True)
        save(model, self.folder / "00_input.onnx")

    def after_pass(self, pass_name: str, result: PassResult, step: int) -> None:
        from etc.frontends.onnx_io import save

        if result.modified:
            save(result.model, self.folder / f"{step:02d}_{pass_name}.onnx")


class NumericCheck(Instrument):
    """Compares outputs after every modifying pass with the input model's, computed once.

    Inputs are seeded, inside the declared ranges, at several spatial sizes (odd ones included) when H/W are
    dynamic. The error names the first pass that broke equivalence.
    """

    def __init__(self, atol: float = 1e-5, rtol: float = 1e-5, sizes=None, seed: int = 0) -> None:
        self.atol, self.rtol, self.seed = atol, rtol, seed
        self.sizes = sizes
        self.feeds: list[dict] = []
        self.reference: list[dict] = []
        self.worst: dict[str, float] = {}
        self.seconds = 0.0  # wall time spent checking (sessions, runs, comparisons)
        # (model, session, outputs per feed) of the input and of the last checked result, for the final check
        self.kept: list[tuple[onnx.ModelProto, object, list[dict]]] = []
        self.truth: dict = {}

    def before_pipeline(self, model: onnx.ModelProto, ctx: PassContext) -> None:
        start = time.perf_counter()
        try:
            self._reference(model, ctx)
        finally:
            self.seconds += time.perf_counter() - start

    def after_pass(self, pass_name: str, result: PassResult, step: int) -> None:
        start = time.perf_counter()
        try:
            self._check(pass_name, result)
        finally:
            self.seconds += time.perf_counter() - start

    def _reference(self, model: onnx.ModelProto, ctx: PassContext) -> None:
        from etc import runtime
        from etc.shapes import fit_windows

        sizes = self.sizes or fit_windows(model, runtime.DEFAULT_SIZES)
        self.feeds = runtime.input_sets(model, ctx.options.input_ranges, sizes=sizes, seed=self.seed)
        sess = runtime.session(model)
        self.reference = [runtime.run(sess, feed) for feed in self.feeds]
        self.kept = [(model, sess, self.reference)]
        self.model = model
        self.truth: dict = {}  # float64 outputs, computed only if a float32 comparison needs a second opinion

    def session_for(self, model: onnx.ModelProto):
        """The session this check already built for ``model`` (the input or the last checked result), or None."""
        return next((sess for kept, sess, _ in self.kept if kept is model), None)

    def outputs_for(self, model: onnx.ModelProto) -> list[tuple[dict, dict]]:
        """(feed, outputs) pairs this check already computed for ``model`` (the input or the last checked
        result); empty for another model."""
        for kept, _, outputs in self.kept:
            if kept is model:
                return list(zip(self.feeds, outputs))
        return []

    def _check(self, pass_name: str, result: PassResult) -> None:
        from etc import runtime

        if not result.modified:
            return
        try:
            sess = runtime.session(result.model)
        except Exception as exc:
            raise EquivalenceError(
                f"pass '{pass_name}' produced a model onnxruntime cannot load: {str(exc).splitlines()[0][:300]}",
                pass_name,
            ) from None
        outputs: list[dict] = []
        self.kept[1:] = [(result.model, sess, outputs)]
        for feed, ref in zip(self.feeds, self.reference):
            got = runtime.run(sess, feed)
            outputs.append(got)
            for name, want in ref.items():
                if name not in got:
                    raise EquivalenceError(f"pass '{pass_name}' lost the output '{name}'", pass_name)
                diff = runtime.compare(want, got[name], name)
                self.worst[name] = max(self.worst.get(name, 0.0), diff.max_abs)
                tolerance = self.atol + self.rtol * max(diff.ref_range, 1.0)
                if not diff.within(self.atol, self.rtol) and not runtime.within_rounding(
                    self.model, feed, want, got[name], name, tolerance, self.truth
                ):
                    shape = "x".join(str(d) for d in next(iter(feed.values())).shape)
                    raise EquivalenceError(
                        f"pass '{pass_name}' broke equivalence: output '{name}' differs by max abs "
                        f"{diff.max_abs:.3g} (tolerance {self.atol:g} + {self.rtol:g}*range, and further from the "
                        f"float64 result than the original is) on input {shape}",
                        pass_name,
                        diff.max_abs,
                    )


# ---------------------------------------------------------------- pipeline


def fingerprint(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def run_checked(p: Pass, model: onnx.ModelProto, ctx: PassContext, digest: str) -> tuple[PassResult, str]:
    """Runs ``p`` on ``model`` (whose fingerprint is ``digest``) and holds it to the contract of
    :meth:`Pass.run`; returns the result and its fingerprint. A breach raises PassContractError naming the pass."""
    result = p.run(model, ctx)
    if not isinstance(result, PassResult):
        _breach(p, f"returned {type(result).__name__}, not a PassResult")
    if fingerprint(model) != digest:
        _breach(p, "changed its input model in place (a pass builds a new model and leaves its input alone)")
    if not result.modified:
        if result.model is not model:
            _breach(
                p, "reported modified=False but returned another model object (unmodified means the input)"
            )
        return result, digest
    if not isinstance(result.model, onnx.ModelProto):
        _breach(p, f"returned a {type(result.model).__name__} as its model, not an onnx.ModelProto")
    after = fingerprint(result.model)
    if after == digest:
        _breach(p, "reported modified=True but returned a model byte-identical to its input")
    return result, after


def _breach(p: Pass, what: str) -> None:
    raise PassContractError(f"pass '{p.name}' broke the pass contract: it {what}; this is a bug in the pass")


@dataclass
class PipelineResult:
    model: onnx.ModelProto
    records: list[PassRecord]
    declines: list[DeclineNote]
    hits: dict[str, int]
    rounds: int
    notes: list[str] = field(default_factory=list)  # warnings: limits hit, budget overruns the user asked for
    budget: CostBudget | None = None  # the run's budget (None when no widening pass ran)


def phase_of(p: Pass) -> int:
    return getattr(p, "phase", WIDEN)


def canonical_order(passes: Sequence[Pass]) -> list[Pass]:
    """The passes in their canonical schedule: by phase, ranked passes in rank order within a phase, other
    passes after them in the order given. A ranked (built-in) pass named twice runs once. So any permutation
    of the same names runs the same schedule and gives the same bytes."""
    seen: set[str] = set()
    unique = []
    for p in passes:
        key = p.name if _rank_of(p) < UNRANKED else f"{p.name}#{id(p)}"
        if key not in seen:
            seen.add(key)
            unique.append(p)
    order = sorted(range(len(unique)), key=lambda i: (phase_of(unique[i]), _rank_of(unique[i]), i))
    return [unique[i] for i in order]


UNRANKED = 99


def _rank_of(p: Pass) -> int:
    rank = getattr(p, "rank", None)  # plug-in passes need not subclass Pass
    return UNRANKED if rank is None else rank


def run_pipeline(
    model: onnx.ModelProto,
    passes: str | Sequence[str | Pass],
    *,
    options: Options | None = None,
    instruments: Iterable[Instrument] = (),
    max_rounds: int = 8,
    progress: Callable[[str], None] | None = None,
    live: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Runs the passes in their canonical order (:func:`canonical_order`), repeating the list until a round
    changes nothing. Passes of the WIDEN phase and later answer to a cost budget (etc.cost.CostBudget) whose
    baseline is the model as the first of them sees it (cleaned up and merged). Running out of rounds warns.

    ``progress`` gets one line per pass run (pass, round, nodes, candidates offered to rules, rewrites, time);
    ``live`` gets status updates while a pass runs (for a terminal's status line)."""
    from etc.cost import CostBudget

    ctx = PassContext(options or Options(), live=live)
    resolved = canonical_order([get_pass(p) if isinstance(p, str) else p for p in _names_or_passes(passes)])
    timing = Timing()
    tools = [timing, *instruments]
    for tool in tools:
        tool.before_pipeline(model, ctx)
    digest = fingerprint(model)
    seen = {digest}
    hits: dict[str, int] = {}
    step = 0
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        changed = False
        for p in resolved:
            # cleanup passes settle before anything reads their output, so a rewrite that needs several
            # cleanup sweeps (shape arithmetic of a dynamic export, then an in-place write) is done before merge
            # and widen rules see the graph, whichever round it is
            repeats = max_rounds if phase_of(p) == CLEANUP else 1
            for _ in range(repeats):
                step += 1
                if live:
                    live(f"{p.name} (round {rounds}) on {len(model.graph.node)} nodes ...")
                offered = ctx.candidates
                for tool in tools:
                    tool.before_pass(p.name, model)
                if phase_of(p) >= WIDEN:
                    if ctx.budget is None:
                        ctx.budget = CostBudget(model, ctx.options)  # counts the model as it starts
                    else:
                        ctx.budget.refresh(model)
                result, after = run_checked(p, model, ctx, digest)
                for tool in tools:
                    tool.after_pass(p.name, result, step)
                if progress:
                    progress(_progress_line(p.name, rounds, model, ctx.candidates - offered, result, timing))
                if not result.modified:
                    break
                for rule, count in result.hits.items():
                    key = f"{p.name}/{rule}"
                    hits[key] = hits.get(key, 0) + count
                if after in seen:
                    raise OscillationError(
                        f"pass '{p.name}' reproduced a model the pipeline had already produced; "
                        "two rules undo each other (report this with the model)"
                    )
                seen.add(after)
                model, digest = result.model, after
                changed = True
            else:
                if repeats > 1:
                    ctx.warn(
                        f"pass '{p.name}' still changed the model after {repeats} runs in a row and the "
                        "pipeline moved on; the result is equivalent but may not be fully rewritten"
                    )
        if not changed:
            break
    else:
        # one round asked for explicitly (e.g. the quantizer's single exact pass) is no limit
        if max_rounds > 1:
            ctx.warn(
                f"the pipeline still changed the model after {max_rounds} rounds and stopped there; "
                "the result is equivalent but may not be fully rewritten (raise max_rounds)"
            )
    if ctx.budget is not None:
        ctx.budget.finish(model, ctx)
        if hits:
            ctx.budget.record(model)
    return PipelineResult(model, timing.records, ctx.declines, hits, rounds, ctx.notes, ctx.budget)


def _progress_line(
    name: str, round_: int, model: onnx.ModelProto, candidates: int, result: PassResult, timing: Timing
) -> str:
    """One line about a finished pass run: which, which round, how much it looked at and did, how long."""
    offered = f", {candidates} candidates offered to rules" if candidates else ""
    rewrites = sum(result.hits.values())
    did = f"{rewrites} rewrites" if rewrites else ("changed" if result.modified else "no change")
    return (
        f"{name} (round {round_}) on {len(model.graph.node)} nodes{offered}: {did}, "
        f"{timing.records[-1].seconds:.2f} s"
    )


def _names_or_passes(passes: str | Sequence[str | Pass]) -> list[str | Pass]:
    if isinstance(passes, str):
        return list(parse_pipeline(passes))
    out: list[str | Pass] = []
    for p in passes:
        out.extend(parse_pipeline(p) if isinstance(p, str) else [p])
    return out
