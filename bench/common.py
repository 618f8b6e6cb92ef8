"""Shared bench helpers: timing, markdown tables, and updating one section of bench/RESULTS.md."""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from pathlib import Path

from etc.timing import interleaved_times, paired_ratio  # noqa: F401  (moved into the package; re-exported)

RESULTS = Path(__file__).with_name("RESULTS.md")


def image_latencies(
    models: dict, size: tuple[int, int], rounds: int, threads: int, fresh: bool = True
) -> dict[str, list[float]]:
    """Per-round wall times (seconds) of every model on one 1x3xHxW image: interleaved, a new session per model
    and round unless not ``fresh`` (see etc.timing.interleaved_times)."""
    import numpy as np

    from etc import runtime

    x = np.random.default_rng(0).uniform(0, 1, size=(1, 3, *size)).astype(np.float32)

    def factory(model):
        def build():
            sess = runtime.session(model, optimize=True, threads=threads)
            feed = {sess.get_inputs()[0].name: x}
            return lambda: sess.run(None, feed)

        return build

    return interleaved_times({k: factory(m) for k, m in models.items()}, rounds, fresh=fresh)


def median_seconds(fn: Callable[[], object], repeat: int = 3, warmup: int = 0) -> float:
    """Median wall time of ``fn`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    from etc.timing import median_ms

    return median_ms(fn, repeat, warmup) / 1000.0


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
