"""`runner admin`: the operator's commands on tenants, providers, join tokens and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import (
    JSON,
    app,
    client,
    console,
    friendly,
    gpu_arg,
    join_command,
    print_json,
    settings,
    styled,
    usd,
    when,
)
from runner.core.errors import UserError

admin_app = typer.Typer(help="The operator's commands: tenants, providers, join tokens, audit.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants: add, KYC, budgets.", no_args_is_help=True)
provider_app = typer.Typer(help="Providers: add, KYC, stake.", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens for providers' machines.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
endpoint_app = typer.Typer(
    help="Endpoints inside a network (loopback, private) the control plane may open for tenants.", no_args_is_help=True
)
app.add_typer(admin_app, name="admin")
for sub, name in (
    (tenant_app, "tenant"),
    (provider_app, "provider"),
    (token_app, "token"),
    (audit_app, "audit"),
    (endpoint_app, "endpoint"),
):
    admin_app.add_typer(sub, name=name)


def _op() -> Any:
    return client(operator=True)


@tenant_app.command("add")
@friendly
def tenant_add(
    name: str,
    country: Annotated[str, typer.Option(help="ISO country code.")],
    kyc: Annotated[str, typer.Option(help="pending, verified or rejected.")] = "pending",
    budget: Annotated[float | None, typer.Option(help="Hard budget, USD.")] = None,
) -> None:
    """Add a tenant (KYC pending until checked)."""
    t = _op().admin("POST", "/tenants", id=name, country=country, kyc=kyc, budget_usd=budget)
    console.print(f"tenant {t['id']} ({t['country']}) KYC {styled(t['kyc'])}")


@tenant_app.command("kyc")
@friendly
def tenant_kyc(name: str, status: str) -> None:
    """Set a tenant's KYC status: pending, verified or rejected."""
    t = _op().admin("POST", f"/tenants/{name}", kyc=status)
    console.print(f"tenant {t['id']} KYC {styled(t['kyc'])}")


@tenant_app.command("budget")
@friendly
def tenant_budget(
    name: str,
    usd_amount: Annotated[float | None, typer.Argument(metavar="USD")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the budget.")] = False,
) -> None:
    """Set (or --clear) a tenant's hard budget in USD."""
    if usd_amount is None and not clear:
        raise UserError("give a budget in USD, or --clear")
    t = _op().admin("POST", f"/tenants/{name}", budget_usd=usd_amount, clear_budget=clear)
    console.print(f"tenant {t['id']} budget {usd(t['budget_micros'])}, spent {usd(t['spent_micros'])}")


@tenant_app.command("key")
@friendly
def tenant_key(name: str) -> None:
    """Create an API key for a tenant (printed once; give it to the tenant)."""
    print(_op().admin("POST", f"/tenants/{name}/keys")["api_key"])


@tenant_app.command("ls")
@friendly
def tenant_ls(as_json: JSON = False) -> None:
    rows = _op().admin("GET", "/tenants")
    if as_json:
        print_json(rows)
        return
    table = Table("TENANT", "COUNTRY", "KYC", "BUDGET", "SPENT", box=None)
    for t in rows:
        table.add_row(t["id"], t["country"], styled(t["kyc"]), usd(t["budget_micros"]), usd(t["spent_micros"]))
    console.print(table)


@endpoint_app.command("allow")
@friendly
def endpoint_allow(
    endpoint: Annotated[str, typer.Argument(help="scheme://host:port, e.g. http://10.0.0.5:9000")],
    note: Annotated[str, typer.Option(help="Why (whose store it is).")] = "",
) -> None:
    """Let the control plane open an internal endpoint for tenants (a store a customer runs on
    premises, which its training jobs name in AWS_ENDPOINT_URL). Every other endpoint that
    resolves to loopback, private or link-local addresses is refused."""
    row = _op().admin("PUT", "/endpoints", endpoint=endpoint, note=note)
    console.print(f"allowed {row['endpoint']}")


@endpoint_app.command("ls")
@friendly
def endpoint_ls(as_json: JSON = False) -> None:
    rows = _op().admin("GET", "/endpoints")
    if as_json:
        print_json(rows)
        return
    table = Table("ENDPOINT", "ALLOWED", "NOTE", box=None)
    for row in rows:
        table.add_row(row["endpoint"], when(row["allowed_at"]), row["note"])
    console.print(table)


@endpoint_app.command("remove")
@friendly
def endpoint_remove(endpoint: str) -> None:
    """No longer open this endpoint for tenants."""
    row = _op().admin("DELETE", "/endpoints", params={"endpoint": endpoint})
    console.print(f"removed {row['endpoint']}")


@provider_app.command("add")
@friendly
def provider_add(
    name: str,
    country: Annotated[str, typer.Option(help="ISO country code.")],
    kyc: Annotated[str, typer.Option(help="pending, verified or rejected.")] = "pending",
    stake: Annotated[float, typer.Option(help="Initial stake deposit, USD.")] = 0.0,
) -> None:
    """Add a provider (KYC pending until checked)."""
    p = _op().admin("POST", "/providers", id=name, country=country, kyc=kyc, stake_usd=stake)
    console.print(f"provider {p['id']} ({p['country']}) KYC {styled(p['kyc'])}, stake {usd(p['stake_micros'])}")


@provider_app.command("kyc")
@friendly
def provider_kyc(name: str, status: str) -> None:
    """Set a provider's KYC status; unverified providers' nodes never receive work."""
    p = _op().admin("POST", f"/providers/{name}/kyc", kyc=status)
    console.print(f"provider {p['id']} KYC {styled(p['kyc'])}")


@provider_app.command("stake")
@friendly
def provider_stake(
    name: str,
    usd_amount: Annotated[float, typer.Argument(metavar="USD")],
    key: Annotated[str, typer.Option(help="Deposit reference: the same key counts once.")],
) -> None:
    """Deposit stake for a provider."""
    p = _op().admin("POST", f"/providers/{name}/stake", usd=usd_amount, key=key)
    console.print(f"provider {p['id']} stake {usd(p['stake_micros'])}")


@provider_app.command("ls")
@friendly
def provider_ls(as_json: JSON = False) -> None:
    rows = _op().admin("GET", "/providers")
    if as_json:
        print_json(rows)
        return
    table = Table("PROVIDER", "COUNTRY", "KYC", "STAKE", "NODES", box=None)
    for p in rows:
        table.add_row(p["id"], p["country"], styled(p["kyc"]), usd(p["stake_micros"]), ", ".join(p["nodes"]))
    console.print(table)


@token_app.command("issue")
@friendly
def token_issue(
    provider: str,
    region: Annotated[str, typer.Option(help="The region the machine stands in, e.g. eu-west.")],
    country: Annotated[str, typer.Option(help="Its ISO country code, e.g. DE.")],
    gpu: Annotated[
        str | None, typer.Option(help="Its GPUs as MODEL[:COUNT], e.g. H100:8 (default: none, a CPU machine).")
    ] = None,
    simulated: Annotated[
        bool, typer.Option(help="Its GPUs are simulated (CPU mode, or a test network whose rules allow it).")
    ] = False,
    ttl: Annotated[str, typer.Option(help="How long it stays valid, e.g. 30m, 1h.")] = "1h",
) -> None:
    """Issue a single-use join token for one of a provider's machines, bound to what you approved
    for it: where it stands and its GPUs. The machine can join as nothing else."""
    from pydantic import TypeAdapter, ValidationError

    from runner.core.spec import Duration

    try:
        ttl_s = TypeAdapter(Duration).validate_python(ttl)
    except ValidationError:
        raise UserError(f"--ttl: expected a duration like 30m or 1h, got {ttl!r}") from None
    model, count = gpu_arg(gpu, option="--gpu") or (None, 0)
    result = _op().admin(
        "POST",
        "/tokens",
        provider=provider,
        region=region,
        country=country.upper(),
        gpu_model=model,
        gpu_count=count,
        simulated=simulated,
        ttl_s=ttl_s,
    )
    console.print(f"join token for {provider} (valid {ttl}, single use); on the machine that joins:")
    command = join_command(
        settings(),
        token=result["token"],
        provider=provider,
        region=region,
        country=country.upper(),
        simulate_gpu=f"{model}:{count}" if simulated and model else "",
    )
    console.print(f"  {command}", soft_wrap=True)
    print(result["token"])


@audit_app.command("verify")
@friendly
def audit_verify() -> None:
    """Check the audit log's hash chain end to end."""
    result = _op().admin("GET", "/audit/verify")
    if result["ok"]:
        console.print(f"[green]ok[/green]: {result['entries']} entries, hash chain intact")
        return
    console.print(f"[red]tampered[/red]: {result['problem']} (first bad entry {result['first_bad_seq']})")
    raise typer.Exit(1)


@audit_app.command("ls")
@friendly
def audit_ls(kind: str | None = None, after: int = 0, limit: int = 50, as_json: JSON = False) -> None:
    """Audit entries (placements, KYC, tokens, node states, ledger)."""
    rows = _op().admin("GET", "/audit", params={"kind": kind, "after": after, "limit": limit})
    if as_json:
        print_json(rows)
        return
    table = Table("SEQ", "TIME", "KIND", "WHAT", box=None)
    for e in rows:
        table.add_row(str(e["seq"]), when(e["ts"]), e["kind"], str(e["payload"])[:110])
    console.print(table)
