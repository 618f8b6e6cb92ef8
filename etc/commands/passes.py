"""etc passes: what each pass does."""

from __future__ import annotations

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the passes and their rules as JSON.")
def passes(as_json: bool) -> None:
    """List the registered passes (built in and from the `etc.passes` entry points) and their rules.

    A pipeline is a comma-separated list of these names, e.g. `etc optimize m.onnx --passes fold,rep,et`.
    """
    from etc.commands.common import echo_json
    from etc.errors import EtcError
    from etc.pipeline import available_passes, get_pass

    listing = []
    for name in available_passes():
        try:
            p = get_pass(name)
        except EtcError as exc:
            listing.append({"name": name, "summary": "", "unavailable": str(exc), "rules": []})
            continue
        rules: list[dict] = []
        for family in getattr(p, "rule_sets", lambda: [])():  # phases may repeat a rule: list it once
            for rule in family:
                if all(r["name"] != rule.rule_name for r in rules):
                    doc = ((type(rule).__doc__ or "").strip().splitlines() or [""])[0]
                    rules.append({"name": rule.rule_name, "doc": doc})
        listing.append(
            {"name": name, "summary": p.summary or (type(p).__doc__ or "").strip(), "rules": rules}
        )
    if as_json:
        echo_json(listing)
        return
    for entry in listing:
        if "unavailable" in entry:
            click.echo(f"{entry['name']:10s} (unavailable: {entry['unavailable']})")
            continue
        click.echo(f"{entry['name']:10s} {entry['summary']}".rstrip())
        for rule in entry["rules"]:
            click.echo(f"    {rule['name']:28s} {rule['doc']}")
