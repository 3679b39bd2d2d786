"""Where the gateway listens: chosen once per home, kept in ``$RUNNER_HOME/gateway.json``.

A service's endpoint URL must not change while the service lives, and services outlive a
`runner down` / `runner up` of the same home (their replicas are replaced on the next up). So the
port is chosen once: the configured one (``RUNNER_GATEWAY_PORT``) if set, else the one this home
used before if it is still free, else a free one from the kernel. Tests and benches run several
clusters on one machine at once, each in its own home, so a fixed default port would collide.
"""

from __future__ import annotations

import json
import socket

from runner.settings import Settings


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def recorded(settings: Settings) -> tuple[str, int] | None:
    """The address in ``gateway.json``, if there is one."""
    try:
        doc = json.loads(settings.gateway_record_path.read_text())
        return str(doc["host"]), int(doc["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def choose(settings: Settings) -> tuple[str, int]:
    """The address the gateway of this home listens on, written to ``gateway.json``."""
    host = settings.gateway_host
    if settings.gateway_port:
        port = settings.gateway_port
    else:
        before = recorded(settings)
        if before and before[0] == host and _free(host, before[1]):
            port = before[1]
        else:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
    settings.make_home()
    tmp = settings.gateway_record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": host, "port": port}))
    tmp.replace(settings.gateway_record_path)
    return host, port


def gateway_url(settings: Settings) -> str | None:
    """``http://host:port`` of this home's gateway, or None when none was ever started."""
    if settings.gateway_port:
        host, port = settings.gateway_host, settings.gateway_port
    else:
        found = recorded(settings)
        if found is None:
            return None
        host, port = found
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"
