"""Shared bench helpers: timing, markdown tables, and updating one section of bench/RESULTS.md."""

from __future__ import annotations

import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def median_seconds(fn: Callable[[], object], repeat: int = 3, warmup: int = 0) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(title: str, body: str) -> None:
    """Replaces (or appends) the ``## title`` section of RESULTS.md, leaving the others untouched."""
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else "# Benchmark results\n\nEach section names the command that produced it.\n"
    )
    block = f"## {title}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)
