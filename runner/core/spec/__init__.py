"""Workload specs: the YAML a user writes, validated into frozen pydantic models.

This is the pure core every other part trusts: the CLI and API validate here, policy and
placement read the result, and nothing downstream re-checks a field. So validation is strict
(unknown fields are errors, GPU names must be in the catalog) but the input side is forgiving:
short forms (``gpu: "A100|H100:4"``, ``memory: 16GB``, ``timeout: 1h30m``, ``ports: [8000]``)
are accepted wherever a user would naturally write them. Every failure becomes one
``SpecError`` that names the file, the dotted field path and what was expected.

Sizes: ``memory`` is stored in MiB. ``MB``/``MiB``/``Mi``/``M`` all mean MiB and
``GB``/``GiB``/``Gi``/``G`` all mean GiB (1024 MiB): schedulers reserve binary units, and a user
asking for "16GB" wants at least 16 GiB rather than 5% less.
"""

from runner.core.spec.fields import KINDS, Duration
from runner.core.spec.models import (
    WORKLOAD_ADAPTER,
    AnySpec,
    Batching,
    BatchSpec,
    CheckpointPolicy,
    GamingSpec,
    GPURequest,
    InferenceSpec,
    Placement,
    Port,
    ReplicaRange,
    Resources,
    RetryPolicy,
    SpecModel,
    TrainingSpec,
    WorkloadBase,
    WorkloadSpec,
    spec_gpu_count,
    spec_to_dict,
    workload_json_schema,
)
from runner.core.spec.parsing import load_workload, loads_workload, parse_workload

__all__ = [
    "KINDS",
    "Duration",
    "WORKLOAD_ADAPTER",
    "AnySpec",
    "Batching",
    "BatchSpec",
    "CheckpointPolicy",
    "GamingSpec",
    "GPURequest",
    "InferenceSpec",
    "Placement",
    "Port",
    "ReplicaRange",
    "Resources",
    "RetryPolicy",
    "SpecModel",
    "TrainingSpec",
    "WorkloadBase",
    "WorkloadSpec",
    "load_workload",
    "loads_workload",
    "parse_workload",
    "spec_gpu_count",
    "spec_to_dict",
    "workload_json_schema",
]
