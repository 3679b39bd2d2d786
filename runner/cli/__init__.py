"""The `runner` command line (Typer + Rich): a thin layer over the client and CPU-mode cluster.

    workloads.py   validate, schema, submit, ls, status, logs, cancel, explain
    cluster.py     up, down, server, nodes, images build
    market.py      bill, earnings, node join/drain/offboard/activate/challenge, admin ...
    sessions.py    session start, ls, end (gaming)
    services.py    endpoint, services, gateway (inference services)
    artifacts.py   artifacts ls/get (a training job's checkpoints)
    training.py    the progress bar of submit --follow and status figures (training jobs)
"""

from runner.cli import workloads, sessions, services, artifacts, cluster, market  # noqa: F401,I001  (they register their commands, in this order)
from runner.cli.common import app

__all__ = ["app"]
