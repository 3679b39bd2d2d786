"""Entry point: ``python -m workloads.training [flags]`` (``--help`` lists them with their env vars).

The process leaves with ``os._exit`` once ``main`` has returned and its output is flushed (the
checkpoints are written by then): tearing gloo down after a finished run could abort (``terminate
called without an active exception``, SIGABRT) once a peer had exited first, turning a job that
had trained and saved everything into a failed attempt, seen once in CI. Nothing is left to do
at that point that a normal exit would do.
"""

import os
import sys

from workloads.training.train import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
