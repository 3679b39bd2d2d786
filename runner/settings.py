"""Settings: one object, built once at the edge (CLI, server start) and passed down.

Nothing below the edge reads environment variables: the core gets a ``Settings`` and the paths
derived from it. ``RUNNER_HOME`` (default ``~/.runner``) holds everything a CPU-mode cluster
owns: the database, the Ray token, the API key, logs and the record of started processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.errors import UserError

if TYPE_CHECKING:
    import ssl

    from runner.core.network_store import NetworkStore
    from runner.tls import TlsFiles

#: Workers of the process runtime run commands from here: the checkout that holds `workloads/`.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    home: Path
    server_host: str = "127.0.0.1"
    server_port: int = 8470
    ray_port: int = 6390
    #: SQLAlchemy URL; empty means a SQLite file in ``home``.
    database_url: str = ""
    #: ``auto`` (Docker when an engine answers, else processes), ``docker`` or ``process``.
    runtime: str = "auto"
    #: Where the process runtime runs commands (must contain ``workloads/``).
    workdir: Path = field(default=PROJECT_ROOT)
    #: Supervisor cadence: how often running replicas' logs are pulled and nodes refreshed.
    poll_interval_s: float = 0.25
    #: The network's rules (policy, market, SLA, checker); empty means the packaged default.
    network_config: str = ""
    #: Country of the local tenant `runner up --cpu` creates (export control reads it).
    tenant_country: str = "NL"
    #: Where the services' gateway listens (``runner/gateway``). Port 0: `runner up` picks one
    #: (the one this home used before, if it is free) and keeps it in ``gateway.json``.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 0
    #: The address providers' machines (and players) reach this head at: the Ray head's node
    #: address, and so what a joining machine is granted. Loopback in CPU mode; `runner up
    #: --advertise ADDR` keeps another in ``head.json`` for every later command of this home.
    advertise: str = "127.0.0.1"
    #: The network's image registry (``host:port``, as provider hosts reach it) that their
    #: engines pull from on first use; empty in CPU mode, where every node shares this engine.
    registry: str = ""
    #: A provider machine's image cache: GB of images pulled from the registry its engine keeps,
    #: the least recently used evicted past it (``runtime.imagecache``); `runner node join` hands
    #: it to the machine's agent. 50: a few GPU images (torch with CUDA is ~10 GB), well inside a
    #: provider's disk.
    image_cache_gb: float = 50.0
    #: The network's own S3 store (``s3://BUCKET[/PREFIX]``) and the endpoint providers' machines
    #: reach it at: where a workload's artifacts go when its spec names none, across hosts
    #: (``runner/core/network_store.py``). `runner up --store` keeps them in ``head.json``; empty: none.
    store: str = ""
    store_endpoint: str = ""
    #: TLS on the network's own links: the API over HTTPS, Ray's gRPC with mutual TLS
    #: (``runner.tls``). Off (``RUNNER_TLS=0``) only to measure what it costs, side by side
    #: (``bench/startup.py --tls off``): without it any process that has the token is let in.
    tls: bool = True

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None, **overrides: object) -> "Settings":
        """Read ``RUNNER_*`` environment variables; only the CLI and server entry points call this."""
        env = os.environ
        home_path = Path(home or env.get("RUNNER_HOME") or Path.home() / ".runner").expanduser()
        head = read_head_record(home_path)  # what `runner up --advertise` chose for this home
        advertise = env.get("RUNNER_ADVERTISE") or head.get("advertise") or cls.advertise
        base = cls(
            home=home_path,
            server_host=env.get("RUNNER_SERVER_HOST") or head.get("advertise") or cls.server_host,
            server_port=int(env.get("RUNNER_SERVER_PORT", cls.server_port)),
            ray_port=int(env.get("RUNNER_RAY_PORT", cls.ray_port)),
            database_url=env.get("RUNNER_DATABASE_URL", ""),
            runtime=env.get("RUNNER_RUNTIME", cls.runtime),
            network_config=env.get("RUNNER_NETWORK_CONFIG", ""),
            tenant_country=env.get("RUNNER_TENANT_COUNTRY", cls.tenant_country),
            gateway_host=env.get("RUNNER_GATEWAY_HOST") or head.get("advertise") or cls.gateway_host,
            gateway_port=int(env.get("RUNNER_GATEWAY_PORT", cls.gateway_port)),
            advertise=advertise,
            registry=env.get("RUNNER_REGISTRY", head.get("registry", "")),
            store=env.get("RUNNER_STORE", head.get("store", "")),
            store_endpoint=env.get("RUNNER_STORE_ENDPOINT", head.get("store_endpoint", "")),
            image_cache_gb=_gigabytes("RUNNER_IMAGE_CACHE_GB", env.get("RUNNER_IMAGE_CACHE_GB"), cls.image_cache_gb),
            tls=env.get("RUNNER_TLS", "1") not in ("0", "off", "false"),
        )
        return replace(base, **overrides) if overrides else base  # type: ignore[arg-type]

    # Paths derived from home: one place names them all.
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'runner.db'}"

    @property
    def shared_filesystem(self) -> bool:
        """Whether every node sees this machine's files: in CPU mode they are this machine; a
        head that providers reach over a network (``advertise`` not loopback) has separate hosts."""
        return self.advertise.startswith("127.") or self.advertise in ("localhost", "::1")

    def make_home(self) -> Path:
        """This home, made owner-only (0700) whatever it was before: the database, the keys, the
        logs, request files and artifacts under it are this machine's owner's alone, whatever
        their own modes say (another user cannot enter the folder). Containers are unaffected:
        the engine binds their folders as root."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.chmod(0o700)
        return self.home

    @property
    def node_runtime(self) -> str:
        """The runtime nodes' agents run replicas with. A network's nodes run containers only: the
        process runtime is a shell on the host (no isolation, the machine's files), so it is CPU
        mode's alone, where every node is the operator's own machine; and ``auto`` never falls
        back to it on a provider's machine without Docker."""
        return self.runtime if self.shared_filesystem else "docker"

    @property
    def network_store(self) -> "NetworkStore | None":
        """The network's S3 store, when the head was given one."""
        from runner.core.network_store import NetworkStore

        return NetworkStore(uri=self.store, endpoint=self.store_endpoint) if self.store else None

    @property
    def store_admin_path(self) -> Path:
        """The network store's admin credential (0600): it never leaves the head."""
        return self.home / "store-admin.json"

    @property
    def store_keys_dir(self) -> Path:
        """Each workload's own store credential, kept until the workload ends."""
        return self.home / "store-keys"

    @property
    def ray_address(self) -> str:
        return f"{self.advertise}:{self.ray_port}"

    @property
    def head_record_path(self) -> Path:
        """Where `runner up --advertise` keeps the head's address and registry for this home."""
        return self.home / "head.json"

    @property
    def server_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.server_host}:{self.server_port}"

    @property
    def tls_files(self) -> "TlsFiles | None":
        """This home's certificates (``runner.tls``); None when the network runs without TLS."""
        from runner.tls import TlsFiles

        return TlsFiles.of(self.home) if self.tls else None

    @property
    def server_ca(self) -> Path | None:
        """What a client of this home checks the API's certificate against."""
        return self.tls_files.ca if self.tls_files else None

    @property
    def server_verify(self) -> "ssl.SSLContext | bool":
        """What an HTTPS client of this home checks the API against (httpx's ``verify``)."""
        from runner.tls import trusting

        return trusting(self.server_ca)

    @property
    def ray_token_path(self) -> Path:
        return self.home / "ray-token"

    @property
    def secrets_key_path(self) -> Path:
        """The key tenants' secrets are sealed with in the database (``runner.secret_box``)."""
        return self.home / "secrets-key"

    @property
    def control_key_path(self) -> Path:
        """The control plane's signing key (``runner.node_keys``): agents act on what it signs."""
        return self.home / "control-key"

    @property
    def api_key_path(self) -> Path:
        return self.home / "api-key"

    @property
    def admin_key_path(self) -> Path:
        """The operator's key: admin routes (KYC, tokens, audit, drains), no tenant."""
        return self.home / "admin-key"

    @property
    def cluster_record_path(self) -> Path:
        return self.home / "cluster.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def ray_temp_dir(self) -> Path:
        # Ray puts unix sockets under here; their paths must stay under ~107 bytes, so keep it short.
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:10]
        return Path("/tmp") / f"runner-ray-{digest}"

    @property
    def artifacts_dir(self) -> Path:
        """The default artifact store (checkpoints) of a CPU-mode network: file:// under home."""
        return self.home / "artifacts"

    @property
    def gateway_record_path(self) -> Path:
        """The gateway's address once `runner up` chose it: the server and the CLI read it."""
        return self.home / "gateway.json"

    @property
    def replicas_dir(self) -> Path:
        return self.home / "replicas"


def _gigabytes(name: str, value: str | None, default: float) -> float:
    """A size in GB from the environment (0 to a petabyte), or the default when unset."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not 0 <= number <= 1e6:
        raise UserError(f"{name}={value!r}: expected a size in GB from 0 to 1000000. To fix: {name}=50, say")
    return number


def read_head_record(home: Path) -> dict[str, str]:
    """The head's address and registry that `runner up --advertise` kept in ``home``; {} if none."""
    path = home / "head.json"
    try:
        return {k: str(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}
