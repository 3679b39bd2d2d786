"""Service commands: ``runner endpoint ID``, ``runner services``, ``runner gateway``; and the service
block of ``runner status`` (endpoint, size, replicas with their nodes and request rates).

``endpoint`` prints the service's OpenAI base URL as its last line, alone, so a script can take
it with ``tail -1``; use it with the runner API key::

    OpenAI(base_url=$(runner endpoint w-123), api_key=$(cat $RUNNER_HOME/api-key))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import app, client, console, friendly, print_json, settings, styled
from runner.core.errors import ClusterError, WorkloadFailedError


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def service_lines(s: Mapping[str, Any]) -> list[str]:
    """The head of ``runner status`` for a service."""
    r = s["replicas"]
    lines = [
        f"  endpoint: {s['endpoint'] or '(no gateway running: runner up starts one)'}",
        f"  model: {s['model']}; replicas: {r['serving']} serving, {r['live']} live, desired {r['desired']} "
        f"(min {r['min']}, max {r['max']}); {_num(s['requests_per_s'])} requests/s, "
        f"{_num(s['items_per_s'])} inputs/s",
    ]
    if s["last_scaling"]:
        lines.append(f"  last scaling: {s['last_scaling']}")
    return lines


def members_table(s: Mapping[str, Any]) -> Table:
    table = Table(
        "REPLICA",
        "NODE",
        "PROVIDER",
        "STATE",
        "SERVING",
        "REQ/S",
        "INPUTS/S",
        "P50 MS",
        "P99 MS",
        "QUEUE",
        "BATCH",
        box=None,
        title="service replicas (latest metrics report)",
    )
    for m in s["members"]:
        table.add_row(
            m["key"],
            m["node"],
            m["provider"],
            m["state"],
            "yes" if m["serving"] else "no",
            _num(m["requests_per_s"]),
            _num(m["items_per_s"]),
            _num(m["latency_ms_p50"]),
            _num(m["latency_ms_p99"]),
            "-" if m["queue_depth"] is None else str(m["queue_depth"]),
            _num(m["batch_size_mean"]),
        )
    return table


@app.command()
@friendly
def endpoint(
    workload_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="First wait until a replica serves.")] = False,
    timeout: Annotated[float, typer.Option(help="How long --wait waits, seconds.")] = 300,
) -> None:
    """Print a service's endpoint: its OpenAI base URL on the gateway (use your runner API key)."""
    c = client()
    if wait:
        with console.status(f"waiting for {workload_id} to serve..."):
            w = c.wait(workload_id, until="running", timeout_s=timeout)
        if w["state"] != "RUNNING":
            raise WorkloadFailedError(f"{workload_id} is {w['state']}, not serving: {w['message']}")
    s = c.service(workload_id)
    if as_json:
        print_json(s)
        return
    if not s["endpoint"]:
        raise ClusterError("no gateway is running for this cluster. To fix: runner down && runner up --cpu")
    print(s["endpoint"])


@app.command("services")
@friendly
def list_services(
    all: Annotated[bool, typer.Option("--all", help="Include ended services.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Inference services: state, replicas serving, request rate, endpoint."""
    rows = client().services(all=all)
    if as_json:
        print_json(rows)
        return
    table = Table("ID", "NAME", "STATE", "SERVING", "REQ/S", "ENDPOINT", box=None)
    for s in rows:
        r = s["replicas"]
        table.add_row(
            s["id"],
            s["name"],
            styled(s["state"]),
            f"{r['serving']}/{r['desired']}",
            _num(s["requests_per_s"]),
            s["endpoint"] or "-",
        )
    console.print(table)


@app.command()
@friendly
def gateway(
    host: Annotated[str | None, typer.Option(help="Listen address (default: this home's).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: this home's).")] = None,
) -> None:
    """Run the services' gateway in the foreground (`runner up` starts it for you)."""
    from runner.gateway import serve

    serve(settings(), host=host, port=port)
