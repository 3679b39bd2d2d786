"""The pure core stays pure: each of its modules, imported alone in a fresh interpreter, pulls in
none of the libraries that do I/O. A module that starts importing the store, Ray or an HTTP
client fails here, by name, instead of making the rules slow to test and hard to reason about."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: The modules that decide (specs, rules, placement, money, trust): rows and numbers in, decisions out.
PURE = (
    "runner.spec", "runner.spec.fields", "runner.spec.models", "runner.spec.parsing", "runner.catalog",
    "runner.states", "runner.policy", "runner.demand", "runner.rules", "runner.nodetable", "runner.placement",
    "runner.service_placement", "runner.ledger", "runner.audit", "runner.sla", "runner.preemption",
    "runner.services", "runner.autoscale", "runner.sessions", "runner.training", "runner.mounts", "runner.regions",
    "runner.network", "runner.network_store", "runner.contract", "runner.errors", "runner.events",
    "harness.linkmodel",
)  # fmt: skip
#: What the core must not load: engines, clusters, databases, networks, GPUs.
IO_LIBRARIES = ("ray", "docker", "sqlalchemy", "httpx", "fastapi", "aiohttp", "uvicorn", "boto3", "torch")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)))
"""


@pytest.mark.parametrize("module", PURE)
def test_a_core_module_imports_no_io_library(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, module, json.dumps(IO_LIBRARIES)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"{module} imports {json.loads(done.stdout)}"


def test_the_probe_catches_an_io_import() -> None:
    """The check itself can fail: the store's module does load SQLAlchemy."""
    done = subprocess.run([sys.executable, "-c", PROBE, "runner.store", json.dumps(IO_LIBRARIES)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(done.stdout) == ["sqlalchemy"]
