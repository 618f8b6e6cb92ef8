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
