"""The `runner` command line (Typer + Rich): a thin layer over the client and CPU-mode cluster.

workloads.py   validate, schema, submit, ls, status, logs, cancel, explain
cluster.py     up, down, server, nodes, images build
money.py       bill, earnings
node.py        node join/doctor (a provider's machine), drain/offboard/activate/challenge/checks/uptime
admin.py       admin tenant/provider/token/audit (the operator)
sessions.py    session start, ls, end (gaming)
services.py    endpoint, services, gateway (inference services)
artifacts.py   artifacts ls/get (a training job's checkpoints)
keys.py        keys ls/new/rotate/revoke (a tenant's API keys), admin tenant keys/revoke-key
secrets.py     secrets set/ls/rm (a tenant's secrets)
training.py    the progress bar of submit --follow and status figures (training jobs)
"""

from runner.cli import workloads, sessions, services, artifacts, cluster, money, node, admin, keys, secrets  # noqa: F401,I001  (they register their commands, in this order)
from runner.cli.common import app

__all__ = ["app"]
