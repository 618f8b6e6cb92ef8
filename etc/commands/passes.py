"""etc passes: what each pass does."""

from __future__ import annotations

import click


@click.command()
def passes() -> None:
    """List the registered passes (built in and from the `etc.passes` entry points) and their rules."""
    from etc.errors import EtcError
    from etc.pipeline import available_passes, get_pass

    for name in available_passes():
        try:
            p = get_pass(name)
        except EtcError as exc:
            click.echo(f"{name:10s} (unavailable: {exc})")
            continue
        click.echo(f"{name:10s} {p.summary or type(p).__doc__ or ''}".rstrip())
        for family in getattr(p, "rule_sets", lambda: [])():
            for rule in family:
                doc = (type(rule).__doc__ or "").strip().splitlines()
                click.echo(f"    {rule.rule_name:28s} {doc[0] if doc else ''}")
