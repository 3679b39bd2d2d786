"""A runner network on the harness: the head as `runner up --advertise` makes it, in this
machine's root namespace, and provider hosts that join it with `runner node join`, each from
inside its own namespace, with its own engine and its own runner home.

Nothing here is a shortcut around the product: the head is started, fed images and stopped with
the operator's own commands (`runner up --advertise`, `runner images push`, `runner down`), the
images reach hosts through the head's registry, and each host joins with the command a provider
types, so what a test sees is what a provider's machine would do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.hosts import Host
from harness.network import Network
from runner.cli.common import gpu_arg
from runner.client import Client
from runner.node_keys import NODE_KEYS_FILE
from runner.settings import Settings

RUNNER = str(Path(sys.executable).parent / "runner")


@dataclass
class Head:
    """The head of a network on the harness and its two clients (operator, the local tenant)."""

    settings: Settings
    operator: Client
    tenant: Client
    up_output: str = ""  # what `runner up --advertise` printed
    joined: dict[str, Any] = field(default_factory=dict)  # host name -> its `runner node join` process


def runner_cli(
    args: list[str],
    home: Path,
    *,
    server_port: int,
    ray_port: int,
    timeout_s: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One `runner` command as the operator types it on the head, in ``home`` (``env``: more)."""
    env = {
        **os.environ,
        "RUNNER_HOME": str(home),
        "RUNNER_SERVER_PORT": str(server_port),
        "RUNNER_RAY_PORT": str(ray_port),
        "COLUMNS": "250",
        **(env or {}),
    }
    done = subprocess.run([RUNNER, *args], env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"runner {' '.join(args)}: exit {done.returncode}: {done.stderr[-3000:]}")
    return done


@dataclass(frozen=True)
class StoreFlags:
    """`runner up --store` for a head: the bucket, its endpoint, its admin credential."""

    uri: str
    endpoint: str
    admin: dict[str, str]


def start_head(
    net: Network,
    home: Path,
    *,
    server_port: int,
    ray_port: int,
    images: list[str],
    store: StoreFlags | None = None,
    env: Mapping[str, str] | None = None,
) -> Head:
    """`runner up --advertise <the head's address>` in ``home`` (with the network's store, when
    given; ``env`` on top of this process's, read by the head's processes), then `runner images push`."""
    assert net.registry, "the network needs a registry port for its head"
    ports = {"server_port": server_port, "ray_port": ray_port}
    argv = ["up", "--advertise", net.head_address, "--registry-port", net.registry.rsplit(":", 1)[1]]
    env = dict(env or {})
    if store is not None:
        argv += ["--store", store.uri, "--store-endpoint", store.endpoint]
        env["AWS_ACCESS_KEY_ID"] = store.admin["access_key_id"]
        env["AWS_SECRET_ACCESS_KEY"] = store.admin["secret_access_key"]
    up = runner_cli(argv, home, env=env, **ports)
    settings = Settings.from_env(home, **ports)  # what the CLI kept in head.json, and these ports
    head = Head(
        settings=settings,
        operator=Client(settings.server_url, settings.admin_key_path.read_text().strip(), ca=settings.server_ca),
        tenant=Client(settings.server_url, settings.api_key_path.read_text().strip(), ca=settings.server_ca),
        up_output=up.stdout,
    )
    if images:
        runner_cli(["images", "push", *images], home, **ports)
    return head


@contextmanager
def running_head(
    net: Network,
    hosts: Mapping[str, tuple[str, str, str]],
    *,
    ports: tuple[int, int],
    images: list[str],
    store: StoreFlags | None = None,
    env: Mapping[str, str] | None = None,
    **join_args: Any,
) -> Iterator[Head]:
    """A head for a test module, every one of ``hosts`` (name -> provider, region, country) joined
    with ``join_args``; `runner down` after, whatever happened. The images are built first (cached
    by content hash) and pushed; the head's home is a fresh folder under ~/.cache/runner-tests.
    ``ports``: the control plane's and Ray's (the test session's free ports)."""
    from runner.images import build_images

    build_images(images, log=lambda _m: None)
    base = Path.home() / ".cache" / "runner-tests"
    base.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="head-", dir=base))
    server_port, ray_port = ports
    head = start_head(net, home, server_port=server_port, ray_port=ray_port, images=images, store=store, env=env)
    try:
        for name, (provider, region, country) in hosts.items():
            join(head, net.hosts[name], provider=provider, region=region, country=country, **join_args)
        yield head
    finally:
        stop_head(head)


def stop_head(head: Head) -> None:
    """`runner down` on the head."""
    runner_cli(["down"], head.settings.home, server_port=head.settings.server_port, ray_port=head.settings.ray_port)


def _fresh_home_keeping_keys(home: Path) -> None:
    """Empty a host's runner home for a new join, but keep the machine's keys: they are its
    identity, and a real machine that joins again (after a cut link, a new token) still has them."""
    keys = home / NODE_KEYS_FILE
    kept = keys.read_bytes() if keys.exists() else None
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    if kept is not None:
        keys.write_bytes(kept)
        keys.chmod(0o600)


def join(
    head: Head,
    host: Host,
    *,
    provider: str,
    region: str,
    country: str,
    cpus: float = 1,
    memory_gb: float = 1,
    simulate_gpu: str | None = None,
    timeout_s: float = 90,
    token: str | None = None,
) -> None:
    """Join ``host`` as a provider's machine would: the operator admits the provider and issues
    a token approving the machine as described (``token``: one of the caller's instead, to claim
    what it does not approve); on the host, `runner node join` benchmarks, registers and runs its
    Ray node."""
    op = head.operator
    if provider not in {p["id"] for p in op.admin("GET", "/providers")}:
        op.admin("POST", "/providers", id=provider, country=country, kyc="verified", stake_usd=100)
    model, count = gpu_arg(simulate_gpu, option="simulate_gpu") or (None, 0)
    token = (
        token
        or op.admin(
            "POST",
            "/tokens",
            provider=provider,
            region=region,
            country=country,
            gpu_model=model,
            gpu_count=count,
            simulated=model is not None,
            ttl_s=600,
        )["token"]
    )
    _fresh_home_keeping_keys(host.home)
    head.joined[host.name] = host.run(
        [
            RUNNER,
            "node",
            "join",
            "--head",
            head.settings.server_url,
            "--token",
            token,
            "--provider",
            provider,
            "--region",
            region,
            "--country",
            country,
            "--name",
            host.name,
            "--cpus",
            f"{cpus:g}",
            "--memory-gb",
            f"{memory_gb:g}",
            *(["--simulate-gpu", simulate_gpu] if simulate_gpu else []),
            *(["--ca-cert-hash", head.settings.tls_files.pin()] if head.settings.tls_files else []),
        ],
        log=host.root / "join.log",
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = head.joined[host.name]
        if proc.poll() is not None:
            raise RuntimeError(
                f"{host.name}: runner node join exited {proc.returncode}: "
                f"{(host.root / 'join.log').read_text()[-2000:]}"
            )
        if any(n["name"] == host.name and n["state"] == "active" and n["alive"] for n in op.nodes()):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"{host.name} did not become active in {timeout_s:.0f}s: {(host.root / 'join.log').read_text()[-2000:]}"
    )
