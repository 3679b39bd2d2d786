"""What every command shares: the Typer app, consoles, error handling, settings and clients.

Every ``RunnerError`` becomes one red line and its exit code (2: your input, 3: the workload
failed, 4: the cluster or server is not there); tracebacks are left for bugs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from runner.core.errors import RunnerError, UserError
from runner.core.ledger import MICROS
from runner.settings import Settings

if TYPE_CHECKING:
    from runner.client import Client

app = typer.Typer(
    help="runner: run containerized workloads on rented GPU nodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
#: Tables are not cut to 80 columns when the output is a file or a pipe (a log, a CI run): only a
#: terminal has a width to respect (COLUMNS still wins when set).
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)
F = TypeVar("F", bound=Callable[..., Any])
#: The ``--json`` option of every listing command.
JSON = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
STATE_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "RETRYING": "magenta",
    "active": "green",
    "suspended": "red",
    "draining": "yellow",
    "offboarded": "dim",
}


def friendly(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunnerError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def settings(**overrides: Any) -> Settings:
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def client(*, operator: bool = False) -> Client:
    """The API client of this home's control plane (the operator's key with ``operator``); its
    answers are the API's own types (``runner.api.schemas``)."""
    from runner.client import Client

    return Client.from_settings(settings(), operator=operator)


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def usd(micros: int | None) -> str:
    """Micro-USD as dollars, to the micro: 2500000 -> '$2.500000' (exact; --json gives micros)."""
    if micros is None:
        return "-"
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    return f"{sign}${whole:,}.{frac:06d}"


def print_json(data: Any) -> None:
    print(json.dumps(data))


def gpu_arg(text: str | None, *, option: str) -> tuple[str, int] | None:
    """``MODEL[:COUNT]`` as typed after ``option`` (``H100:2``; the count defaults to one)."""
    if not text:
        return None
    model, _, count = text.partition(":")
    if count and not count.isdigit():
        raise UserError(f"{option}: expected MODEL[:COUNT], e.g. H100:2, got {text!r}")
    return model, int(count or 1)


def join_command(
    s: Settings, *, token: str, provider: str, region: str = "REGION", country: str = "CC", simulate_gpu: str = ""
) -> str:
    """The exact `runner node join` a provider's machine runs, printed the way `kubeadm init`
    prints `kubeadm join`: the head's URL as providers reach it, the token, and what the token
    approved for the machine (a real GPU the machine finds itself; a simulated one is named)."""
    line = f"runner node join --head {s.server_url} --token {token} --provider {provider} --region {region} --country {country}"
    if s.tls_files and s.tls_files.ca.exists():
        line += f" --ca-cert-hash {s.tls_files.pin()}"
    return line + (f" --simulate-gpu {simulate_gpu}" if simulate_gpu else "")
