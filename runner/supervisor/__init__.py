"""The supervisor package: the loop (``core``), Ray's nodes and their agents (``cluster_view``),
replica calls (``replicas``), gang attempts (``gang``), services (``service``), sessions
(``session``), preemption (``preempt``), where work goes (``placing``), money (``metering``) and
the node checker (``checker``)."""

from runner.supervisor.core import Supervisor

__all__ = ["Supervisor"]
