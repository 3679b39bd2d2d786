"""The compliance matrix: every catalog model x embargoed and free countries x KYC states.

Zero restricted placements where forbidden, through the same vector code placement runs, and the
onboarding rule for restricted GPUs inside embargoed countries.
"""

from __future__ import annotations

import itertools

import pytest

from runner.catalog import CATALOG
from runner.nodetable import NodeRow, NodeTable
from runner.placement import Demand, Placer
from runner.policy import DEFAULT_EMBARGOED, KYC, NodeFacts, PolicyConfig, Reason, TenantFacts, admit_node, admit_tenant

FREE = ["DE", "US", "JP", "BR"]
EMBARGOED = sorted(DEFAULT_EMBARGOED)
POLICY = PolicyConfig()


def node(model: str, country: str, provider_kyc: KYC = KYC.VERIFIED) -> NodeRow:
    return NodeRow(name=f"{model}-{country}-{provider_kyc.value}", provider="p", region="eu-west", country=country,
                   gpu_model=model, gpu_count=8, vram_gb=CATALOG[model].vram_gb, cpus=64, memory_mb=512_000,
                   provider_kyc=provider_kyc, gpu_price_micros=1_000_000, cpu_price_micros=20_000)  # fmt: skip


@pytest.mark.parametrize("tenant_country", FREE + EMBARGOED)
def test_restricted_gpus_are_never_placed_for_embargoed_tenants(tenant_country: str) -> None:
    rows = [node(m, c, k) for m, c, k in itertools.product(CATALOG, FREE + EMBARGOED, list(KYC))]
    tenant = TenantFacts(id="t", country=tenant_country, kyc=KYC.VERIFIED)
    placer = Placer(NodeTable(rows), POLICY)
    for model in CATALOG:
        d = Demand(gpu_models=(model,), gpus=1, cpu=1)
        codes = placer.full_codes(d, tenant)
        for i, row in enumerate(rows):
            if row.gpu_model != model:
                continue
            allowed = codes[i] == Reason.OK
            forbidden = CATALOG[model].restricted and (tenant_country in DEFAULT_EMBARGOED
                                                       or row.country in DEFAULT_EMBARGOED)  # fmt: skip
            if forbidden:
                assert not allowed, f"{model} on {row.name} placed for a tenant in {tenant_country}"
            else:
                assert allowed == (row.provider_kyc is KYC.VERIFIED), row.name
        # and a real decision only ever lands where the rules allow
        while (decision := placer.decide(d, tenant)).placed:
            chosen = rows[placer.table.position[decision.nodes[0]]]
            assert not (CATALOG[model].restricted and (tenant_country in DEFAULT_EMBARGOED
                                                       or chosen.country in DEFAULT_EMBARGOED))  # fmt: skip
            assert chosen.provider_kyc is KYC.VERIFIED


@pytest.mark.parametrize("kyc", list(KYC))
def test_only_verified_tenants_are_admitted(kyc: KYC) -> None:
    verdict = admit_tenant(TenantFacts(id="acme", country="DE", kyc=kyc))
    assert bool(verdict) == (kyc is KYC.VERIFIED)
    if not verdict:
        assert f"KYC is {kyc.value}" in verdict.reason and "runner admin tenant kyc acme verified" in verdict.reason


@pytest.mark.parametrize(("model", "country"), list(itertools.product(CATALOG, FREE + EMBARGOED)))
def test_onboarding_refuses_restricted_gpus_inside_embargoed_countries(model: str, country: str) -> None:
    facts = NodeFacts(name="n", provider="p", provider_kyc=KYC.VERIFIED, country=country, region="r", gpu_model=model)
    verdict = admit_node(facts, POLICY)
    refused = CATALOG[model].restricted and country in DEFAULT_EMBARGOED
    assert bool(verdict) is not refused
    if refused:
        assert "export control" in verdict.reason and model in verdict.reason


def test_onboarding_needs_a_verified_provider_and_respects_the_network_geofence() -> None:
    pending = NodeFacts(name="n", provider="p", provider_kyc=KYC.PENDING, country="DE", region="r", gpu_model="T4")
    assert not admit_node(pending, POLICY)
    fenced = PolicyConfig.from_dict({"network": {"deny_regions": ["r"]}})
    ok = NodeFacts(name="n", provider="p", provider_kyc=KYC.VERIFIED, country="DE", region="r", gpu_model=None)
    assert "network geofence denies region r" in admit_node(ok, fenced).reason


def test_policy_file_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="unknown policy field"):
        PolicyConfig.from_dict({"embargo": ["CN"]})
    with pytest.raises(ValueError, match="unknown geofence field"):
        PolicyConfig.from_dict({"network": {"deny": ["CN"]}})
    custom = PolicyConfig.from_dict({"embargoed_countries": ["de"]})
    assert custom.embargoed_countries == frozenset({"DE"})
