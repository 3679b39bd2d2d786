"""Compliance policy: the KYC gate, geofences and export control. Pure: records in, decisions out.

Three questions, each answered with reasons a person can read:

- may this tenant submit at all?            ``admit_tenant``   (KYC verified, not rejected)
- may this machine join the network?        ``admit_node``     (provider KYC; no restricted GPU
                                                                in an embargoed country)
- may this tenant's work run on this node?  ``node_rejection`` (provider KYC, network and tenant
                                                                geofences, export control)

Export control combines three facts: the GPU model's class (from the catalog), the tenant's
country and the node's country. A restricted part (H200, H100, A100, L40S) is never placed for a
tenant whose country is embargoed, and a node holding one inside an embargoed country is
refused at onboarding. ``placement.py`` evaluates the same rules vectorized over many nodes;
both read the rule order and messages from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from runner.core.catalog import get_gpu

# Countries under US embargo or advanced-computing export rules (Country Group D:5 and the
# comprehensive embargoes, plus China and Macau under the 2022-2023 rules). Hong Kong is in the
# list because US export rules have treated it as China since 2020 (Executive Order 13936; BIS
# then removed Hong Kong as a destination of its own from the EAR): an H100 for a tenant in Hong
# Kong is an H100 for a tenant in China. The list itself lives once, in the network file
# (``runner/data/network.yaml``: ``policy.embargoed_countries``), editable per network.


class KYC(StrEnum):
    """Know-your-customer status of a tenant or provider."""

    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"


class NodeState(StrEnum):
    """A provider machine's life: only ``active`` nodes receive work.

    pending -> verified (benchmark accepted) -> active (joined Ray, agent answers)
    -> draining (no new work; running work moved off) -> offboarded;
    any of them -> suspended (failed a challenge) -> active again after review.
    """

    PENDING = "pending"
    VERIFIED = "verified"
    ACTIVE = "active"
    DRAINING = "draining"
    SUSPENDED = "suspended"
    OFFBOARDED = "offboarded"


class Reason(IntEnum):
    """Why a node cannot take a replica, in the order the rules are checked (0: it can).

    The first failing rule is the one reported; vectorized placement keeps the same order by
    writing codes from the last rule to the first.
    """

    OK = 0
    NODE_DOWN = 1
    NODE_STATE = 2
    PROVIDER_KYC = 3
    NETWORK_GEOFENCE = 4
    TENANT_GEOFENCE = 5
    EXPORT_CONTROL = 6
    REGION = 7
    COUNTRY = 8
    GPU_MODEL = 9
    VRAM = 10
    PRICE = 11
    RELIABILITY = 12
    LATENCY = 13
    GPUS_FREE = 14
    CPUS_FREE = 15
    MEMORY_FREE = 16
    GANG_NODE_TAKEN = 17
    GANG_PROVIDER_TAKEN = 18


@dataclass(frozen=True)
class Geofence:
    """Countries and regions where work must not run (ISO 3166 alpha-2, runner region names)."""

    deny_countries: frozenset[str] = frozenset()
    deny_regions: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Geofence":
        data = data or {}
        unknown = set(data) - {"deny_countries", "deny_regions"}
        if unknown:
            raise ValueError(f"unknown geofence field(s) {sorted(unknown)}; allowed: deny_countries, deny_regions")
        return cls(
            frozenset(c.upper() for c in data.get("deny_countries", ())), frozenset(data.get("deny_regions", ()))
        )

    def denies(self, country: str, region: str) -> str | None:
        if country in self.deny_countries:
            return f"country {country}"
        if region in self.deny_regions:
            return f"region {region}"
        return None


@dataclass(frozen=True)
class PolicyConfig:
    """The network's compliance rules, the ``policy`` section of the network file
    (``runner/data/network.yaml``)."""

    embargoed_countries: frozenset[str]  # the network's list: runner/data/network.yaml, once
    network: Geofence = field(default_factory=Geofence)
    tenants: Mapping[str, Geofence] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PolicyConfig":
        data = data or {}
        unknown = set(data) - {"embargoed_countries", "network", "tenants"}
        if unknown:
            raise ValueError(
                f"unknown policy field(s) {sorted(unknown)}; allowed: embargoed_countries, network, tenants"
            )
        if "embargoed_countries" not in data:
            raise ValueError("embargoed_countries: required (the network file lists them)")
        return cls(
            embargoed_countries=frozenset(c.upper() for c in data["embargoed_countries"]),
            network=Geofence.from_dict(data.get("network")),
            tenants={str(t): Geofence.from_dict(g) for t, g in (data.get("tenants") or {}).items()},
        )

    def tenant_geofence(self, tenant_id: str) -> Geofence:
        return self.tenants.get(tenant_id, Geofence())


@dataclass(frozen=True)
class TenantFacts:
    id: str
    country: str
    kyc: KYC


@dataclass(frozen=True)
class NodeFacts:
    """What policy needs to know of a node: where it is, whose it is, what GPU it holds."""

    name: str
    provider: str
    provider_kyc: KYC
    country: str
    region: str
    gpu_model: str | None
    state: NodeState = NodeState.ACTIVE


@dataclass(frozen=True)
class Verdict:
    """A yes/no with the reason for a no; ``bool(verdict)`` is True when allowed."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def restricted(gpu_model: str | None) -> bool:
    return gpu_model is not None and get_gpu(gpu_model).restricted


def admit_tenant(tenant: TenantFacts) -> Verdict:
    """KYC gate: only verified tenants submit work."""
    if tenant.kyc is KYC.VERIFIED:
        return Verdict(True)
    return Verdict(
        False,
        f"tenant {tenant.id} KYC is {tenant.kyc.value}. To fix: an operator runs "
        f"`runner admin tenant kyc {tenant.id} verified` after checking the tenant",
    )


def admit_node(node: NodeFacts, config: PolicyConfig) -> Verdict:
    """Onboarding: a verified provider, and no export-controlled GPU inside an embargoed country."""
    if node.provider_kyc is not KYC.VERIFIED:
        return Verdict(False, f"provider {node.provider} KYC is {node.provider_kyc.value}")
    if restricted(node.gpu_model) and node.country in config.embargoed_countries:
        return Verdict(
            False,
            f"export control: {node.gpu_model} is a restricted GPU and the node is in "
            f"{node.country}, an embargoed country",
        )
    fenced = config.network.denies(node.country, node.region)
    if fenced:
        return Verdict(False, f"network geofence denies {fenced}")
    return Verdict(True)


def node_rejection(tenant: TenantFacts, node: NodeFacts, config: PolicyConfig) -> tuple[Reason, str] | None:
    """The first policy rule that keeps ``tenant``'s work off ``node``, or None.

    The tenant's own KYC is checked at admission (``admit_tenant``), not per node.
    """
    if node.state is not NodeState.ACTIVE:
        return Reason.NODE_STATE, f"node is {node.state.value}"
    if node.provider_kyc is not KYC.VERIFIED:
        return Reason.PROVIDER_KYC, f"provider {node.provider} KYC is {node.provider_kyc.value}"
    fenced = config.network.denies(node.country, node.region)
    if fenced:
        return Reason.NETWORK_GEOFENCE, f"network geofence denies {fenced}"
    fenced = config.tenant_geofence(tenant.id).denies(node.country, node.region)
    if fenced:
        return Reason.TENANT_GEOFENCE, f"tenant geofence denies {fenced}"
    if restricted(node.gpu_model) and (
        tenant.country in config.embargoed_countries or node.country in config.embargoed_countries
    ):
        where = tenant.country if tenant.country in config.embargoed_countries else node.country
        return Reason.EXPORT_CONTROL, f"export control: {node.gpu_model} is restricted, {where} is embargoed"
    return None
