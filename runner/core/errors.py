"""One error tree for everything a user of runner can run into.

    RunnerError                      root: the CLI prints one red line and exits non-zero
    ├── UserError                    the user can fix it (exit code 2)
    │   ├── SpecError                a workload spec is invalid (names file, field path, expectation)
    │   ├── FleetError               a fleet file is invalid
    │   ├── ConfigError              the network config file is invalid
    │   ├── PolicyError              refused by policy: KYC, budget, export control
    │   ├── NotFoundError            no such workload / node
    │   ├── ConflictError            idempotency key reused with a different spec
    │   ├── TooManyRequestsError     a tenant holds as much of a shared resource as it may (retry later)
    │   └── AuthError                missing or wrong API key
    ├── ClusterError                 the cluster is not up, or cannot be started (exit code 4)
    │   └── ServerUnavailableError   the control plane does not answer
    ├── RuntimeUnavailableError      no container runtime answers on a node
    ├── PortInUseError               a host-networked replica's port is taken on its node
    ├── ArtifactStoreError           a workload's artifact store (file://, s3://) cannot be read
    ├── ImageError                   an image cannot be built or is missing
    └── WorkloadFailedError          a waited-for workload ended FAILED or CANCELLED (exit code 3)

Library errors (docker's ``APIError``, Ray's exceptions, httpx's) are mapped to these at the
boundary where they happen; tracebacks are for bugs. Every message ends with what to do next.
"""

from __future__ import annotations


class RunnerError(Exception):
    """Root of every error runner raises on purpose."""

    exit_code = 1


class UserError(RunnerError):
    """Something the user can fix: bad input, a missing object, a wrong key."""

    exit_code = 2


class SpecError(UserError):
    """A workload spec is invalid.

    ``str()`` gives ``FILE: FIELD.PATH: what was expected``, the form every tool prints.
    """

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        location = f"{source}: {path}: " if path else (f"{source}: " if source else "")
        super().__init__(location + message)


class FleetError(SpecError):
    """A fleet file (the simulated providers of CPU mode) is invalid."""


class ConfigError(SpecError):
    """The network's config file (policy, market, SLA, checker) is invalid."""


class PolicyError(UserError):
    """Refused by the network's rules: a tenant's KYC, its budget, export control, onboarding."""


class NotFoundError(UserError):
    """A workload, replica or node that does not exist."""


class ConflictError(UserError):
    """An idempotency key was reused for a different spec."""


class TooManyRequestsError(UserError):
    """A tenant holds as much of a shared resource (long-polls, pending workloads) as it may; the
    same request later, or after some of its own work ends, succeeds."""


class AuthError(UserError):
    """A request without a valid API key."""


class ClusterError(RunnerError):
    """The cluster is not up or cannot be started."""

    exit_code = 4


class ServerUnavailableError(ClusterError):
    """The control plane does not answer."""


class UntrustedServerError(RunnerError):
    """The server answered with a certificate this side does not trust: not the network's head (a
    fake one, or one whose CA is not the pinned one). Nothing was sent to it."""

    exit_code = 5


class RuntimeUnavailableError(RunnerError):
    """No container runtime answers where one is required."""

    exit_code = 4


class PortInUseError(RunnerError):
    """A port a host-networked replica must listen on is already taken on its node (the replica
    records it as ``StartFailure.PORT_IN_USE``: ``runner.core.events``)."""


class ArtifactStoreError(RunnerError):
    """A workload's artifact store cannot be read: unreachable, refused, or misconfigured."""


class ImageError(RunnerError):
    """An image cannot be built, or is missing on the node that should run it."""


class WorkloadFailedError(RunnerError):
    """A workload the user waited for ended FAILED or CANCELLED."""

    exit_code = 3
