"""Cluster commands: up, down, server, nodes, images build."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from runner.cli.common import app, client, console, err, friendly, join_command, print_json, settings, styled
from runner.core.errors import UserError
from runner.core.ledger import to_usd

images_app = typer.Typer(help="Build the workload images.", no_args_is_help=True)
app.add_typer(images_app, name="images")


@app.command()
@friendly
def up(
    cpu: Annotated[bool, typer.Option("--cpu", help="CPU mode: simulated provider nodes on this machine.")] = False,
    advertise: Annotated[
        str | None,
        typer.Option(
            help="The head of a real network: the address providers' machines and players reach this machine at. "
            "Ray, the control plane, the gateway and the image registry listen there; no local nodes."
        ),
    ] = None,
    registry_port: Annotated[int, typer.Option(help="With --advertise: the image registry's port.")] = 5000,
    store: Annotated[
        str | None,
        typer.Option(
            help="With --advertise: the network's S3 store, s3://BUCKET[/PREFIX], where workloads' artifacts go when "
            "their spec names none. Its admin credential comes from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "and stays on this machine; each workload gets its own."
        ),
    ] = None,
    store_endpoint: Annotated[
        str | None,
        typer.Option(help="With --store: the store's URL as providers' machines reach it, e.g. http://10.0.0.1:9000."),
    ] = None,
    fleet: Annotated[Path | None, typer.Option(help="Fleet file (default: the packaged 4-node fleet).")] = None,
    runtime: Annotated[str | None, typer.Option(help="auto (Docker if an engine answers), docker or process.")] = None,
) -> None:
    """Start a cluster: Ray head, the control plane, and provider nodes that join it.

    One verb for both shapes of network (as `kubeadm init` is one verb with flags): `--cpu`
    simulates the providers on this machine; `--advertise ADDR` starts only the head, for
    providers' machines that join with `runner node join`, and prints how they do.
    """
    from runner import local
    from runner.runtime import docker_available

    if cpu == (advertise is not None):
        raise UserError(
            "runner up needs one of --cpu (a simulated network on this machine) or --advertise ADDR "
            "(the head of a network that providers' machines join)"
        )
    if advertise is None and (store or store_endpoint):
        raise UserError("--store and --store-endpoint go with --advertise: in CPU mode artifacts stay in this home")
    if advertise is not None:
        _head_up(advertise, registry_port, runtime, store=store, store_endpoint=store_endpoint)
        return
    settings().head_record_path.unlink(missing_ok=True)  # CPU mode: this home's head is on loopback again
    s = settings(runtime=runtime)
    if s.runtime in ("auto", "docker") and not docker_available():
        if s.runtime == "docker":
            raise UserError("--runtime docker, but no Docker engine answers. To fix: start dockerd")
        err.print(
            "[yellow]note:[/yellow] no Docker engine answers: workloads run as host processes "
            "(process runtime). Start dockerd and run `runner down && runner up --cpu` to use containers."
        )
    started = time.monotonic()
    local.up(s, fleet_path=str(fleet) if fleet else None, say=lambda m: console.print(f"  {m}"))
    console.print(f"[green]cluster up[/green] in {time.monotonic() - started:.1f}s. Try: runner nodes")


def _head_up(
    advertise: str, registry_port: int, runtime: str | None, *, store: str | None, store_endpoint: str | None
) -> None:
    """`runner up --advertise`: the head of a network, on the address its providers reach."""
    import json
    import socket

    from runner import local

    if runtime == "process":
        raise UserError(
            "--runtime process: a network's nodes run workloads in containers only (a process is a shell on "
            "the provider's machine). The process runtime is for CPU mode: runner up --cpu --runtime process"
        )
    try:
        socket.create_server((advertise, 0)).close()
    except OSError as exc:
        raise UserError(
            f"--advertise {advertise}: this machine cannot listen there ({exc.strerror}). "
            "To fix: give one of this machine's own addresses (ip -4 addr)"
        ) from None
    home = settings().make_home()
    record = {"advertise": advertise, "registry": f"{advertise}:{registry_port}"}
    if store or store_endpoint:
        record.update(_network_store(home, store, store_endpoint))
    (home / "head.json").write_text(json.dumps(record))  # every later command of this home reads it
    s = settings(runtime=runtime)
    started = time.monotonic()
    local.up(s, head_only=True, say=lambda m: console.print(f"  {m}"))
    console.print(
        f"[green]head up[/green] on {advertise} in {time.monotonic() - started:.1f}s. To let a provider's machine join:"
    )
    console.print("  runner admin provider add PROVIDER --country CC --stake 100 --kyc verified")
    console.print("  runner admin token issue PROVIDER      # prints the join command with its token")
    console.print("  runner images push                     # the workload images, for providers to pull")
    console.print("then on that machine (ports it opens: Ray's node ports to the head, and its replicas' ports):")
    console.print(f"  {join_command(s, token='TOKEN', provider='PROVIDER')}", soft_wrap=True)
    if s.store:
        console.print(
            f"artifacts go to {s.store} ({s.store_endpoint}) unless a spec names its own; "
            "each workload gets a credential of its own"
        )


def _network_store(home: Path, uri: str | None, endpoint: str | None) -> dict[str, str]:
    """Check `runner up --store`'s flags and the store itself (its bucket made if missing), and keep
    its admin credential in the head's home, readable by the operator only."""
    import os

    from runner.core.network_store import parse_store
    from runner.store_credentials import write_private

    if not (uri and endpoint):
        raise UserError("--store and --store-endpoint go together: the bucket, and where providers' machines reach it")
    try:
        store = parse_store(uri, endpoint)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        raise UserError(
            "--store needs the store's admin credential in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(it stays on this machine; workloads get credentials of their own)"
        )
    import boto3
    import botocore.exceptions

    s3 = boto3.client(
        "s3", endpoint_url=store.endpoint, region_name=store.region, aws_access_key_id=key, aws_secret_access_key=secret
    )
    try:
        try:
            s3.head_bucket(Bucket=store.bucket)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            s3.create_bucket(Bucket=store.bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise UserError(f"--store {uri} at {endpoint}: {exc}. To fix: check the endpoint and the credential") from None
    write_private(home / "store-admin.json", {"access_key_id": key, "secret_access_key": secret})
    return {"store": store.uri, "store_endpoint": store.endpoint}


@app.command()
@friendly
def down() -> None:
    """Stop exactly what `runner up` started."""
    from runner import local

    if not local.down(settings(), say=lambda m: console.print(f"  {m}")):
        console.print("no cluster is up for this home")
        return
    console.print("[green]cluster down[/green]")


@app.command()
@friendly
def server() -> None:
    """Run the control plane in the foreground (`runner up` starts it for you)."""
    from runner.server import serve

    serve(settings())


@app.command()
@friendly
def nodes(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Provider nodes: lifecycle state, liveness, location, GPUs, price, benchmark, reliability."""
    rows = client().nodes()
    if as_json:
        print_json(rows)
        return
    table = Table("NODE", "STATE", "UP", "PROVIDER", "WHERE", "GPU", "$/GPU-H", "TFLOPS", "REL", "REPL", box=None)
    for n in rows:
        gpu = f"{n['gpu_count']}x{n['gpu_model']}" if n["gpu_model"] else "cpu"
        if n["simulated"]:
            gpu += "*"
        rel = "-" if n["reliability"] is None else f"{n['reliability']:.3f}"
        price = f"{to_usd(n['gpu_price_micros']):.2f}" if n["gpu_model"] else "-"
        table.add_row(
            n["name"],
            styled(n["state"]),
            "[green]yes[/green]" if n["alive"] else "[red]no[/red]",
            n["provider"],
            f"{n['region']}/{n['country']}",
            gpu,
            price,
            f"{n['verified_tflops']:.3g}",
            rel,
            str(n["replicas"]),
        )
    for column in table.columns:
        column.no_wrap = True
    console.print(table)
    if any(n["simulated"] for n in rows):
        console.print("* simulated GPU (CPU mode): scheduled as a Ray logical GPU, work runs on the CPU")


@images_app.command("build")
@friendly
def images_build(
    names: Annotated[list[str] | None, typer.Argument(help="Images to build (default: all).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when the content hash is unchanged.")] = False,
    verbose: Annotated[
        bool | None,
        typer.Option(
            "--verbose", "-v", show_default=False, help="Stream the full build output (default: RUNNER_VERBOSE)."
        ),
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option(help="Append the full output to this file (default: a fresh images-build.log in the cache)."),
    ] = None,
) -> None:
    """Build images from Debian packages and local wheels (works offline); cached by content hash.

    One row per image; the full output goes to a log file, whose last lines show on failure.
    """
    from runner.images import build_images_for_console

    build_images_for_console(names or None, console, force=force, verbose=verbose, log_file=log_file)


@images_app.command("push")
@friendly
def images_push(
    names: Annotated[list[str] | None, typer.Argument(help="Workload images to push (default: all four).")] = None,
) -> None:
    """Push the workload images (content-hashed tags and latest) to this head's registry, from
    which providers' machines pull them on first use, and pin each by its digest: nodes run what
    was pushed here, whatever anyone pushes under the same name later."""
    from runner import registry

    pushed = registry.push(settings(), names or None, say=lambda m: console.print(f"  {m}"))
    operator = client(operator=True)
    for reference, digest in pushed.items():
        operator.admin("PUT", "/images", reference=reference, digest=digest)
    console.print(f"  pinned {len(pushed)} references: nodes pull them by digest")
