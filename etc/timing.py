"""Paired, interleaved latency measurement with fresh onnxruntime sessions (``--target cpu``, bench/).

Latency differences of a few percent drown in machine drift and in a session's memory placement; these helpers
time every candidate once per round in a seeded random order, with new sessions every round, and compare
candidates by the median of per-round ratios with a bootstrap interval.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(run: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time in ms of ``runs`` calls of ``run`` after ``warmup`` untimed ones (one session, a rough
    figure; comparisons of candidates use :func:`interleaved_times`)."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def interleaved_times(
    factories: dict[str, Callable[[], Callable[[], object]]],
    rounds: int,
    warmup: int = 1,
    seed: int = 0,
    fresh: bool = True,
) -> dict[str, list[float]]:
    """Wall times of every runner, ``rounds`` each, interleaved: one timed run of each per round, in a fresh
    seeded random order every round, so drifting machine load and the cache state a predecessor leaves behind
    hit all runners alike (a fixed or rotating order always puts the same runner after the same one).

    ``factories[name]()`` builds a runner (e.g. an onnxruntime session bound to its input). With ``fresh`` every
    round builds new runners, each warmed up ``warmup`` times before its timed run: one session keeps one memory
    placement for its whole life, and two sessions of the same model differed by up to 10% here, so a bias fixed
    at session creation is averaged over the rounds instead of being measured as a difference between models."""
    import numpy as np

    names = list(factories)
    kept: dict[str, Callable[[], object]] = {}
    times: dict[str, list[float]] = {name: [] for name in names}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for index in order.permutation(len(names)):
            name = names[int(index)]
            runner = kept.get(name)
            if runner is None:
                runner = factories[name]()
                for _ in range(warmup):
                    runner()
                if not fresh:
                    kept[name] = runner
            start = time.perf_counter()
            runner()
            times[name].append(time.perf_counter() - start)
            del runner
    return times


def paired_ratio(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Median of the per-round ratios a/b, with a 95% bootstrap interval of that median: (median, low, high).

    Pairing rounds cancels the slow load drift that makes separate minima or medians of a and b disagree."""
    import numpy as np

    ratios = np.asarray(a) / np.asarray(b)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(2000, len(ratios))), axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)
