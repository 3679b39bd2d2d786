"""The supervisor package: the loop (``core``), the Ray fleet and agents (``fleet``), replica
calls (``replicas``), gang attempts (``gang``) and the market at work (``market``)."""

from runner.supervisor.core import Supervisor

__all__ = ["Supervisor"]
