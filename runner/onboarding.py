"""Onboarding, the control plane's side of ``runner node join``: token, policy, benchmark, registry.

A joining machine presents a join token and describes itself (provider, location, GPUs, its
benchmark). The token must belong to that provider, be unexpired and unused; it is spent either
way, so a refused machine cannot probe with it again. The node must pass onboarding policy (a
verified provider; no export-controlled GPU inside an embargoed country; the network geofence),
and a real GPU's benchmark must be plausible for the model it claims. Then the node is registered
``verified`` and receives what it needs to join Ray: the head's address, the cluster token and
its labels. It becomes ``active`` when the supervisor sees it in Ray with its agent up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from runner.benchmark import ceiling_tflops, expected_tflops, judge
from runner.core.agent_wire import NodePublicKeys, WireError
from runner.core.approval import ApprovedMachine, claim_problems, machine_gpus, simulated_problem
from runner.core.catalog import get_gpu
from runner.core.errors import ConflictError, PolicyError
from runner.core.network import NetworkConfig
from runner.core.placement import gpu_price_micros
from runner.core.policy import KYC, NodeFacts, NodeState, admit_node
from runner.core.spec.fields import NodeCores, NodeMemoryMiB, PricePerGpuHour, Tflops
from runner.store import Store

NAME = r"^[a-z][a-z0-9-]{0,62}$"


class JoinRequest(BaseModel):
    """What a machine says about itself when it joins."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every number finite and bounded

    token: str = Field(min_length=1)
    provider: str = Field(pattern=NAME)
    name: str = Field(pattern=NAME)
    region: str = Field(pattern=NAME)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    gpu_model: str | None = None
    gpu_count: int = Field(default=0, ge=0, le=64)
    cpus: NodeCores
    memory_mb: NodeMemoryMiB
    simulated: bool = False
    price_per_gpu_hour: PricePerGpuHour | None = None
    benchmark: dict[str, Any] = Field(default_factory=dict)
    #: The public halves of the keys the machine made (``runner.node_keys``): its identity.
    node_keys: dict[str, str]
    #: A request for a certificate for the TLS key the machine made (``runner.core.certs``).
    tls_csr: str = Field(default="", max_length=8192)

    @field_validator("node_keys")
    @classmethod
    def _keys(cls, keys: dict[str, str]) -> dict[str, str]:
        try:
            return NodePublicKeys.from_dict(keys).to_dict()
        except WireError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("benchmark")
    @classmethod
    def _measured(cls, benchmark: dict[str, Any]) -> dict[str, Any]:
        """``tflops`` (what placement scores and the checker holds the node to) is a finite number
        in bounds; no other figure may be inf or nan either (they are stored and shown)."""
        if benchmark.get("tflops") is not None:
            try:
                TypeAdapter(Tflops).validate_python(benchmark["tflops"])
            except ValidationError as exc:
                raise ValueError(f"tflops: {exc.errors()[0]['msg']}") from None
        for key, value in benchmark.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{key}: must be a finite number, got {value}")
        return benchmark


class JoinGrant(BaseModel):
    """What the control plane gives a machine it accepts: how to join Ray, and as what."""

    node: str
    state: str
    ray_address: str
    ray_token: str
    labels: dict[str, str]
    num_gpus: int
    #: What the node's agent checks every command against.
    control_public_key: str
    #: The machine's certificate (PEM; empty in a network without TLS), made before the grant.
    tls_cert: str


def node_labels(req: JoinRequest, vram_gb: int) -> dict[str, str]:
    """The Ray node labels placement and label selectors use."""
    return {
        "node": req.name,
        "provider": req.provider,
        "region": req.region,
        "country": req.country,
        "gpu-model": req.gpu_model or "none",
        "gpu-count": str(req.gpu_count if req.gpu_model else 0),
        "vram-gb": str(vram_gb),
        "simulated": "true" if req.simulated else "false",
    }


def onboard(
    store: Store,
    config: NetworkConfig,
    req: JoinRequest,
    *,
    ray_address: str,
    ray_token: str,
    control_public_key: str,
    tls_cert: str = "",
    cpu_mode: bool,
    in_cluster: Callable[[str], bool] = lambda _name: False,
) -> JoinGrant:
    """Admit a joining machine (``in_cluster``: is a live Ray node already using this name?
    ``cpu_mode``: is every machine this one, as in `runner up --cpu`?)."""
    approved = store.redeem_join_token(req.token, provider_id=req.provider, node=req.name)
    if in_cluster(req.name):
        raise ConflictError(
            f"a node named {req.name!r} is in the cluster now. To fix: join with another --name, or "
            "stop the other machine first"
        )
    provider = store.get_provider(req.provider)
    model, gpu_count = machine_gpus(req.gpu_model, req.gpu_count)
    facts = NodeFacts(
        name=req.name,
        provider=req.provider,
        provider_kyc=KYC(provider.kyc),
        country=req.country,
        region=req.region,
        gpu_model=model,
    )
    measured = float(req.benchmark.get("tflops") or 0.0)
    claimed = ApprovedMachine(
        region=req.region, country=req.country, gpu_model=model, gpu_count=gpu_count, simulated=req.simulated
    )
    verdict = admit_node(facts, config.policy)
    refusal = "; ".join(claim_problems(approved, claimed)) or None
    refusal = refusal or simulated_problem(req.simulated, cpu_mode=cpu_mode, network_allows=config.simulated_gpus)
    refusal = refusal or (None if verdict else verdict.reason)
    if refusal is None and not measured:
        refusal = "no benchmark: a joining node must report its measured TFLOPS"
    if refusal is None and model and not req.simulated:
        problem = judge(
            measured,
            expected_tflops(model, simulated=False, verified_tflops=measured),
            config.checker.tolerance,
            ceiling=ceiling_tflops(model, simulated=False),
        )
        refusal = f"benchmark does not match a {model}: {problem}" if problem else None
    if refusal:
        store.audit(
            "node.refused",
            {
                "node": req.name,
                "provider": req.provider,
                "country": req.country,
                "gpu_model": model,
                "reason": refusal,
                "claimed": claimed.to_dict(),
                "approved": approved.to_dict(),
            },
        )
        raise PolicyError(f"node {req.name} refused: {refusal}")
    vram = get_gpu(model).vram_gb if model else 0
    store.register_node(
        name=req.name,
        provider_id=req.provider,
        state=NodeState.VERIFIED,
        decision={
            "country": req.country,
            "region": req.region,
            "gpu_model": model,
            "gpu_count": gpu_count,
            "simulated": req.simulated,
            "tflops": measured,
        },
        region=req.region,
        country=req.country,
        gpu_model=model,
        gpu_count=gpu_count,
        vram_gb=vram,
        cpus=req.cpus,
        memory_mb=req.memory_mb,
        simulated=req.simulated,
        gpu_price_micros=gpu_price_micros(model, req.price_per_gpu_hour),
        cpu_price_micros=config.market.cpu_price_per_core_hour,
        benchmark=req.benchmark,
        verified_tflops=measured,
        node_keys=req.node_keys,
    )
    return JoinGrant(
        node=req.name,
        state=NodeState.VERIFIED.value,
        ray_address=ray_address,
        ray_token=ray_token,
        labels=node_labels(req, vram),
        num_gpus=gpu_count,
        control_public_key=control_public_key,
        tls_cert=tls_cert,
    )
