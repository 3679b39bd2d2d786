"""The network's configuration: compliance policy, market rules, SLA and checker settings.

One YAML file (``runner/data/network.yaml`` by default, ``RUNNER_NETWORK_CONFIG`` for another),
validated strictly (an unknown or mistyped field is an error naming the file and the field),
then turned into the plain dataclasses the pure core takes: ``PolicyConfig``, ``MarketConfig``,
``SLAConfig`` and ``CheckerConfig``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.errors import ConfigError
from runner.ledger import MICROS, MarketConfig, SlashCause, to_micros
from runner.policy import DEFAULT_EMBARGOED, PolicyConfig
from runner.sla import SLAConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Fence(_Strict):
    deny_countries: list[str] = []
    deny_regions: list[str] = []


class _Policy(_Strict):
    embargoed_countries: list[str] = sorted(DEFAULT_EMBARGOED)
    network: _Fence = _Fence()
    tenants: dict[str, _Fence] = {}


class _Slash(_Strict):
    lost_work: float = Field(5, ge=0)
    failed_challenge: float = Field(20, ge=0)
    undrained_offboard: float = Field(10, ge=0)
    sla_breach: float = Field(2, ge=0)


class _Market(_Strict):
    fee_percent: float = Field(10, ge=0, le=100)
    cpu_price_per_core_hour: float = Field(0.02, ge=0)
    stake_usd: float = Field(100, ge=0)
    slash_usd: _Slash = _Slash()
    credit_percent: float = Field(50, ge=0, le=100)


class _SLA(_Strict):
    monthly_uptime: float = Field(0.99, gt=0, le=1)
    max_daily_offline_minutes: float = Field(30, ge=0)


class _Checker(_Strict):
    heartbeat_seconds: float = Field(5, gt=0)
    challenge_minutes: float = Field(10, gt=0)
    challenge_tolerance: float = Field(0.25, gt=0, le=1)
    challenge_failures_to_suspend: int = Field(2, ge=1)


class _Network(_Strict):
    policy: _Policy = _Policy()
    market: _Market = _Market()
    sla: _SLA = _SLA()
    checker: _Checker = _Checker()


@dataclass(frozen=True)
class CheckerConfig:
    heartbeat_s: float = 5.0
    challenge_s: float = 600.0
    tolerance: float = 0.25
    failures_to_suspend: int = 2


@dataclass(frozen=True)
class NetworkConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    sla: SLAConfig = field(default_factory=SLAConfig)
    checker: CheckerConfig = field(default_factory=CheckerConfig)
    stake_micros: int = 100 * MICROS


def default_network_path() -> Path:
    return Path(str(resources.files("runner") / "data" / "network.yaml"))


def load_network(path: str | os.PathLike[str] | None = None) -> NetworkConfig:
    source = Path(path) if path else default_network_path()
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(str(source), "", "file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(str(source), "", f"invalid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    try:
        n = _Network.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(str(source), ".".join(str(p) for p in first["loc"]), first["msg"]) from None
    m = n.market
    market = MarketConfig(
        fee_bps=int(round(m.fee_percent * 100)), cpu_price_per_core_hour=to_micros(m.cpu_price_per_core_hour),
        slash={SlashCause(name): to_micros(usd) for name, usd in m.slash_usd.model_dump().items()},
        credit_bps=int(round(m.credit_percent * 100)),
    )  # fmt: skip
    policy = PolicyConfig.from_dict(n.policy.model_dump())
    return NetworkConfig(
        policy=policy, market=market,
        sla=SLAConfig(monthly_uptime=n.sla.monthly_uptime, max_daily_offline_s=n.sla.max_daily_offline_minutes * 60),
        checker=CheckerConfig(heartbeat_s=n.checker.heartbeat_seconds, challenge_s=n.checker.challenge_minutes * 60,
                              tolerance=n.checker.challenge_tolerance,
                              failures_to_suspend=n.checker.challenge_failures_to_suspend),
        stake_micros=to_micros(m.stake_usd),
    )  # fmt: skip
