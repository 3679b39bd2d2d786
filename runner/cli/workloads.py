"""Workload commands: validate, schema, submit, ls, status, logs, cancel, explain."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import app, client, console, friendly, print_json, styled, usd, when
from runner.core.errors import WorkloadFailedError


@app.command()
@friendly
def validate(spec_file: Annotated[Path, typer.Argument(help="A workload spec (YAML).")]) -> None:
    """Check a spec without a cluster; print it in its explicit long form."""
    from runner.core.spec import load_workload, spec_to_dict

    spec = load_workload(spec_file)
    console.print(f"[green]ok[/green] {spec_file}: {spec.kind} workload {spec.name!r}")
    console.print_json(json.dumps(spec_to_dict(spec)))


@app.command()
def schema() -> None:
    """Print the JSON schema of workload specs."""
    from runner.core.spec import workload_json_schema

    print(json.dumps(workload_json_schema(), indent=2))


@app.command()
@friendly
def submit(
    spec_file: Annotated[Path, typer.Argument(help="A workload spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it ends; exit 3 unless it succeeded.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream its logs until it ends.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting again with this key returns the same workload.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Submit a workload."""
    from runner.core.spec import load_workload

    spec = load_workload(spec_file)
    c = client()
    w = c.submit(spec, source=str(spec_file), idempotency_key=idempotency_key)
    if not as_json:
        console.print(f"submitted [bold]{w['id']}[/bold] ({w['kind']} {w['name']!r})")
    if follow and w["kind"] == "training" and not as_json:  # rank 0's logs under a progress bar
        from runner.cli.training import follow_training

        follow_training(c.logs(w["id"], follow=True), console)
    elif follow:
        for item in c.logs(w["id"], follow=True):
            print(item["line"], flush=True)
    if wait or follow:
        if as_json:
            w = c.wait(w["id"])
        else:
            with console.status(f"waiting for {w['id']}..."):
                w = c.wait(w["id"])
    if as_json:
        print_json(w)
    elif wait or follow:
        console.print(f"{w['id']} {styled(w['state'])} {w['message']}")
    if (wait or follow) and w["state"] != "SUCCEEDED":
        raise WorkloadFailedError(f"{w['id']} ended {w['state']}: {w['message']}")


@app.command("ls")
@friendly
def list_workloads(as_json: Annotated[bool, typer.Option("--json")] = False, limit: int = 50) -> None:
    """List workloads, newest first."""
    rows = client().list(limit=limit)
    if as_json:
        print_json(rows)
        return
    table = Table("ID", "NAME", "KIND", "STATE", "NODE", "ATTEMPTS", "CREATED", "MESSAGE", box=None)
    for w in rows:
        table.add_row(
            w["id"],
            w["name"],
            w["kind"],
            styled(w["state"]),
            w["node"] or "-",
            str(w["attempts"]),
            when(w["created_at"]),
            w["message"][:60],
        )
    console.print(table)


@app.command()
@friendly
def status(workload_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A workload's state, replicas (node, price, billed time, latest reports) and its events."""
    c = client()
    w = c.get(workload_id)
    # A session: where it runs, its URL, how it plays, its SLA. A service: its endpoint, size,
    # replicas' nodes and request rates.
    session = c.session(workload_id) if w["kind"] == "gaming" else None
    service = c.service(workload_id) if w["kind"] == "inference" else None
    if as_json:
        print_json({**w, **({"session": session} if session else {}), **({"service": service} if service else {})})
        return
    console.print(
        f"[bold]{w['id']}[/bold] {w['kind']} {w['name']!r}: {styled(w['state'])}  "
        f"attempt {w['attempts']}, node {w['node'] or '-'}, exit code {w['exit_code']}"
    )
    if w["message"]:
        console.print(f"  {w['message']}", markup=False)
    if session:
        from runner.cli.sessions import session_lines

        for line in session_lines(session):
            console.print(line, markup=False, highlight=False)
    if w["kind"] == "training":  # step of total, loss, steps/s, ETA, checkpoints
        from runner.cli.training import training_lines

        for line in training_lines(w):
            console.print(line, markup=False, highlight=False)
    if service:
        from runner.cli.services import members_table, service_lines

        for line in service_lines(service):
            console.print(line, markup=False, highlight=False)
        if service["members"]:
            console.print(members_table(service))
    replicas = Table(
        "REPLICA", "NODE", "PROVIDER", "STATE", "EXIT", "PRICE/H", "BILLED", "ERROR", box=None, title="replicas"
    )
    for r in w["replicas"]:
        replicas.add_row(
            r["key"],
            r["node"],
            r["provider"],
            replica_state(r),
            str(r["exit_code"]),
            usd(r["price_micros"]),
            f"{r['metered_s']}s",
            r["error"][:50],
        )
    console.print(replicas)
    reports = [(r["key"], kind, body) for r in w["replicas"] for kind, body in (r["reports"] or {}).items()]
    if reports:
        table = Table("REPLICA", "REPORT", "LATEST", box=None, title="reports")
        for key, kind, body in reports:
            table.add_row(key, kind, ", ".join(f"{k}={v}" for k, v in body.items() if k != "ts"))
        console.print(table)
    events = Table("TIME", "STATE", "EVENT", box=None, title="events")
    for e in w["events"]:
        events.add_row(when(e["ts"]), styled(e["state"]), e["message"])
    console.print(events)


def replica_state(r: Mapping[str, Any]) -> str:
    """A replica's state, with how far its image's pull has got while PULLING: "PULLING 312/1043 MB"."""
    done, total = r.get("pull_done_bytes") or 0, r.get("pull_total_bytes") or 0
    if r["state"] != "PULLING" or not total:
        return str(r["state"])
    digits = 1 if total < 10e6 else 0
    return f"PULLING {done / 1e6:.{digits}f}/{total / 1e6:.{digits}f} MB"


@app.command()
@friendly
def logs(workload_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print a workload's logs (with -f, stream them until it ends)."""
    for item in client().logs(workload_id, follow=follow):
        print(item["line"], flush=True)


@app.command()
@friendly
def cancel(workload_id: str) -> None:
    """Cancel a workload: its containers are stopped."""
    w = client().cancel(workload_id)
    console.print(f"{w['id']}: cancel requested ({w['state']})")


@app.command()
@friendly
def explain(
    workload_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
) -> None:
    """Why a workload went where it went (or waits): every candidate node, its verdict and score."""
    data = client().explain(workload_id)
    if as_json:
        print_json(data)
        return
    if not data["decided"]:
        console.print(f"{workload_id}: no placement decision yet ({data['state']}). {data['message']}")
        return
    console.print(
        f"[bold]{workload_id}[/bold] attempt {data['attempt']}: "
        + (
            f"[green]placed[/green] on {', '.join(data['nodes'])}"
            if data["placed"]
            else f"[yellow]waiting[/yellow]: {data['message']}"
        ),
        highlight=False,
    )
    table = Table("", "NODE", "PROVIDER", "REGION", "GPU", "PRICE/H", "SCORE", "VERDICT", box=None)
    for row in data["rows"][:limit]:
        verdict = "[green]ok[/green]" if row["verdict"] == "ok" else row["verdict"]
        table.add_row(
            "*" if row["chosen"] else "",
            row["node"],
            row["provider"],
            row["region"],
            row["gpu"],
            f"${row['price_usd']:.2f}",
            "-" if row["score"] is None else f"{row['score']:.3f}",
            verdict,
        )
    console.print(table)
    if data["total_nodes"] > len(data["rows"][:limit]):
        console.print(f"({data['total_nodes'] - len(data['rows'][:limit])} more nodes not shown)")
