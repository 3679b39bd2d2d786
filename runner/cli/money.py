"""Money commands: a tenant's bill and the providers' earnings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import JSON, app, client, console, friendly, print_json, usd


def _statement_table(title: str, statement: Mapping[str, Any]) -> None:
    totals = "  ".join(f"{k}: {usd(v)}" for k, v in statement["totals"].items())
    console.print(f"[bold]{title}[/bold]  {totals}")
    table = Table("KIND", "WHAT", "AMOUNT", box=None)
    for line in statement["lines"]:
        table.add_row(line["kind"], line["memo"], usd(line["amount"]))
    console.print(table)


@app.command()
@friendly
def bill(
    tenant: Annotated[str | None, typer.Option(help="Another tenant's bill (operator only).")] = None,
    as_json: JSON = False,
) -> None:
    """Your bill: per-second usage of every replica, SLA credits, preemption refunds, what you owe, budget left."""
    bills = client(operator=True).admin("GET", "/bills", params={"tenant": tenant}) if tenant else [client().bill()]
    if as_json:
        print_json(bills if tenant else bills[0])
        return
    for b in bills:
        _statement_table(f"tenant {b['tenant']}", b)


@app.command()
@friendly
def earnings(
    provider: Annotated[str | None, typer.Option(help="One provider (default: all).")] = None, as_json: JSON = False
) -> None:
    """Providers' earnings: gross, network fee, net, slashes, stake left (operator)."""
    rows = client(operator=True).admin("GET", "/earnings", params={"provider": provider} if provider else None)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        _statement_table(f"provider {row['provider']}", row)
