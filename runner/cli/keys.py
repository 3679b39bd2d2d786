"""`runner keys`: a tenant's own API keys (list, new, rotate, revoke), and the operator's view of
a tenant's keys (`runner admin tenant keys`, `revoke-key`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.admin import tenant_app
from runner.cli.common import JSON, app, client, console, friendly, print_json, settings, when

keys_app = typer.Typer(help="Your API keys: list, new, rotate, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table("KEY", "CREATED", "REVOKED", "", box=None)
    for row in rows:
        table.add_row(
            row["key_id"], when(row["created_at"]), when(row["revoked_at"]), "this one" if row.get("current") else ""
        )
    return table


@keys_app.command("ls")
@friendly
def keys_ls(as_json: JSON = False) -> None:
    """Your keys by id (the key itself is shown only when it is made)."""
    rows = client().keys()
    if as_json:
        print_json(rows)
        return
    console.print(_table(rows))


@keys_app.command("new")
@friendly
def keys_new() -> None:
    """Another key (printed once; only its hash is kept)."""
    print(client().new_key()["api_key"])


@keys_app.command("rotate")
@friendly
def keys_rotate() -> None:
    """Replace the key this home uses with a new one: the old one stops working now, and
    $RUNNER_HOME/api-key holds the new one."""
    made = client().rotate_key()
    path = settings().api_key_path
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made["api_key"] + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    console.print(f"rotated: key {made['key_id']} is in {path}; the old one is revoked")


@keys_app.command("revoke")
@friendly
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (runner keys ls).")]) -> None:
    """Revoke one of your keys: refused by the API and the gateway from now on."""
    row = client().revoke_key(key_id)
    console.print(f"revoked key {row['key_id']}")


@tenant_app.command("keys")
@friendly
def tenant_keys(name: str, as_json: JSON = False) -> None:
    """A tenant's keys by id, revoked ones included."""
    rows = client(operator=True).admin("GET", f"/tenants/{name}/keys")
    if as_json:
        print_json(rows)
        return
    console.print(_table(rows))


@tenant_app.command("revoke-key")
@friendly
def tenant_revoke_key(name: str, key_id: str) -> None:
    """Revoke a tenant's key (a leaked one): refused by the API and the gateway from now on."""
    row = client(operator=True).admin("DELETE", f"/tenants/{name}/keys/{key_id}")
    console.print(f"revoked key {row['key_id']} of tenant {name}")
