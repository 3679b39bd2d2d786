"""`runner secrets`: a tenant's secrets (set, ls, rm), which specs name instead of holding values."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from runner.cli.common import JSON, app, client, console, friendly, print_json, when
from runner.core.errors import UserError

secrets_app = typer.Typer(
    help="Your secrets: a spec names one (secrets: {VAR: name}), never its value.", no_args_is_help=True
)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("set")
@friendly
def secrets_set(
    name: str,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="Read the value from this file.")] = None,
) -> None:
    """Set a secret: its value from --from-file, or from stdin (nothing is echoed; never an argument,
    which the shell's history and `ps` would show)."""
    if from_file is not None:
        value = from_file.read_text()
    elif sys.stdin.isatty():
        value = typer.prompt(f"value of {name}", hide_input=True)
    else:
        value = sys.stdin.read()
    value = value.rstrip("\n")
    if not value:
        raise UserError(f"secret {name}: the value is empty. To fix: pipe it in, or --from-file FILE")
    row = client().set_secret(name, value)
    console.print(f"secret {row['name']} set")


@secrets_app.command("ls")
@friendly
def secrets_ls(as_json: JSON = False) -> None:
    """Your secrets by name (values are never shown)."""
    rows = client().secrets()
    if as_json:
        print_json(rows)
        return
    table = Table("SECRET", "SET", box=None)
    for row in rows:
        table.add_row(row["name"], when(row["updated_at"]))
    console.print(table)


@secrets_app.command("rm")
@friendly
def secrets_rm(name: str) -> None:
    """Remove a secret (a workload naming it is refused from now on)."""
    console.print(f"secret {client().delete_secret(name)['name']} removed")
