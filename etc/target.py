"""``--target cpu``: measure the equivalent forms ETC can build and keep the fastest, never one slower than the input.

Candidates, in the order of the deterministic rule's preference: ``plain`` (the full pipeline's result),
``plain-kept`` (the same passes with no widening: adds, concats and skips the budget would carry stay),
``merged`` (fold and rep only: the original structure with its branches merged) and ``input``.

Decision (stable, so optimizing twice gives the same bytes):
1. Every candidate is timed against the input with fresh onnxruntime sessions, interleaved in a seeded random
   order (etc.timing), and summarized as the median per-round ratio to the input with a 95% bootstrap interval.
2. The deterministic pick is the candidate with the fewest MACs (then the input itself, as a form with as many
   MACs that is not measured faster is not worth the change; then the fewest nodes and the preference order) among those not measured slower than the input (interval entirely above 1, or median above
   ``SLOWER`` = 1: under the noise a pick may still measure a little slower, never clearly). A median above 1
   inside an interval that holds 1 is noise when onnxruntime's optimized graph of the candidate does a subset
   of the input's work (:func:`leaner_than`: fewer nodes, no more layout reorders, no fewer fused Gelu or
   fused convs): such a candidate stays allowed. On a loaded machine a form at 0.6x measured 1.01x
   [0.15, 2.08] against its input.
3. A measurement overrides it only when it clearly exceeds the noise: another candidate's whole interval lies
   below the pick's and its median is at least ``MARGIN`` faster.
The input is always a candidate, so the result is never clearly slower than it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

MARGIN = 0.03  # a measured override needs a median at least 3% below the deterministic pick's
SLOWER = 1.0  # a candidate whose median ratio to the input is above this is never picked
ROUNDS = 15
SIZE = (128, 128)


@dataclass
class Measured:
    name: str
    macs: int | None
    nodes: int
    ratio: float  # median per-round latency / the input's
    low: float
    high: float
    ms: float  # median latency
    leaner: bool = (
        False  # onnxruntime's optimized graph does a subset of the input's (see :func:`leaner_than`)
    )


@dataclass
class CpuChoice:
    chosen: str
    rule: str  # "measured" or "fewest MACs"
    size: tuple[int, int]
    rounds: int
    candidates: list[Measured] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{c.name} {c.ratio:.3f}x [{c.low:.3f}, {c.high:.3f}] ({c.ms:.2f} ms)" for c in self.candidates
        ]
        return f"--target cpu chose '{self.chosen}' ({self.rule}); latency vs input: " + "; ".join(parts)


def latency_runner(model: onnx.ModelProto, size: tuple[int, int]):
    """A factory of timed calls for :func:`etc.timing.interleaved_times`: each call builds a fresh session."""
    from etc import runtime

    payload = model.SerializeToString()
    feed = runtime.input_sets(model, {}, seed=0, sizes=[size])[0]

    def build():
        sess = runtime.session(payload, optimize=True, threads=1)
        return lambda: sess.run(None, feed)

    return build


def choose_for_cpu(
    candidates: dict[str, onnx.ModelProto],
    *,
    size: tuple[int, int] = SIZE,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> CpuChoice:
    """The candidate to return for ``--target cpu`` (``candidates`` in preference order, ``input`` among them)."""
    import numpy as np

    from etc.cost import conv_macs
    from etc.fusion import optimized_graph
    from etc.timing import interleaved_times, paired_ratio

    unique: dict[str, onnx.ModelProto] = {}
    seen: set[bytes] = set()
    for name, model in candidates.items():
        data = model.SerializeToString(deterministic=True)
        if data not in seen or name == "input":
            seen.add(data)
            unique[name] = model
    times = interleaved_times({n: latency_runner(m, size) for n, m in unique.items()}, rounds, seed=seed)
    graphs = {name: optimized_graph(model) for name, model in unique.items()}
    measured = []
    for name, model in unique.items():
        mid, low, high = paired_ratio(times[name], times["input"], seed=seed)
        macs = conv_macs(model, size)[0]
        nodes = len(model.graph.node)
        ms = 1000 * float(np.median(times[name]))
        lean = name != "input" and leaner_than(graphs[name], graphs["input"])
        measured.append(Measured(name, macs, nodes, mid, low, high, ms, lean))
    chosen, rule = decide(measured)
    return CpuChoice(chosen, rule, size, rounds, measured)


def leaner_than(candidate, reference) -> bool:
    """Whether onnxruntime's optimized graph of a candidate (etc.fusion.OptimizedGraph) does a subset of the
    reference's: fewer nodes, no more NCHWc reorders, no fewer fused Gelu or fused convs."""
    return (
        candidate.nodes < reference.nodes
        and candidate.reorders <= reference.reorders
        and candidate.gelu >= reference.gelu
        and candidate.fused_conv >= reference.fused_conv
    )


def decide(measured: list[Measured]) -> tuple[str, str]:
    """(chosen name, the rule that chose it) from measurements in preference order (see the module docstring)."""
    order = {m.name: i for i, m in enumerate(measured)}
    allowed = [m for m in measured if (m.low <= 1.0 and (m.ratio <= SLOWER or m.leaner)) or m.name == "input"]
    pick = min(
        allowed,
        key=lambda m: (m.macs if m.macs is not None else 1 << 62, m.name != "input", m.nodes, order[m.name]),
    )
    rule = "fewest MACs; no measured difference beyond the noise"
    faster = [m for m in allowed if m.high < pick.low and m.ratio <= pick.ratio * (1 - MARGIN)]
    if faster:
        pick = min(faster, key=lambda m: (m.ratio, order[m.name]))
        rule = "measured: clearly faster than the fewest-MACs form"
    return pick.name, rule


# ---------------------------------------------------------------- --target htp

HTP_SIZE = (64, 64)
HTP_MARGIN = (
    0.10  # INT8 cycles closer than this (the simulator's spread under load) are a tie, decided by FP32
)


@dataclass
class HtpMeasured:
    name: str
    int8: int | None  # median HTP cycles of the INT8 QDQ form (None: it could not be built or run)
    fp32: int | None
    note: str = ""


@dataclass
class HtpChoice:
    chosen: str
    rule: str
    size: tuple[int, int]
    candidates: list[HtpMeasured] = field(default_factory=list)
    target: str = "htp"  # or "htp-estimate": the INT8 column is etc.cost.htp_int8_cycles, nothing was run

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{c.name} INT8 {c.int8 if c.int8 is not None else '-'} / FP32 {c.fp32 if c.fp32 is not None else '-'}"
            + (f" ({c.note})" if c.note else "")
            for c in self.candidates
        ]
        what = "HTP cycles" if self.target == "htp" else "estimated HTP INT8 cycles"
        return f"--target {self.target} chose '{self.chosen}' ({self.rule}); {what}: " + "; ".join(parts)


def htp_int8_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """The INT8 QDQ form whose cycles judge a candidate: etc quantize's graph, calibrated briefly (the cycles
    depend on the QDQ graph, not on the scales)."""
    from etc.quant import quantize

    return quantize(model, calib="samples", num=8, equalize=False, rounding="nearest", bias_correction=False)[
        0
    ]


def _htp_cycles(model: onnx.ModelProto | None, size: tuple[int, int], rounds: int) -> tuple[int | None, str]:
    from etc import htp
    from etc.errors import EtcError

    if model is None:
        return None, ""
    try:
        runs: list[int] = []
        for _ in range(rounds):
            runs += htp.cycles(model, size=size, runs=3).runs
    except htp.HtpUnavailableError:
        raise
    except EtcError as exc:
        return None, str(exc).splitlines()[0][:160]
    import numpy as np

    return int(np.median(runs)), ""


def choose_for_htp(
    candidates: dict[str, onnx.ModelProto], *, size: tuple[int, int] = HTP_SIZE, rounds: int = 2
) -> HtpChoice:
    """The candidate to return for ``--target htp`` (``candidates`` in preference order; ``input`` and
    ``merged`` among them).

    Each candidate is quantized (:func:`htp_int8_form`) and both forms are run on HTP at ``size``. The pick has
    the fewest INT8 cycles among the candidates measured no slower than the input and the merged form (in INT8,
    or in FP32 when a reference's INT8 form cannot run); INT8 cycles within HTP_MARGIN of the pick's are a tie,
    won by fewer FP32 cycles, then by the preference order. The input is always allowed.
    """
    from etc.errors import EtcError

    measured: list[HtpMeasured] = []
    seen: dict[bytes, HtpMeasured] = {}
    for name, model in candidates.items():
        data = model.SerializeToString(deterministic=True)
        if data in seen:  # the same graph is measured once (a second measurement would only add noise)
            if name in ("input", "merged"):
                first = seen[data]
                measured.append(HtpMeasured(name, first.int8, first.fp32, f"same graph as '{first.name}'"))
            continue
        fp32, note = _htp_cycles(model, size, rounds)
        try:
            quantized = htp_int8_form(model)
        except EtcError as exc:
            quantized, note = None, f"INT8: {str(exc).splitlines()[0][:120]}"
        except Exception as exc:  # the quantizer cannot take this form (e.g. a training-time graph)
            quantized, note = None, f"INT8: {type(exc).__name__}"
        int8, int8_note = _htp_cycles(quantized, size, rounds)
        measured.append(HtpMeasured(name, int8, fp32, note or int8_note))
        seen[data] = measured[-1]
    chosen, rule = decide_htp(measured)
    return HtpChoice(chosen, rule, size, measured)


def decide_htp(measured: list[HtpMeasured]) -> tuple[str, str]:
    """(chosen name, rule) from HTP measurements in preference order (see :func:`choose_for_htp`)."""
    order = {m.name: i for i, m in enumerate(measured)}
    refs = [m for m in measured if m.name in ("input", "merged")]

    def no_slower(m: HtpMeasured) -> bool:
        for ref in refs:
            if m.int8 is not None and ref.int8 is not None:
                if m.int8 > ref.int8:
                    return False
            elif m.fp32 is None or ref.fp32 is None or m.fp32 > ref.fp32:
                return False
        return True

    allowed = [m for m in measured if m.name == "input" or (m.int8 is not None and no_slower(m))]
    with_int8 = [m for m in allowed if m.int8 is not None]
    if not with_int8:
        return "input", "no candidate's INT8 form ran on HTP no slower than the input"
    best = min(m.int8 for m in with_int8)
    tied = [m for m in with_int8 if m.int8 <= best * (1 + HTP_MARGIN)]
    pick = min(tied, key=lambda m: (m.fp32 if m.fp32 is not None else 1 << 62, order[m.name]))
    rule = "fewest INT8 cycles" if len(tied) == 1 else "INT8 cycles tied within the noise; fewest FP32 cycles"
    return pick.name, rule


# ---------------------------------------------------------------- --target htp-estimate

ESTIMATE_MARGIN = 0.03  # a less preferred form must be estimated at least this much cheaper to be picked


def choose_by_htp_estimate(
    candidates: dict[str, onnx.ModelProto], *, size: tuple[int, int] = HTP_SIZE
) -> HtpChoice:
    """The candidate to return for ``--target htp-estimate`` (``candidates`` in preference order; ``input`` and
    ``merged`` among them), judged by etc.cost.htp_int8_cycles at ``size`` without running anything.

    The pick is the first candidate in preference order whose estimate is within ESTIMATE_MARGIN of the fewest,
    among those estimated no dearer than the input and the merged form; a form that cannot be estimated (its
    sizes unknown) is not picked.
    """
    from etc.cost import model_cost

    measured = [
        HtpMeasured(name, _estimate(model_cost(m, size).htp_cycles), None) for name, m in candidates.items()
    ]
    refs = [m.int8 for m in measured if m.name in ("input", "merged") and m.int8 is not None]
    allowed = [m for m in measured if m.int8 is not None and all(m.int8 <= r for r in refs)]
    if not allowed:
        return HtpChoice("input", "no form could be estimated", size, measured, "htp-estimate")
    best = min(m.int8 for m in allowed)
    pick = next(m for m in allowed if m.int8 <= best * (1 + ESTIMATE_MARGIN))
    rule = (
        "fewest estimated INT8 cycles" if pick.int8 == best else f"within {ESTIMATE_MARGIN:.0%} of the fewest"
    )
    return HtpChoice(pick.name, rule, size, measured, "htp-estimate")


def _estimate(cycles: float | None) -> int | None:
    return None if cycles is None else round(cycles)
