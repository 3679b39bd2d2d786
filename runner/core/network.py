"""The network's configuration: compliance policy, market rules, SLA and checker settings.

The packaged ``runner/data/network.yaml`` holds every setting's value, once: it is both the
operator's documentation and the only home of the defaults (the models below and the core's
dataclasses have none). An operator's file (``RUNNER_NETWORK_CONFIG``) names only what it changes
and is laid over the packaged one; the result is validated strictly (an unknown or mistyped field
is an error naming the file and the field) and turned into the plain dataclasses the pure core
takes: ``PolicyConfig``, ``MarketConfig``, ``SLAConfig`` and ``CheckerConfig``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.core.errors import ConfigError
from runner.core.ledger import MarketConfig, SlashCause, to_micros
from runner.core.policy import PolicyConfig
from runner.core.preemption import PreemptionRules
from runner.core.sla import SLAConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Fence(_Strict):
    """A geofence; a list left out denies nothing (an empty list is no value to keep once)."""

    deny_countries: list[str] = []
    deny_regions: list[str] = []


class _Policy(_Strict):
    embargoed_countries: list[str]
    network: _Fence
    tenants: dict[str, _Fence]


class _Slash(_Strict):
    lost_work: float = Field(ge=0)
    failed_challenge: float = Field(ge=0)
    undrained_offboard: float = Field(ge=0)
    sla_breach: float = Field(ge=0)


class _Market(_Strict):
    fee_percent: float = Field(ge=0, le=100)
    cpu_price_per_core_hour: float = Field(ge=0)
    stake_usd: float = Field(ge=0)
    slash_usd: _Slash
    credit_percent: float = Field(ge=0, le=100)
    reserve_hours_without_timeout: float = Field(gt=0, le=24 * 366)


class _SLA(_Strict):
    monthly_uptime: float = Field(gt=0, le=1)
    max_daily_offline_minutes: float = Field(ge=0)


class _Checker(_Strict):
    heartbeat_seconds: float = Field(gt=0)
    challenge_minutes: float = Field(gt=0)
    challenge_tolerance: float = Field(gt=0, le=1)
    challenge_failures_to_suspend: int = Field(ge=1)


class _Onboarding(_Strict):
    simulated_gpus: bool


class _Limits(_Strict):
    unfinished_workloads_per_tenant: int = Field(ge=1, le=1_000_000)
    long_polls_per_tenant: int = Field(ge=1, le=1000)
    long_polls_total: int = Field(ge=1, le=1000)


class _Preemption(_Strict):
    victim_cooldown_minutes: float = Field(ge=0, le=7 * 24 * 60)
    others_per_tenant_per_hour: int = Field(ge=0, le=10_000)


class _Network(_Strict):
    policy: _Policy
    market: _Market
    preemption: _Preemption
    sla: _SLA
    checker: _Checker
    onboarding: _Onboarding
    limits: _Limits


@dataclass(frozen=True)
class CheckerConfig:
    heartbeat_s: float
    challenge_s: float
    tolerance: float
    failures_to_suspend: int


@dataclass(frozen=True)
class LimitsConfig:
    """What one tenant may hold of what all share (the ``limits`` section)."""

    unfinished_workloads_per_tenant: int
    long_polls_per_tenant: int
    long_polls_total: int


@dataclass(frozen=True)
class NetworkConfig:
    policy: PolicyConfig
    market: MarketConfig
    sla: SLAConfig
    checker: CheckerConfig
    stake_micros: int
    #: Machines may join with simulated GPUs off CPU mode (``runner.core.approval``): a test network's.
    simulated_gpus: bool
    limits: LimitsConfig
    preemption: PreemptionRules


def default_network_path() -> Path:
    return Path(str(resources.files("runner") / "data" / "network.yaml"))


@lru_cache(maxsize=1)
def default_network() -> NetworkConfig:
    """The packaged network's settings: what a network that changes nothing runs with."""
    return load_network(None)


def _read(source: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(str(source), "", "file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(str(source), "", f"invalid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            str(source),
            "",
            "expected a mapping of sections (policy, market, preemption, sla, checker, onboarding, limits)",
        )
    return raw


def _laid_over(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` laid over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = (
            _laid_over(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def load_network(path: str | os.PathLike[str] | None = None) -> NetworkConfig:
    """The packaged settings, with the operator's file at ``path`` (if any) laid over them."""
    source = Path(path) if path else default_network_path()
    raw = _read(default_network_path())
    if path:
        raw = _laid_over(raw, _read(source))
    try:
        n = _Network.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(str(source), ".".join(str(p) for p in first["loc"]), first["msg"]) from None
    m = n.market
    market = MarketConfig(
        fee_bps=int(round(m.fee_percent * 100)),
        cpu_price_per_core_hour=to_micros(m.cpu_price_per_core_hour),
        slash={SlashCause(name): to_micros(usd) for name, usd in m.slash_usd.model_dump().items()},
        credit_bps=int(round(m.credit_percent * 100)),
        reserve_s_without_timeout=m.reserve_hours_without_timeout * 3600,
    )
    policy = PolicyConfig.from_dict(n.policy.model_dump())
    return NetworkConfig(
        policy=policy,
        market=market,
        sla=SLAConfig(monthly_uptime=n.sla.monthly_uptime, max_daily_offline_s=n.sla.max_daily_offline_minutes * 60),
        checker=CheckerConfig(
            heartbeat_s=n.checker.heartbeat_seconds,
            challenge_s=n.checker.challenge_minutes * 60,
            tolerance=n.checker.challenge_tolerance,
            failures_to_suspend=n.checker.challenge_failures_to_suspend,
        ),
        stake_micros=to_micros(m.stake_usd),
        simulated_gpus=n.onboarding.simulated_gpus,
        limits=LimitsConfig(**n.limits.model_dump()),
        preemption=PreemptionRules(
            victim_cooldown_s=n.preemption.victim_cooldown_minutes * 60,
            others_per_tenant_per_hour=n.preemption.others_per_tenant_per_hour,
        ),
    )
