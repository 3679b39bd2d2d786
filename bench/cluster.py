"""A CPU-mode runner cluster for a benchmark: a private temporary home on free ports, torn down
after, so a bench never meets a cluster a developer (or another bench, or a test session) has up.

    with bench_cluster(say=print) as settings:
        env = cluster_env(settings)      # RUNNER_* for `runner ...` subprocesses against it

On success the temporary home and Ray's temporary folder are deleted; after a failure they are
kept, so ``<home>/logs`` can be read.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.settings import Settings

#: Pause after `up` (two supervisor node refreshes), so the first measured call finds the agents.
SETTLE_S = 2.5


def free_ports(nodes: int = 4) -> tuple[int, int]:
    """A server port and a Ray port whose node port block is free (as tests/conftest.py picks)."""
    from bench.startup import busy_ports

    rng = random.Random()
    for _ in range(200):
        ray_port = rng.randrange(7000, 9800, 2)
        if not busy_ports(ray_port, ray_port + 1, nodes):
            return ray_port + 1, ray_port
    raise SystemExit("no free port block for a bench cluster")


def cluster_env(settings: Settings) -> dict[str, str]:
    """The environment a `runner` subprocess needs to talk to this cluster."""
    return {
        **os.environ,
        "RUNNER_HOME": str(settings.home),
        "RUNNER_SERVER_PORT": str(settings.server_port),
        "RUNNER_RAY_PORT": str(settings.ray_port),
    }


def stop_cluster(settings: Settings) -> None:
    """Stop what ``local.up`` started, and this process's Ray driver (``local.up`` made it one)."""
    from runner import local

    local.down(settings, say=lambda _m: None)
    try:
        import ray

        ray.shutdown()
    except Exception:
        pass


@contextmanager
def bench_cluster(*, say: Callable[[str], None], images: tuple[str, ...] = ()) -> Iterator[Settings]:
    """Build ``images`` (cached by content hash), start the cluster, yield its settings, stop it."""
    from runner import local
    from runner.images import build_images

    if images:
        build_images(list(images), log=lambda _m: None)
    home = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    server_port, ray_port = free_ports()
    # Docker runtime explicitly: a session publishes its port through Docker.
    settings = Settings.from_env(home=home, server_port=server_port, ray_port=ray_port, runtime="docker")
    t0 = time.perf_counter()
    ok = False
    try:
        local.up(settings, say=lambda m: say(f"  {m}"))
        say(f"cluster up in {time.perf_counter() - t0:.1f}s (home {home}, server port {server_port})")
        time.sleep(SETTLE_S)
        yield settings
        ok = True
    finally:
        stop_cluster(settings)
        if ok:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(settings.ray_temp_dir, ignore_errors=True)
        else:
            say(f"kept {home} for its logs")
