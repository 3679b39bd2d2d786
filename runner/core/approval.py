"""What the operator approved for one machine, and whether a joining machine claims more. Pure.

A join token is issued for one machine of one provider, and it carries the facts the operator
checked for that machine (where it stands, which GPUs it has, whether they are simulated): the
way a Kubernetes node may set only the labels its admission allows. A machine that claims
anything else at join (another country, a bigger GPU, more of them) is refused, whatever it says
about itself. Without this, a machine in an embargoed country could declare another, and one
GPU's owner could declare eight.

Simulated GPUs (Ray logical GPUs on a CPU) are honest only where the operator owns every machine:
CPU mode, or a test network whose rules say so (``onboarding.simulated_gpus`` in the network's
rules). Anywhere else a simulated claim would skip the GPU benchmark and be paid like the GPU it
names, so it is refused when the token is issued and again at join.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from runner.core.catalog import canonical_gpu_name
from runner.core.errors import UserError


@dataclass(frozen=True)
class ApprovedMachine:
    """The facts a join token binds (``gpu_model`` canonical, None for a CPU-only machine)."""

    region: str
    country: str
    gpu_model: str | None = None
    gpu_count: int = 0
    simulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApprovedMachine:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def machine_gpus(gpu_model: str | None, gpu_count: int | None) -> tuple[str | None, int]:
    """A machine's GPUs as the catalog names them: ``(model, count)``, ``(None, 0)`` for a CPU
    machine; a count left unsaid is one of the model. UserError names the field that is wrong.
    The one rule for what an operator approves and what a machine claims."""
    if not gpu_model:
        if gpu_count:
            raise UserError(f"gpu_count: {gpu_count} GPU(s) of no model; name gpu_model")
        return None, 0
    try:
        model = canonical_gpu_name(gpu_model)
    except KeyError:
        raise UserError(f"gpu_model: unknown GPU model {gpu_model!r}") from None
    count = 1 if gpu_count is None else gpu_count
    if count < 1:
        raise UserError(f"gpu_count: a machine with a {model} has at least one, got {count}")
    return model, count


def claim_problems(approved: ApprovedMachine, claimed: ApprovedMachine) -> list[str]:
    """Each fact the machine claims that its token does not approve, in words ([] when none)."""
    problems = []
    for name in ApprovedMachine.__dataclass_fields__:
        want, got = getattr(approved, name), getattr(claimed, name)
        if want != got:
            problems.append(f"it claims {name} {_shown(got)}, its join token approves {_shown(want)}")
    return problems


def simulated_problem(simulated: bool, *, cpu_mode: bool, network_allows: bool) -> str | None:
    """Why a simulated GPU may not join this network, or None."""
    if not simulated or cpu_mode or network_allows:
        return None
    return (
        "simulated GPUs join only in CPU mode or on a test network (onboarding.simulated_gpus in the network's "
        "rules): elsewhere a simulated GPU would skip the benchmark and be paid like the GPU it names"
    )


def _shown(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
