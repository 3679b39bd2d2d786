"""Market commands: bills and earnings, a provider's `node` commands, and the operator's `admin`."""

from __future__ import annotations

import os
import socket
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import (
    app, client, console, friendly, join_command, print_json, settings, styled, usd, when,
)  # fmt: skip
from runner.core.errors import UserError

node_app = typer.Typer(help="Provider nodes: join, drain, offboard, activate, challenge.", no_args_is_help=True)
admin_app = typer.Typer(help="The operator's commands: tenants, providers, join tokens, audit.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants: add, KYC, budgets.", no_args_is_help=True)
provider_app = typer.Typer(help="Providers: add, KYC, stake.", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens for providers' machines.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(admin_app, name="admin")
for sub, name in ((tenant_app, "tenant"), (provider_app, "provider"), (token_app, "token"), (audit_app, "audit")):
    admin_app.add_typer(sub, name=name)

JSON = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _statement_table(title: str, statement: dict[str, Any]) -> None:
    totals = "  ".join(f"{k}: {usd(v)}" for k, v in statement["totals"].items())
    console.print(f"[bold]{title}[/bold]  {totals}")
    table = Table("KIND", "WHAT", "AMOUNT", box=None)
    for line in statement["lines"]:
        table.add_row(line["kind"], line["memo"], usd(line["amount"]))
    console.print(table)


# -- money ---------------------------------------------------------------------------------------------
@app.command()
@friendly
def bill(tenant: Annotated[str | None, typer.Option(help="Another tenant's bill (operator only).")] = None,
         as_json: JSON = False) -> None:  # fmt: skip
    """Your bill: per-second usage of every replica, SLA credits, what you owe, budget left."""
    bills = client(operator=True).admin("GET", "/bills", params={"tenant": tenant}) if tenant else [client().bill()]
    if as_json:
        print_json(bills if tenant else bills[0])
        return
    for b in bills:
        _statement_table(f"tenant {b['tenant']}", b)


@app.command()
@friendly
def earnings(provider: Annotated[str | None, typer.Option(help="One provider (default: all).")] = None,
             as_json: JSON = False) -> None:  # fmt: skip
    """Providers' earnings: gross, network fee, net, slashes, stake left (operator)."""
    rows = client(operator=True).admin("GET", "/earnings", params={"provider": provider} if provider else None)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        _statement_table(f"provider {row['provider']}", row)


# -- node ----------------------------------------------------------------------------------------------
def _gpu_arg(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    model, _, count = text.partition(":")
    if count and not count.isdigit():
        raise UserError(f"--simulate-gpu: expected MODEL[:COUNT], e.g. H100:2, got {text!r}")
    return model, int(count or 1)


def _local_ip(head_url: str) -> str:
    """The address this machine reaches the head from: what other nodes should reach it at."""
    host = head_url.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 9))
        return sock.getsockname()[0]


@node_app.command("join")
@friendly
def node_join(
    head: Annotated[str, typer.Option(help="The control plane's URL, e.g. http://10.0.0.1:8470.")],
    token: Annotated[str, typer.Option(help="The join token the operator issued to your provider.")],
    provider: Annotated[str, typer.Option(help="Your provider id.")],
    region: Annotated[str, typer.Option(help="Region this machine stands in, e.g. eu-west.")],
    country: Annotated[str, typer.Option(help="ISO country code of its location, e.g. DE.")],
    name: Annotated[str | None, typer.Option(help="Node name (default: the hostname).")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs to offer (default: all).")] = None,
    memory_gb: Annotated[float, typer.Option(help="Memory to offer, GiB.")] = 8.0,
    simulate_gpu: Annotated[str | None, typer.Option(help="CPU mode: declare simulated GPUs, MODEL[:COUNT].")] = None,
    price: Annotated[float | None, typer.Option(help="Your price per GPU-hour, USD (default: list price).")] = None,
    public_address: Annotated[str | None, typer.Option(
        help="Where players and the gateway reach this machine's replicas, when NAT puts another address in "
             "front (default: the address this machine reaches the head from).")] = None,
    image_cache_gb: Annotated[float | None, typer.Option(
        min=0, max=1e6, help="GB of pulled images this machine keeps; past it the least recently used are removed "
                    "(default: $RUNNER_IMAGE_CACHE_GB or 50).")] = None,
) -> None:
    """Join this machine: detect GPUs, benchmark, register, then run the Ray node (foreground)."""
    from runner.join import HeadLease, head_reachable, join, join_request, raylet_running, start_ray_node

    head_url = head if "://" in head else f"http://{head}"
    node_name = name or socket.gethostname().lower().split(".")[0]
    cpu_count = cpus or float(os.cpu_count() or 1)
    with console.status("benchmarking this machine..."):
        request = join_request(token=token, provider=provider, name=node_name, region=region, country=country,
                               cpus=cpu_count, memory_mb=int(memory_gb * 1024), simulate_gpu=_gpu_arg(simulate_gpu),
                               price_per_gpu_hour=price)  # fmt: skip
    bench = request["benchmark"]
    console.print(f"benchmark: {bench['tflops']:.4g} TFLOPS ({bench['device']}, {bench['dtype']}), "
                  f"{bench['bandwidth_gbs']:.4g} GB/s")  # fmt: skip
    grant = join(head_url, request)
    console.print(f"[green]registered[/green] {grant['node']} ({grant['state']}); joining Ray at {grant['ray_address']}")
    s = settings()
    node_ip = _local_ip(head_url)
    proc = start_ray_node(grant, token_path=s.home / "node-ray-token", port_args=[f"--temp-dir={s.ray_temp_dir}"],
                          log_path=s.logs_dir / "node.log", cpus=cpu_count, memory_mb=int(memory_gb * 1024),
                          node_ip=node_ip, public_address=public_address or node_ip,
                          image_cache_gb=s.image_cache_gb if image_cache_gb is None else image_cache_gb)  # fmt: skip
    console.print(f"ray node running (pid {proc.pid}, log {s.logs_dir / 'node.log'}); Ctrl-C leaves the network")
    lease = HeadLease(now=time.monotonic())
    had_raylet = False
    try:
        while (code := proc.poll()) is None:
            if lease.observe(head_reachable(grant["ray_address"]), time.monotonic()):
                stopped = leave_network(node_name)
                console.print(f"[yellow]cut off:[/yellow] the head has not answered for {lease.lease_s:g}s; "
                              f"stopped {stopped} replica(s) (the head places them elsewhere)")  # fmt: skip
            # The head takes an offboarded node out of the cluster by shutting its raylet down, which
            # `ray start --block` does not count as a failure: it would go on waiting, holding nothing.
            if raylet_running(proc.pid):
                had_raylet = True
            elif had_raylet:
                proc.terminate()
                code = proc.wait()
                break
            time.sleep(1.0)
        # Either this loop saw the raylet go, or `ray start --block` saw it first and exited: the
        # same event, said the same way.
        if had_raylet:
            console.print("[yellow]out of the cluster:[/yellow] this node's raylet stopped "
                          "(the head shuts an offboarded node down)")  # fmt: skip
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    # Out of the network (left, or cut off long enough for the head to declare this node lost and
    # place its work elsewhere): what still runs here has no claim any more, and left running it
    # would run twice. The node's agent is gone with its Ray node, so the node stops them itself.
    stopped = leave_network(node_name)
    console.print(f"left the network (ray node exit {code}); stopped {stopped} replica(s) still running here. "
                  "To come back: a new join token from the operator, then runner node join again")  # fmt: skip
    raise typer.Exit(code)


def leave_network(node: str) -> int:
    """Remove this machine's replicas of ``node`` (runner's labels on them) from its Docker
    engine, whichever control plane started them; how many there were."""
    from runner.core.errors import RuntimeUnavailableError
    from runner.runtime.base import LABEL_MANAGED, LABEL_NODE
    from runner.runtime.docker import docker_client

    try:
        engine = docker_client()
    except RuntimeUnavailableError:
        return 0
    containers = engine.containers.list(all=True, ignore_removed=True,
                                        filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node}"]})  # fmt: skip
    for container in containers:
        container.remove(force=True)
    return len(containers)


@node_app.command("doctor")
@friendly
def node_doctor() -> None:
    """What this machine must pass before it joins with GPUs: NVML, CUDA, NCCL, the inference
    model, a GPU in a container, NVENC. Without an NVIDIA GPU every check is 'not run: no GPU'."""
    from runner.doctor import FAILED, OK, run_checks

    results = run_checks()
    table = Table("CHECK", "RESULT", "DETAIL", box=None)
    for check in results:
        colour = "green" if check.status == OK else "red" if check.status == FAILED else "yellow"
        table.add_row(check.name, f"[{colour}]{check.status}[/{colour}]", check.detail)
    console.print(table)
    if all(c.status != OK for c in results) and not any(c.status == FAILED for c in results):
        console.print("not run: no GPU (this machine joins as a CPU-only node)")
    if any(c.status == FAILED for c in results):
        raise typer.Exit(1)


def _node_action(name: str, action: str) -> dict[str, Any]:
    return client(operator=True).admin("POST", f"/nodes/{name}/{action}")


@node_app.command("drain")
@friendly
def node_drain(name: str) -> None:
    """No new work; running work moves elsewhere (checkpointed); then offboarded."""
    console.print(f"{name}: {styled(_node_action(name, 'drain')['state'])}")


@node_app.command("offboard")
@friendly
def node_offboard(name: str) -> None:
    """Remove a node now (slashed if work still runs on it: drain first)."""
    result = _node_action(name, "offboard")
    slashed = f", slashed {usd(result['slashed_micros'])}" if result["slashed_micros"] else ""
    console.print(f"{name}: {styled(result['state'])}, {result['replicas_moved']} replica(s) moved{slashed}")


@node_app.command("activate")
@friendly
def node_activate(name: str) -> None:
    """Bring a suspended or draining node back into service."""
    console.print(f"{name}: {styled(_node_action(name, 'activate')['state'])}")


@node_app.command("challenge")
@friendly
def node_challenge(name: str, as_json: JSON = False) -> None:
    """Run a timed benchmark challenge on a node now."""
    result = _node_action(name, "challenge")
    if as_json:
        print_json(result)
        return
    verdict = "[green]passed[/green]" if result["ok"] else "[red]failed[/red]"
    console.print(f"{name}: {verdict}: {result['message']}")


@node_app.command("checks")
@friendly
def node_checks(name: str, limit: int = 20, as_json: JSON = False) -> None:
    """A node's recent heartbeats and challenges."""
    rows = client(operator=True).admin("GET", f"/nodes/{name}/checks", params={"limit": limit})
    if as_json:
        print_json(rows)
        return
    table = Table("TIME", "KIND", "OK", "MEASURED", "EXPECTED", "MESSAGE", box=None)
    for c in rows:
        table.add_row(when(c["ts"]), c["kind"], "yes" if c["ok"] else "[red]no[/red]",
                      "-" if c["measured"] is None else f"{c['measured']:.4g}",
                      "-" if c["expected"] is None else f"{c['expected']:.4g}", c["message"])  # fmt: skip
    console.print(table)


@node_app.command("uptime")
@friendly
def node_uptime(name: str, days: int = 30, as_json: JSON = False) -> None:
    """A node's uptime per day against the SLA (offline allowance, monthly uptime)."""
    data = client(operator=True).admin("GET", f"/nodes/{name}/uptime", params={"days": days})
    if as_json:
        print_json(data)
        return
    month = "-" if data["monthly_uptime"] is None else f"{data['monthly_uptime']:.4%}"
    verdict = "[green]meets[/green]" if data["meets_sla"] else "[red]misses[/red]"
    console.print(f"{name}: uptime {month} over the last 30 days, {verdict} the SLA "
                  f"({data['sla']['monthly_uptime']:.0%}, <= {data['sla']['max_daily_offline_s'] / 60:g} min offline a day)")  # fmt: skip
    table = Table("DAY", "OBSERVED", "OFFLINE", "BREACH", box=None)
    for d in data["days"]:
        table.add_row(d["day"], f"{d['observed_s'] / 3600:.2f} h", f"{d['offline_s'] / 60:.1f} min",
                      "[red]yes[/red]" if d["breached"] else "no")  # fmt: skip
    console.print(table)


# -- admin ---------------------------------------------------------------------------------------------
def _op() -> Any:
    return client(operator=True)


@tenant_app.command("add")
@friendly
def tenant_add(name: str, country: Annotated[str, typer.Option(help="ISO country code.")],
               kyc: Annotated[str, typer.Option(help="pending, verified or rejected.")] = "pending",
               budget: Annotated[float | None, typer.Option(help="Hard budget, USD.")] = None) -> None:  # fmt: skip
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
def tenant_budget(name: str, usd_amount: Annotated[float | None, typer.Argument(metavar="USD")] = None,
                  clear: Annotated[bool, typer.Option("--clear", help="Remove the budget.")] = False) -> None:  # fmt: skip
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


@provider_app.command("add")
@friendly
def provider_add(name: str, country: Annotated[str, typer.Option(help="ISO country code.")],
                 kyc: Annotated[str, typer.Option(help="pending, verified or rejected.")] = "pending",
                 stake: Annotated[float, typer.Option(help="Initial stake deposit, USD.")] = 0.0) -> None:  # fmt: skip
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
def provider_stake(name: str, usd_amount: Annotated[float, typer.Argument(metavar="USD")],
                   key: Annotated[str, typer.Option(help="Deposit reference: the same key counts once.")]) -> None:  # fmt: skip
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
def token_issue(provider: str, ttl: Annotated[str, typer.Option(help="How long it stays valid, e.g. 30m, 1h.")] = "1h") -> None:
    """Issue a single-use join token for one of a provider's machines."""
    from pydantic import TypeAdapter, ValidationError

    from runner.core.spec import Duration

    try:
        ttl_s = TypeAdapter(Duration).validate_python(ttl)
    except ValidationError:
        raise UserError(f"--ttl: expected a duration like 30m or 1h, got {ttl!r}") from None
    result = _op().admin("POST", "/tokens", provider=provider, ttl_s=ttl_s)
    console.print(f"join token for {provider} (valid {ttl}, single use); on the machine that joins:")
    console.print(f"  {join_command(settings(), token=result['token'], provider=provider)}", soft_wrap=True)
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
