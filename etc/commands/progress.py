"""Stage-by-stage progress of the long commands on stderr (a bar on a terminal, one line per stage in logs)."""

from __future__ import annotations

import sys

import click


class StageProgress:
    """Progress of a long command on stderr, stage by stage.

    On a terminal each stage is a bar with its total, rate and ETA; elsewhere (CI logs, pipes) each stage is
    one line when it starts, with its total and the time since the command began, and one closing line. Call
    ``stage(name, total)`` when a stage starts (``total`` None when unknown) and the object itself with the
    number of steps done; this is the ``progress`` protocol of :func:`etc.quant.quantizer.quantize_with_report`.
    """

    def __init__(self, command: str, enabled: bool = True, *, unit: str = "run", tty: bool | None = None):
        import time

        self.command, self.enabled, self.unit = command, enabled, unit
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.started = time.perf_counter()
        self.bar = None
        self.name: str | None = None

    def stage(self, name: str, total: int | None = None, unit: str | None = None) -> None:
        """A new stage starts: closes the previous one."""
        self._close_bar()
        self.name = name
        if not self.enabled:
            return
        unit = unit or self.unit
        if self.tty:
            from tqdm import tqdm

            shape = {} if total else {"bar_format": "{desc} [{elapsed}]"}  # no total: no bar, no ETA to show
            self.bar = tqdm(
                desc=f"{self.command}: {name}", total=total, unit=unit, file=sys.stderr, leave=True, **shape
            )
            return
        count = f" ({total} {unit}{'s' if total != 1 else ''})" if total else ""
        click.echo(f"{self.command}: {name}{count} at {self.elapsed():.1f} s", err=True)

    def __call__(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def elapsed(self) -> float:
        import time

        return time.perf_counter() - self.started

    def close(self, last: str | None = "done") -> None:
        """Ends the last stage; ``last`` (e.g. 'done') is printed with the total time when not on a terminal."""
        self._close_bar()
        if self.enabled and last and not self.tty:
            click.echo(f"{self.command}: {last} in {self.elapsed():.1f} s", err=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
