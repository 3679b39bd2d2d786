"""The head runs no Ray worker: a Python worker its raylet starts exits here, before it registers.

Ray lets any holder of the cluster's token and a certificate (every provider's machine) schedule
a task or an actor on any node, the head included (a zero-CPU task fits a node with no CPUs), and
the head holds the control plane's state: its database, the operator's keys, the CA's key. No
Ray option keeps work off a node, so this file does, from outside Ray: it is on the head
raylet's ``PYTHONPATH`` only (``runner.cluster.start_head``), Python imports it first in every
process, and a process that is a Ray worker (``default_worker.py`` in its command line) writes one
line to ``$RUNNER_HEAD_REFUSALS`` and exits. The head's other Python processes (Ray's agents and
monitors) and the control plane (a driver, which the raylet does not start) run on.
"""

import os
import sys
import time

if any(arg.endswith("default_worker.py") for arg in getattr(sys, "orig_argv", sys.argv)):
    log = os.environ.get("RUNNER_HEAD_REFUSALS")
    if log:
        try:
            with open(log, "a") as fh:
                fh.write(f"{time.time():.3f} refused a Ray worker on the head (pid {os.getpid()})\n")
        except OSError:
            pass
    os._exit(77)
