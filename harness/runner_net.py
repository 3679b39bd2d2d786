"""A runner network on the harness: the head as `runner up --advertise` makes it, in this
machine's root namespace, and provider hosts that join it with `runner node join`, each from
inside its own namespace, with its own engine and its own runner home.

Nothing here is a shortcut around the product: the head is ``local.up(head_only=True)`` (what the
CLI runs), the images reach hosts through the head's registry, and each host joins with the CLI
command a provider types, so what a test sees is what a provider's machine would do.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.hosts import Host
from harness.network import Network
from runner import local, registry
from runner.client import Client
from runner.settings import Settings

RUNNER = str(Path(sys.executable).parent / "runner")


@dataclass
class Head:
    """The head of a network on the harness and its two clients (operator, the local tenant)."""

    settings: Settings
    operator: Client
    tenant: Client
    joined: dict[str, Any] = field(default_factory=dict)  # host name -> its `runner node join` process


def start_head(net: Network, home: Path, *, server_port: int, ray_port: int, images: list[str]) -> Head:
    """`runner up --advertise <the head's address>` in ``home``, then push ``images``."""
    settings = Settings(home=home, advertise=net.head_address, server_host=net.head_address,
                        gateway_host=net.head_address, server_port=server_port, ray_port=ray_port,
                        registry=net.registry or "", runtime="docker")  # fmt: skip
    local.up(settings, head_only=True, say=lambda _m: None)
    if images:
        registry.push(settings, images, say=lambda _m: None)
    operator = Client(settings.server_url, settings.admin_key_path.read_text().strip())
    tenant = Client(settings.server_url, settings.api_key_path.read_text().strip())
    return Head(settings=settings, operator=operator, tenant=tenant)


def stop_head(head: Head) -> None:
    local.down(head.settings, say=lambda _m: None)


def join(head: Head, host: Host, *, provider: str, region: str, country: str, cpus: float = 1,
         memory_gb: float = 1, timeout_s: float = 90) -> None:  # fmt: skip
    """Join ``host`` as a provider's machine would: the operator admits the provider and issues
    a token; on the host, `runner node join` benchmarks, registers and runs its Ray node."""
    op = head.operator
    if provider not in {p["id"] for p in op.admin("GET", "/providers")}:
        op.admin("POST", "/providers", id=provider, country=country, kyc="verified", stake_usd=100)
    token = op.admin("POST", "/tokens", provider=provider, ttl_s=600)["token"]
    shutil.rmtree(host.home, ignore_errors=True)
    host.home.mkdir(parents=True)
    head.joined[host.name] = host.run(
        [RUNNER, "node", "join", "--head", head.settings.server_url, "--token", token, "--provider", provider,
         "--region", region, "--country", country, "--name", host.name, "--cpus", f"{cpus:g}",
         "--memory-gb", f"{memory_gb:g}"],
        log=host.root / "join.log",
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = head.joined[host.name]
        if proc.poll() is not None:
            raise RuntimeError(f"{host.name}: runner node join exited {proc.returncode}: "
                               f"{(host.root / 'join.log').read_text()[-2000:]}")  # fmt: skip
        if any(n["name"] == host.name and n["state"] == "active" and n["alive"] for n in op.nodes()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{host.name} did not become active in {timeout_s:.0f}s: "
                       f"{(host.root / 'join.log').read_text()[-2000:]}")  # fmt: skip
