"""Where ``runner.training`` (the control plane's rules for training jobs) first lived. It moved
to the top of the package so that tests can import it without importing the supervisor (and so
Ray, whose auth settings are read at its first import); this name stays for existing imports."""

from runner.training import (  # noqa: F401
    EXIT_BAD_INPUT, FAILED_PEER_GRACE_S, MASTER_PORT_BASE, MASTER_PORT_SPAN, TrainingEvents, checkpoint_mount,
    final_failure, launch_fields, master_port, port_clash, stop_grace,
)  # fmt: skip
