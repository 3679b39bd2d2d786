"""The network file: the packaged one holds every value once; an operator's names only changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner.core.errors import ConfigError
from runner.core.ledger import SlashCause, to_micros
from runner.core.network import default_network, default_network_path, load_network


def test_every_value_comes_from_the_packaged_file() -> None:
    shipped = yaml.safe_load(default_network_path().read_text())
    n = default_network()
    assert n.market.fee_bps == shipped["market"]["fee_percent"] * 100
    assert n.market.slash[SlashCause.FAILED_CHALLENGE] == to_micros(shipped["market"]["slash_usd"]["failed_challenge"])
    assert n.stake_micros == to_micros(shipped["market"]["stake_usd"])
    assert n.sla.max_daily_offline_s == shipped["sla"]["max_daily_offline_minutes"] * 60
    assert n.checker.challenge_s == shipped["checker"]["challenge_minutes"] * 60
    assert n.policy.embargoed_countries == frozenset(shipped["policy"]["embargoed_countries"])


def test_an_operators_file_changes_what_it_names_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "network.yaml"
    path.write_text("market:\n  slash_usd:\n    lost_work: 7\npolicy:\n  tenants:\n    acme: {deny_countries: [us]}\n")
    n, d = load_network(path), default_network()
    assert n.market.slash[SlashCause.LOST_WORK] == to_micros(7)
    assert n.market.slash[SlashCause.SLA_BREACH] == d.market.slash[SlashCause.SLA_BREACH]  # a sibling kept
    assert n.market.fee_bps == d.market.fee_bps and n.checker == d.checker and n.sla == d.sla
    assert n.policy.embargoed_countries == d.policy.embargoed_countries
    assert n.policy.tenant_geofence("acme").deny_countries == frozenset({"US"})


def test_a_mistyped_field_names_the_operators_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "network.yaml"
    path.write_text("checker:\n  heartbeat_secs: 5\n")
    with pytest.raises(ConfigError) as info:
        load_network(path)
    assert str(path) in str(info.value) and "checker.heartbeat_secs" in str(info.value)
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_network(path)
