"""The multi-host tests need what the harness needs: root (namespaces, veths, a dockerd per host)."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(autouse=True)
def _harness_can_run() -> None:
    if os.geteuid() != 0:
        pytest.skip("the multi-host harness needs root (network namespaces, a dockerd per host)")
    for tool in ("ip", "nsenter", "tc", "iptables", "dockerd"):
        if shutil.which(tool) is None:
            pytest.skip(f"the multi-host harness needs {tool}. To fix: scripts/setup.sh")
