"""The compliance matrix: every catalog model x embargoed and free countries x KYC states.

Zero restricted placements where forbidden, through the same vector code placement runs, and the
onboarding rule for restricted GPUs inside embargoed countries.
"""

from __future__ import annotations

import itertools

import pytest

from runner.core.catalog import CATALOG
from runner.core.demand import Demand
from runner.core.network import default_network, load_network
from runner.core.nodetable import NodeRow, NodeTable
from runner.core.placement import Placer
from runner.core.policy import KYC, NodeFacts, PolicyConfig, Reason, TenantFacts, admit_node, admit_tenant
from runner.core.spec import parse_workload
from runner.fleet import load_fleet

FREE = ["DE", "US", "JP", "BR"]
EMBARGOED = sorted(default_network().policy.embargoed_countries)
POLICY = default_network().policy


def node(model: str, country: str, provider_kyc: KYC = KYC.VERIFIED) -> NodeRow:
    return NodeRow(
        name=f"{model}-{country}-{provider_kyc.value}",
        provider="p",
        region="eu-west",
        country=country,
        gpu_model=model,
        gpu_count=8,
        vram_gb=CATALOG[model].vram_gb,
        cpus=64,
        memory_mb=512_000,
        provider_kyc=provider_kyc,
        gpu_price_micros=1_000_000,
        cpu_price_micros=20_000,
    )


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
            forbidden = CATALOG[model].restricted and (
                tenant_country in default_network().policy.embargoed_countries
                or row.country in default_network().policy.embargoed_countries
            )
            if forbidden:
                assert not allowed, f"{model} on {row.name} placed for a tenant in {tenant_country}"
            else:
                assert allowed == (row.provider_kyc is KYC.VERIFIED), row.name
        # and a real decision only ever lands where the rules allow
        while (decision := placer.decide(d, tenant)).placed:
            chosen = rows[placer.table.position[decision.nodes[0]]]
            assert not (
                CATALOG[model].restricted
                and (
                    tenant_country in default_network().policy.embargoed_countries
                    or chosen.country in default_network().policy.embargoed_countries
                )
            )
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
    refused = CATALOG[model].restricted and country in default_network().policy.embargoed_countries
    assert bool(verdict) is not refused
    if refused:
        assert "export control" in verdict.reason and model in verdict.reason


def test_onboarding_needs_a_verified_provider_and_respects_the_network_geofence() -> None:
    pending = NodeFacts(name="n", provider="p", provider_kyc=KYC.PENDING, country="DE", region="r", gpu_model="T4")
    assert not admit_node(pending, POLICY)
    fenced = PolicyConfig.from_dict({"embargoed_countries": EMBARGOED, "network": {"deny_regions": ["r"]}})
    ok = NodeFacts(name="n", provider="p", provider_kyc=KYC.VERIFIED, country="DE", region="r", gpu_model=None)
    assert "network geofence denies region r" in admit_node(ok, fenced).reason


def test_policy_file_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="unknown policy field"):
        PolicyConfig.from_dict({"embargo": ["CN"]})
    with pytest.raises(ValueError, match="unknown geofence field"):
        PolicyConfig.from_dict({"embargoed_countries": [], "network": {"deny": ["CN"]}})
    with pytest.raises(ValueError, match="embargoed_countries: required"):  # no default but the network file's
        PolicyConfig.from_dict({"network": {}})
    custom = PolicyConfig.from_dict({"embargoed_countries": ["de"]})
    assert custom.embargoed_countries == frozenset({"DE"})


@pytest.mark.parametrize("country", ["HK", "MO"])
def test_hong_kong_and_macau_count_as_china_in_the_shipped_policy(country: str) -> None:
    """US export rules treat Hong Kong (since 2020) and Macau as China: a tenant there is refused
    an H100 by the default rules *and* by the network file a fresh install reads, and asking for
    ``H100|RTX4090`` lands on an RTX 4090 instead of failing."""
    shipped = load_network().policy
    assert country in default_network().policy.embargoed_countries and country in shipped.embargoed_countries
    assert {"CN", "HK", "MO"} <= shipped.embargoed_countries
    tenant = TenantFacts(id="t", country=country, kyc=KYC.VERIFIED)
    placer = Placer(NodeTable([n.to_row() for n in load_fleet().nodes]), shipped)

    def wants(gpu: str) -> Demand:
        return Demand.from_spec(
            parse_workload({"name": "t", "kind": "batch", "image": "img", "resources": {"gpu": gpu}})
        )

    refused = placer.decide(wants("H100"), tenant)
    # export control is checked before the GPU model, so the A100 node counts as well
    assert not refused.placed and refused.counts.get(Reason.EXPORT_CONTROL) == 2
    assert f"fra-h100-1: export control: H100 is restricted, {country} is embargoed" in refused.message
    either = placer.decide(wants("H100|RTX4090"), tenant)
    assert either.placed and either.nodes[0] in {"ams-4090-1", "tyo-4090-1"}
    verdicts = {r.node: r.verdict for r in placer.explain(wants("H100|RTX4090"), tenant)}
    assert verdicts["fra-h100-1"] == f"export control: H100 is restricted, {country} is embargoed"
    # the same request from a free country may take the H100: the refusal is the tenant's country
    assert placer.decide(wants("H100"), TenantFacts(id="t", country="DE", kyc=KYC.VERIFIED)).nodes == ("fra-h100-1",)


def test_the_default_embargo_list_is_country_group_d5_with_hong_kong_and_macau() -> None:
    from runner.core.network import default_network

    listed = default_network().policy.embargoed_countries
    assert {"CN", "HK", "MO", "RU", "IR", "KP", "CU", "SY", "BY", "VE", "MM", "AF", "IQ"} <= listed
    assert not listed & {"DE", "NL", "US", "JP", "GB", "CY"}  # allies, and Cyprus (out of D:5)
