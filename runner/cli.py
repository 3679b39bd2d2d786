"""The `runner` command line (Typer + Rich): a thin layer over the client and CPU-mode cluster.

Every RunnerError becomes one red line and its exit code (2: your input, 3: the workload
failed, 4: the cluster or server is not there); tracebacks are left for bugs.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from runner.errors import RunnerError, UserError, WorkloadFailedError
from runner.settings import Settings

app = typer.Typer(help="runner: run containerized workloads on rented GPU nodes.", no_args_is_help=True,
                  pretty_exceptions_enable=False)  # fmt: skip
images_app = typer.Typer(help="Build the workload images.", no_args_is_help=True)
app.add_typer(images_app, name="images")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
STATE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "RUNNING": "cyan", "RETRYING": "magenta"}


def friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunnerError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _settings(**overrides: Any) -> Settings:
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def _client() -> Any:
    from runner.client import Client

    return Client.from_settings(_settings())


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def _state(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


# -- specs -------------------------------------------------------------------------------------------
@app.command()
@friendly
def validate(spec_file: Annotated[Path, typer.Argument(help="A workload spec (YAML).")]) -> None:
    """Check a spec without a cluster; print it in its explicit long form."""
    from runner.spec import load_workload, spec_to_dict

    spec = load_workload(spec_file)
    console.print(f"[green]ok[/green] {spec_file}: {spec.kind} workload {spec.name!r}")
    console.print_json(json.dumps(spec_to_dict(spec)))


@app.command()
def schema() -> None:
    """Print the JSON schema of workload specs."""
    from runner.spec import workload_json_schema

    print(json.dumps(workload_json_schema(), indent=2))


# -- workloads ---------------------------------------------------------------------------------------
@app.command()
@friendly
def submit(
    spec_file: Annotated[Path, typer.Argument(help="A workload spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it ends; exit 3 unless it succeeded.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream its logs until it ends.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Submitting again with this key returns the same workload.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Submit a workload."""
    from runner.spec import load_workload

    spec = load_workload(spec_file)
    client = _client()
    w = client.submit(spec, source=str(spec_file), idempotency_key=idempotency_key)
    if not as_json:
        console.print(f"submitted [bold]{w['id']}[/bold] ({w['kind']} {w['name']!r})")
    if follow:
        for item in client.logs(w["id"], follow=True):
            print(item["line"], flush=True)
    if wait or follow:
        if as_json:
            w = client.wait(w["id"])
        else:
            with console.status(f"waiting for {w['id']}..."):
                w = client.wait(w["id"])
    if as_json:
        print(json.dumps(w))
    elif wait or follow:
        console.print(f"{w['id']} {_state(w['state'])} {w['message']}")
    if (wait or follow) and w["state"] != "SUCCEEDED":
        raise WorkloadFailedError(f"{w['id']} ended {w['state']}: {w['message']}")


@app.command("ls")
@friendly
def list_workloads(as_json: Annotated[bool, typer.Option("--json")] = False, limit: int = 50) -> None:
    """List workloads, newest first."""
    rows = _client().list(limit=limit)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("ID", "NAME", "KIND", "STATE", "NODE", "ATTEMPTS", "CREATED", "MESSAGE", box=None)
    for w in rows:
        table.add_row(w["id"], w["name"], w["kind"], _state(w["state"]), w["node"] or "-", str(w["attempts"]),
                      _when(w["created_at"]), w["message"][:60])  # fmt: skip
    console.print(table)


@app.command()
@friendly
def status(workload_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A workload's state, replicas and timeline of events."""
    w = _client().get(workload_id)
    if as_json:
        print(json.dumps(w))
        return
    console.print(f"[bold]{w['id']}[/bold] {w['kind']} {w['name']!r}: {_state(w['state'])}  "
                  f"attempt {w['attempts']}, node {w['node'] or '-'}, exit code {w['exit_code']}")  # fmt: skip
    if w["message"]:
        console.print(f"  {w['message']}", markup=False)
    replicas = Table("REPLICA", "NODE", "STATE", "EXIT", "HANDLE", "ERROR", box=None, title="replicas")
    for r in w["replicas"]:
        replicas.add_row(r["key"], r["node"], r["state"], str(r["exit_code"]), r["handle"][:12], r["error"][:60])
    console.print(replicas)
    events = Table("TIME", "STATE", "EVENT", box=None, title="events")
    for e in w["events"]:
        events.add_row(_when(e["ts"]), _state(e["state"]), e["message"])
    console.print(events)


@app.command()
@friendly
def logs(workload_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print a workload's logs (with -f, stream them until it ends)."""
    for item in _client().logs(workload_id, follow=follow):
        print(item["line"], flush=True)


@app.command()
@friendly
def cancel(workload_id: str) -> None:
    """Cancel a workload: its containers are stopped."""
    w = _client().cancel(workload_id)
    console.print(f"{w['id']}: cancel requested ({w['state']})")


@app.command()
@friendly
def nodes(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Provider nodes with their labels and liveness."""
    rows = _client().nodes()
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("NODE", "ALIVE", "PROVIDER", "REGION", "COUNTRY", "GPU", "VRAM", "CPUS", "REPLICAS", "SIMULATED", box=None)
    for n in rows:
        lb = n["labels"]
        table.add_row(n["name"], "[green]yes[/green]" if n["alive"] else "[red]no[/red]", lb.get("provider", ""),
                      lb.get("region", ""), lb.get("country", ""), f"{lb.get('gpu-count')}x {lb.get('gpu-model')}",
                      f"{lb.get('vram-gb')}GB", f"{n['resources'].get('CPU', 0):g}", str(n["replicas"]),
                      lb.get("simulated", ""))  # fmt: skip
    console.print(table)


# -- cluster -----------------------------------------------------------------------------------------
@app.command()
@friendly
def up(
    cpu: Annotated[bool, typer.Option("--cpu", help="CPU mode: simulated provider nodes on this machine.")] = False,
    fleet: Annotated[Path | None, typer.Option(help="Fleet file (default: the packaged 4-node fleet).")] = None,
    runtime: Annotated[str | None, typer.Option(help="auto (Docker if an engine answers), docker or process.")] = None,
) -> None:
    """Start a cluster: Ray head, provider nodes and the control plane."""
    from runner import local
    from runner.runtime import docker_available

    if not cpu:
        raise UserError("only CPU mode runs on one machine. To fix: runner up --cpu "
                        "(real providers join with runner node join, a later feature)")  # fmt: skip
    settings = _settings(runtime=runtime)
    if settings.runtime in ("auto", "docker") and not docker_available():
        if settings.runtime == "docker":
            raise UserError("--runtime docker, but no Docker engine answers. To fix: start dockerd")
        err.print("[yellow]note:[/yellow] no Docker engine answers: workloads run as host processes "
                  "(process runtime). Start dockerd and run `runner down && runner up --cpu` to use containers.")  # fmt: skip
    started = time.monotonic()
    local.up(settings, fleet_path=str(fleet) if fleet else None, say=lambda m: console.print(f"  {m}"))
    console.print(f"[green]cluster up[/green] in {time.monotonic() - started:.1f}s. Try: runner nodes")


@app.command()
@friendly
def down() -> None:
    """Stop exactly what `runner up` started."""
    from runner import local

    if not local.down(_settings(), say=lambda m: console.print(f"  {m}")):
        console.print("no cluster is up for this home")
        return
    console.print("[green]cluster down[/green]")


@app.command()
@friendly
def server() -> None:
    """Run the control plane in the foreground (`runner up` starts it for you)."""
    from runner.server import serve

    serve(_settings())


# -- images ------------------------------------------------------------------------------------------
@images_app.command("build")
@friendly
def images_build(
    names: Annotated[list[str] | None, typer.Argument(help="Images to build (default: all).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when the content hash is unchanged.")] = False,
) -> None:
    """Build images from Debian packages and local wheels (works offline); cached by content hash."""
    from runner.images import build_images

    tags = build_images(names or None, force=force, log=lambda m: console.print(f"  {m}", markup=False))
    for name, tag in tags.items():
        console.print(f"[green]{name}[/green] {tag}")


if __name__ == "__main__":
    sys.exit(app())
