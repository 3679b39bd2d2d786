"""`runner node`: a provider's machine joining and leaving (join, doctor), and what the operator
does to a node (drain, offboard, activate, challenge, checks, uptime)."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from runner.cli.common import JSON, app, client, console, friendly, gpu_arg, print_json, settings, styled, usd, when

if TYPE_CHECKING:
    from runner.join import RayNodeEnd

node_app = typer.Typer(help="Provider nodes: join, drain, offboard, activate, challenge.", no_args_is_help=True)
app.add_typer(node_app, name="node")


def _local_ip(head_url: str) -> str:
    """The address this machine reaches the head from: what other nodes should reach it at."""
    host = head_url.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 9))
        return sock.getsockname()[0]


@node_app.command("join")
@friendly
def node_join(
    head: Annotated[str, typer.Option(help="The control plane's URL, e.g. https://10.0.0.1:8470.")],
    token: Annotated[str, typer.Option(help="The join token the operator issued to your provider.")],
    provider: Annotated[str, typer.Option(help="Your provider id.")],
    region: Annotated[str, typer.Option(help="Region this machine stands in, e.g. eu-west.")],
    country: Annotated[str, typer.Option(help="ISO country code of its location, e.g. DE.")],
    name: Annotated[str | None, typer.Option(help="Node name (default: the hostname).")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs to offer (default: all).")] = None,
    memory_gb: Annotated[float, typer.Option(help="Memory to offer, GiB.")] = 8.0,
    simulate_gpu: Annotated[str | None, typer.Option(help="CPU mode: declare simulated GPUs, MODEL[:COUNT].")] = None,
    price: Annotated[float | None, typer.Option(help="Your price per GPU-hour, USD (default: list price).")] = None,
    public_address: Annotated[
        str | None,
        typer.Option(
            help="Where players and the gateway reach this machine's replicas, when NAT puts another address in "
            "front (default: the address this machine reaches the head from)."
        ),
    ] = None,
    image_cache_gb: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1e6,
            help="GB of pulled images this machine keeps; past it the least recently used are removed "
            "(default: $RUNNER_IMAGE_CACHE_GB or 50).",
        ),
    ] = None,
    ca_cert_hash: Annotated[
        str | None,
        typer.Option(
            help="The head's CA, as sha256:<hex> (in the join command the operator gave you): this machine "
            "joins only a head that proves it holds that CA's certificate, before it sends the token."
        ),
    ] = None,
) -> None:
    """Join this machine: detect GPUs, benchmark, register, then run the Ray node (foreground)."""
    from runner import node_guard
    from runner.core.node_ports import NodePorts
    from runner.join import (
        START_ATTEMPTS,
        guard_owner,
        head_ray_port,
        head_reachable,
        join,
        join_request,
        start_again_in,
        start_ray_node,
    )
    from runner.node_keys import NODE_KEYS_FILE

    s = settings()
    s.make_home()
    head_url = head if "://" in head else f"{'https' if s.tls else 'http'}://{head}"
    node_name = name or socket.gethostname().lower().split(".")[0]
    cpu_count = cpus or float(os.cpu_count() or 1)
    with console.status("benchmarking this machine..."):
        request = join_request(
            token=token,
            provider=provider,
            name=node_name,
            region=region,
            country=country,
            cpus=cpu_count,
            memory_mb=int(memory_gb * 1024),
            simulate_gpu=gpu_arg(simulate_gpu, option="--simulate-gpu"),
            price_per_gpu_hour=price,
            keys_path=settings().home / NODE_KEYS_FILE,
        )
    bench = request["benchmark"]
    console.print(
        f"benchmark: {bench['tflops']:.4g} TFLOPS ({bench['device']}, {bench['dtype']}), "
        f"{bench['bandwidth_gbs']:.4g} GB/s"
    )
    grant = join(head_url, request, tls=s.tls_files, ca_pin=ca_cert_hash)
    console.print(
        f"[green]registered[/green] {grant['node']} ({grant['state']}); joining Ray at {grant['ray_address']}"
    )
    node_ip = _local_ip(head_url)
    for attempt in range(1, START_ATTEMPTS + 1):
        proc = start_ray_node(
            grant,
            token_path=s.home / "node-ray-token",
            ports=NodePorts.block(head_ray_port(grant), 0),  # one node on this machine: the first block
            temp_dir=s.ray_temp_dir,
            log_path=s.logs_dir / "node.log",
            cpus=cpu_count,
            memory_mb=int(memory_gb * 1024),
            node_ip=node_ip,
            public_address=public_address or node_ip,
            image_cache_gb=s.image_cache_gb if image_cache_gb is None else image_cache_gb,
            keys_path=s.home / NODE_KEYS_FILE,
            tls=s.tls_files,
        )
        console.print(f"ray node running (pid {proc.pid}, log {s.logs_dir / 'node.log'}); Ctrl-C leaves the network")
        started = time.monotonic()
        code, how = _supervise_ray_node(proc, node_name, grant)
        wait_s = start_again_in(how, time.monotonic() - started, attempt)
        if wait_s is None or not head_reachable(grant["ray_address"]):
            break
        leave_network(node_name)  # whatever it got in its short life the head has placed elsewhere
        console.print(
            f"[yellow]not reached:[/yellow] the head declared this new Ray node dead "
            f"{time.monotonic() - started:.0f}s after it started (its links to this address still recovering "
            f"from the node it lost here); starting it again in {wait_s:g}s ({attempt}/{START_ATTEMPTS - 1} retries)"
        )
        try:
            time.sleep(wait_s)
        except KeyboardInterrupt:
            break
    # Out of the network (left, or cut off long enough for the head to declare this node lost and
    # place its work elsewhere): what still runs here has no claim any more, and left running it
    # would run twice. The node's agent is gone with its Ray node, so the node stops them itself.
    stopped = leave_network(node_name)
    node_guard.remove(guard_owner(grant))  # no Ray port is left to guard (its replicas gone first)
    console.print(
        f"left the network (ray node exit {code}); stopped {stopped} replica(s) still running here. "
        "To come back: a new join token from the operator, then runner node join again"
    )
    raise typer.Exit(code)


def _supervise_ray_node(proc: Any, node_name: str, grant: dict[str, Any]) -> tuple[int, RayNodeEnd]:
    """Wait for this machine's Ray node to end, stopping its replicas if the head goes silent
    (the lease); its exit code, and how it ended."""
    from runner.join import HeadLease, head_reachable, raylet_running

    lease = HeadLease(now=time.monotonic())
    had_raylet = False
    try:
        while (code := proc.poll()) is None:
            if lease.observe(head_reachable(grant["ray_address"]), time.monotonic()):
                stopped = leave_network(node_name)
                console.print(
                    f"[yellow]cut off:[/yellow] the head has not answered for {lease.lease_s:g}s; "
                    f"stopped {stopped} replica(s) (the head places them elsewhere)"
                )
            # The head takes an offboarded node out of the cluster by shutting its raylet down, which
            # `ray start --block` does not count as a failure: it would go on waiting, holding nothing.
            if raylet_running(proc.pid):
                had_raylet = True
            elif had_raylet:
                proc.terminate()
                proc.wait()
                console.print(
                    "[yellow]out of the cluster:[/yellow] this node's raylet was shut down "
                    "(the head shuts an offboarded node down)"
                )
                return proc.returncode, "shut_down"
            time.sleep(1.0)
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait(), "interrupted"
    # `ray start --block` saw its raylet die first: the head declared the node dead (it missed
    # the head's health checks: a cut link, or a head that cannot reach this address yet).
    console.print("[yellow]out of the cluster:[/yellow] this node's raylet stopped (the head declared it dead)")
    return code, "died"


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
    containers = engine.containers.list(
        all=True, ignore_removed=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node}"]}
    )
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
        table.add_row(
            when(c["ts"]),
            c["kind"],
            "yes" if c["ok"] else "[red]no[/red]",
            "-" if c["measured"] is None else f"{c['measured']:.4g}",
            "-" if c["expected"] is None else f"{c['expected']:.4g}",
            c["message"],
        )
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
    console.print(
        f"{name}: uptime {month} over the last 30 days, {verdict} the SLA "
        f"({data['sla']['monthly_uptime']:.0%}, <= {data['sla']['max_daily_offline_s'] / 60:g} min offline a day)"
    )
    table = Table("DAY", "OBSERVED", "OFFLINE", "BREACH", box=None)
    for d in data["days"]:
        table.add_row(
            d["day"],
            f"{d['observed_s'] / 3600:.2f} h",
            f"{d['offline_s'] / 60:.1f} min",
            "[red]yes[/red]" if d["breached"] else "no",
        )
    console.print(table)


# -- admin ---------------------------------------------------------------------------------------------
