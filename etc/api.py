"""The Python API: the same jobs as the command line, on models or paths."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from etc.cost import BudgetReport
from etc.frontends.onnx_io import as_model
from etc.pipeline import Dump, Instrument, NumericCheck, Options, Pass, PipelineResult, run_pipeline

DEFAULT_PASSES = "fold,rep,et"


@dataclass
class OptimizeReport:
    """What an optimization did: before/after facts, per-pass records, rule hits, declines, verification."""

    before: object
    after: object
    pipeline: PipelineResult
    verification: object | None = None
    remaining: list[str] = field(default_factory=list)
    cost_before: object | None = None  # etc.cost.ModelCost of the input
    cost_after: object | None = None  # ... of the result
    target: str = "npu"
    cpu: object | None = None  # etc.target.CpuChoice for --target cpu
    timing: dict = field(default_factory=dict)  # seconds: total, passes, checking (and its share of total)

    @property
    def notes(self) -> list[str]:
        """Warnings of the run: limits hit, budget overruns an option asked for, the --target cpu choice."""
        return list(self.pipeline.notes)

    @property
    def budget(self) -> BudgetReport | None:
        """The cost budget's figures and every accepted or declined widening (None when no widening pass ran)."""
        return self.pipeline.budget.report() if self.pipeline.budget is not None else None

    def cost_dict(self) -> dict:
        return {
            "target": self.target,
            "before": self.cost_before.as_dict() if self.cost_before else None,
            "after": self.cost_after.as_dict() if self.cost_after else None,
            "budget": self.budget.as_dict() if self.budget is not None else None,
            "cpu": self.cpu.as_dict() if self.cpu else None,
            "notes": self.notes,
        }

    def to_dict(self) -> dict:
        """Everything the report holds as plain JSON values: facts, passes, hits, declines, remaining ops,
        verification and cost (non-finite numbers become None, so a strict parser reads ``to_json``)."""
        from etc.text import json_safe

        v = self.verification
        return json_safe(
            {
                "before": self.before.as_dict(),
                "after": self.after.as_dict(),
                "passes": [vars(r) for r in self.pipeline.records],
                "rounds": self.pipeline.rounds,
                "rule_hits": dict(self.pipeline.hits),
                "declines": [vars(d) for d in self.pipeline.declines],
                "remaining": list(self.remaining),
                "verification": v.as_dict() if v is not None else None,
                "cost": self.cost_dict(),
            }
        )

    def to_json(self, indent: int | None = 1) -> str:
        """``to_dict`` as strict JSON (no NaN or Infinity)."""
        import json

        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def optimize(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    passes: str | Sequence[str | Pass] = DEFAULT_PASSES,
    *,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    align_channels: int = 1,
    prelu_to_relu: bool = False,
    max_growth: float = 1.25,
    allow_dense: bool = False,
    target: str = "npu",
    check_each_pass: bool = True,
    verify: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    dump_dir: str | os.PathLike | None = None,
    size: tuple[int, int] = (360, 640),
    instruments: Sequence[Instrument] = (),
    progress=None,
    live=None,
) -> tuple[onnx.ModelProto, OptimizeReport]:
    """Rewrites a model with ``passes`` and returns (model, report).

    ``check_each_pass`` compares outputs after every pass (raising EquivalenceError naming the pass that broke
    them); ``verify`` runs the final model against the input at several sizes. Widening rewrites answer to a
    budget: the result costs at most ``max_growth`` times the merged form (etc.cost); grouped convs become dense
    only with ``allow_dense``. ``target="cpu"`` measures the forms ETC can build and returns the fastest, never
    one slower than the input (etc.target). ``progress`` gets one line per pass run, ``live`` status updates
    while a pass runs. ``report.timing`` says how much of the time the numeric checking took.
    """
    import time

    from etc.cost import model_cost
    from etc.errors import EtcError
    from etc.info import model_info
    from etc.verification import verify as verify_models

    if target not in TARGETS:
        raise EtcError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    if max_growth < 1.0:
        raise EtcError("max_growth must be at least 1.0 (the merged form itself)")
    started = time.perf_counter()
    model = as_model(model_or_path)
    options = Options(
        dict(input_ranges or {}),
        align_channels=align_channels,
        prelu_to_relu=prelu_to_relu,
        max_growth=max_growth,
        allow_dense=allow_dense,
        target=target,
    )
    tools: list[Instrument] = list(instruments)
    check = NumericCheck(atol=atol, rtol=rtol) if check_each_pass else None
    if check is not None:
        tools.append(check)
    if dump_dir is not None:
        tools.append(Dump(dump_dir))
    result = run_pipeline(model, passes, options=options, instruments=tools, progress=progress, live=live)
    cpu = None
    if target != "npu":
        cpu = choose_cpu_candidate(model, result, passes, options, target)
        result.notes.append(cpu.summary())
    report = OptimizeReport(
        model_info(model, size), model_info(result.model, size), result, target=target, cpu=cpu
    )
    report.cost_before, report.cost_after = model_cost(model, size), model_cost(result.model, size)
    if cpu is not None and target == "cpu":
        by_name = {c.name: c for c in cpu.candidates}
        report.cost_before.cpu_ms = by_name["input"].ms
        report.cost_after.cpu_ms = by_name[cpu.chosen].ms
    final_check = 0.0
    if verify:
        if live:
            live("verifying the result ...")
        verify_start = time.perf_counter()
        reuse = {}
        if check is not None:  # the per-pass check's sessions, and its outputs for an equal probe
            reuse = {
                "sessions": (check.session_for(model), check.session_for(result.model)),
                "known": (check.outputs_for(model), check.outputs_for(result.model)),
                "truth": check.truth,
            }
        report.verification = verify_models(
            model, result.model, input_ranges=input_ranges, atol=atol, rtol=rtol, **reuse
        )
        final_check = time.perf_counter() - verify_start
    report.remaining = remaining_ops(result.model, report.budget, cpu.chosen if cpu is not None else None)
    report.timing = run_timing(
        time.perf_counter() - started, result, (check.seconds if check else 0.0) + final_check
    )
    return result.model, report


def run_timing(total: float, result: PipelineResult, checking: float) -> dict:
    """Where an optimize call's wall time went: passes, numeric checking (per pass and final) and the rest
    (loading, model facts, costs), in seconds, with the checking's share of the total."""
    passes = sum(r.seconds for r in result.records)
    return {
        "total_s": round(total, 3),
        "passes_s": round(passes, 3),
        "checking_s": round(checking, 3),
        "checking_share": round(checking / total, 3) if total > 0 else 0.0,
        "other_s": round(max(total - passes - checking, 0.0), 3),
    }


TARGETS = ("npu", "cpu", "htp", "htp-estimate")


def choose_cpu_candidate(
    model: onnx.ModelProto, result: PipelineResult, passes, options: Options, target: str = "cpu"
):
    """Builds the candidate forms (``plain``, ``plain-kept``, ``merged``, ``input``), judges them for ``target``
    (``cpu``: latency measured here; ``htp``: cycles on the HTP simulator; ``htp-estimate``: etc.cost's HTP
    estimate) and puts the chosen one in ``result.model``."""
    import dataclasses

    from etc.pipeline import get_pass
    from etc.target import choose_by_htp_estimate, choose_for_cpu, choose_for_htp

    named = [get_pass(p) if isinstance(p, str) else p for p in _flat(passes)]
    candidates = {"plain": result.model}
    tight = dataclasses.replace(options, widen=False)
    candidates["plain-kept"] = run_pipeline(model, named, options=tight).model
    merging = [p for p in named if p.name in ("sim", "fold", "rep")]
    if merging:
        candidates["merged"] = run_pipeline(model, merging, options=options).model
    candidates["input"] = model
    choose = {"cpu": choose_for_cpu, "htp": choose_for_htp, "htp-estimate": choose_by_htp_estimate}[target]
    choice = choose(candidates)
    result.model = candidates[choice.chosen]
    return choice


def _flat(passes) -> list:
    from etc.pipeline import parse_pipeline

    if isinstance(passes, str):
        return parse_pipeline(passes)
    out: list = []
    for p in passes:
        out.extend(parse_pipeline(p) if isinstance(p, str) else [p])
    return out


WHY_NOT_PLAIN = {
    "Sigmoid": "no exact ReLU form (smooth nonlinearity)",
    "Tanh": "no exact ReLU form (smooth nonlinearity)",
    "Mul": "product of two activations (attention/modulation) is not linear",
    "Div": "division by an activation is not linear",
    "MaxPool": "max over a window has no Conv/ReLU form at the same cost",
    "AveragePool": "strided or padded pooling kept",
    "GlobalAveragePool": "global pooling depends on image size",
    "ReduceMean": "global statistics depend on image size",
    "Resize": "interpolation other than nearest with integer scale kept",
    "PRelu": "kept by default (2x channels to remove; use --prelu)",
    "LeakyRelu": "kept by default (2x channels to remove; use --prelu)",
    "Clip": "bounds not constant, lower bound not 0, or no conv before it to absorb it",
    "Concat": "channel concat whose branches cannot merge (non-conv, strided or shared branches; see --explain)",
    "Add": "add with no conv to absorb it, or a broadcasting add",
    "Softmax": "no exact ReLU form",
    "Exp": "no exact ReLU form",
}


def remaining_ops(
    model: onnx.ModelProto, budget: BudgetReport | None = None, cpu_choice: str | None = None
) -> list[str]:
    """One line per non-plain op type left, with the reason it stays: a rewrite the cost budget declined at one
    of its nodes (``budget``), the form ``--target cpu`` chose (``cpu_choice``), else why no rewrite applies."""
    from etc.cost import PLAIN_OPS
    from etc.graph import op_histogram

    names: dict[str, set[str]] = {}
    for node in model.graph.node:
        names.setdefault(node.op_type, set()).update([node.name, *node.output[:1]])
    lines = []
    for op, count in op_histogram(model).items():
        if op in PLAIN_OPS:
            continue
        declined = [
            d for d in (budget.decisions if budget else []) if not d.accepted and d.node in names.get(op, ())
        ]
        if declined:
            d = declined[0]
            why = f"the rewrite exists ({d.rule}) but the cost budget declined it: {d.reason}"
        elif cpu_choice not in (None, "plain"):
            why = (
                f"--target cpu kept the '{cpu_choice}' form, measured faster on this CPU "
                f"({WHY_NOT_PLAIN.get(op, 'the plain form was slower')})"
            )
        else:
            why = WHY_NOT_PLAIN.get(op, "no equivalent rewrite in the selected passes")
        lines.append(f"{op} x{count}: {why}")
    return lines


def verify(
    model_a: onnx.ModelProto | str | os.PathLike,
    model_b: onnx.ModelProto | str | os.PathLike,
    **kwargs,
):
    """Compares two models with onnxruntime (graph optimizations off); see etc.verification.verify."""
    from etc.verification import verify as verify_models

    return verify_models(as_model(model_a), as_model(model_b), **kwargs)
