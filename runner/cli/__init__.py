"""The `runner` command line (Typer + Rich): a thin layer over the client and CPU-mode cluster.

    workloads.py   validate, schema, submit, ls, status, logs, cancel, explain
    cluster.py     up, down, server, nodes, images build
    market.py      bill, earnings, node join/drain/offboard/activate/challenge, admin ...
"""

from runner.cli import workloads, cluster, market  # noqa: F401,I001  (they register their commands, in this order)
from runner.cli.common import app

__all__ = ["app"]
