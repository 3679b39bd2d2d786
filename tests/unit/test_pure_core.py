"""The pure core stays pure: each of its modules, imported alone in a fresh interpreter, pulls in
none of the libraries that do I/O. A module that starts importing the store, Ray or an HTTP
client fails here, by name, instead of making the rules slow to test and hard to reason about."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import runner.core

#: The modules that decide (specs, rules, placement, money, trust): rows and numbers in, decisions
#: out. Every module of ``runner.core`` is one, found by walking the package, so a new module is
#: checked without being listed; the harness's link model (pure, the WAN's rules) and the game
#: stream's rate controller (pure, a player's bitrate) are named here.
PURE = tuple(
    ["runner.core"]
    + [info.name for info in pkgutil.walk_packages(runner.core.__path__, prefix="runner.core.")]
    + ["harness.linkmodel", "workloads.gaming.rate"]
)
#: What the core must not load: engines, clusters, databases, networks, GPUs.
IO_LIBRARIES = ("ray", "docker", "sqlalchemy", "httpx", "fastapi", "aiohttp", "uvicorn", "boto3", "torch")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)))
"""


@pytest.mark.parametrize("module", PURE)
def test_a_core_module_imports_no_io_library(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(IO_LIBRARIES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"{module} imports {json.loads(done.stdout)}"


def test_the_probe_catches_an_io_import() -> None:
    """The check itself can fail: the store's module does load SQLAlchemy."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "runner.store", json.dumps(IO_LIBRARIES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == ["sqlalchemy"]


def test_the_core_is_the_whole_core() -> None:
    """The walk finds the modules the core is known to hold (a wrong path would find none)."""
    assert {"runner.core.spec.models", "runner.core.placement", "runner.core.ledger", "runner.core.events"} <= set(PURE)
    assert len(PURE) >= 28
