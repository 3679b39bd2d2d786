"""Placement on hand-made fleets: every rule, scoring, gangs, spread, and the vector code against
the plain-Python oracle on random fleets."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.core.catalog import CATALOG
from runner.core.demand import Demand
from runner.core.network import default_network
from runner.core.nodetable import Load, NodeRow, NodeTable
from runner.core.placement import Placer
from runner.core.policy import KYC, NodeState, PolicyConfig, Reason, TenantFacts
from runner.core.regions import default_regions
from runner.core.rules import first_rejection
from runner.core.spec import parse_workload
from runner.fleet import load_fleet

TENANT = TenantFacts(id="acme", country="DE", kyc=KYC.VERIFIED)
POLICY = default_network().policy
EMBARGOED = sorted(POLICY.embargoed_countries)


def fleet_rows(**changes: object) -> list[NodeRow]:
    """The packaged default fleet as placement sees it."""
    return [dataclasses.replace(n.to_row(), **changes) for n in load_fleet().nodes]


def demand(kind: str = "batch", **spec: object) -> Demand:
    base: dict[str, object] = {"name": "t", "kind": kind, "image": "img"}
    if kind == "gaming":
        base["game"] = "breakout"
    return Demand.from_spec(parse_workload({**base, **spec}))


def decide(
    d: Demand,
    rows: list[NodeRow] | None = None,
    loads: dict[str, Load] | None = None,
    tenant: TenantFacts = TENANT,
    policy: PolicyConfig = POLICY,
):  # noqa: ANN201
    return Placer(NodeTable(rows if rows is not None else fleet_rows(), loads), policy).decide(d, tenant)


def test_gpu_model_picks_the_only_node_with_it() -> None:
    assert decide(demand(resources={"gpu": "H100"})).nodes == ("fra-h100-1",)


def test_region_filter_and_the_reason_of_each_refused_node() -> None:
    d = demand(placement={"regions": ["ap-northeast"]})
    assert decide(d).nodes == ("tyo-4090-1",)
    rows = {r.node: r for r in Placer(NodeTable(fleet_rows()), POLICY).explain(d, TENANT)}
    assert rows["fra-h100-1"].verdict == "region eu-west not in ap-northeast"
    assert rows["tyo-4090-1"].verdict == "ok"


def test_denied_country_and_region() -> None:
    assert decide(demand(resources={"gpu": "RTX4090"}, placement={"deny_countries": ["NL"]})).nodes == ("tyo-4090-1",)
    refused = decide(demand(resources={"gpu": "RTX4090"}, placement={"deny_regions": ["ap-northeast", "eu-west"]}))
    assert not refused.placed
    assert "tyo-4090-1" in refused.message and "is denied" in refused.message


def test_gpu_count_and_vram() -> None:
    assert decide(demand(resources={"gpu": "A100:2"})).nodes == ("nyc-a100-1",)
    refused = decide(demand(resources={"gpu": "A100|H100:3"}))
    assert not refused.placed and refused.counts[Reason.GPUS_FREE] == 2
    assert decide(demand(resources={"gpu": {"models": ["RTX4090", "H100"], "min_vram_gb": 40}})).nodes == (
        "fra-h100-1",
    )


def test_price_cap() -> None:
    refused = decide(demand(resources={"gpu": "H100"}, placement={"max_price_per_gpu_hour": 0.5}))
    assert not refused.placed and "price 2.50/GPU-h > cap 0.50" in refused.message


def test_busy_gpus_are_not_double_booked() -> None:
    d = demand(resources={"gpu": "H100"})
    refused = decide(d, loads={"fra-h100-1": Load(cpu=1, gpus=1)})
    assert not refused.placed and "0 of 1 GPUs free, need 1" in refused.message


def test_a_placer_commits_load_so_the_second_workload_goes_elsewhere() -> None:
    placer = Placer(NodeTable(fleet_rows()), POLICY)
    d = demand(resources={"gpu": "RTX4090"})
    first, second, third = (placer.decide(d, TENANT) for _ in range(3))
    assert {first.nodes[0], second.nodes[0]} == {"ams-4090-1", "tyo-4090-1"}
    assert not third.placed


def test_cheaper_node_wins_and_ties_go_to_the_least_loaded() -> None:
    rows = fleet_rows()
    rows[1] = dataclasses.replace(rows[1], gpu_price_micros=300_000)  # ams 4090 cheaper than tyo's 400_000
    assert decide(demand(resources={"gpu": "RTX4090"}), rows).nodes == ("ams-4090-1",)
    loads = {
        "ams-4090-1": Load(cpu=1, replicas=1),
        "fra-h100-1": Load(cpu=1, replicas=1),
        "nyc-a100-1": Load(cpu=1.5, replicas=2),
    }
    assert decide(demand(resources={"cpu": 1}), loads=loads).nodes == ("tyo-4090-1",)


def test_dead_or_inactive_nodes_and_unverified_providers_never_receive_work() -> None:
    assert decide(demand(), fleet_rows(alive=False)).counts == {Reason.NODE_DOWN: 4}
    assert decide(demand(), fleet_rows(state=NodeState.DRAINING)).counts == {Reason.NODE_STATE: 4}
    assert decide(demand(), fleet_rows(provider_kyc=KYC.PENDING)).counts == {Reason.PROVIDER_KYC: 4}


def test_export_control_keeps_restricted_gpus_from_embargoed_tenants() -> None:
    embargoed = TenantFacts(id="t", country="IR", kyc=KYC.VERIFIED)
    refused = decide(demand(resources={"gpu": "H100|A100"}), tenant=embargoed)
    assert refused.counts.get(Reason.EXPORT_CONTROL) == 2 and not refused.placed
    assert "export control: H100 is restricted, IR is embargoed" in refused.message or "A100" in refused.message
    assert decide(demand(resources={"gpu": "RTX4090"}), tenant=embargoed).placed  # unrestricted parts are fine


def test_geofences_network_wide_and_per_tenant() -> None:
    policy = PolicyConfig.from_dict(
        {
            "embargoed_countries": EMBARGOED,
            "network": {"deny_countries": ["JP"]},
            "tenants": {"acme": {"deny_regions": ["eu-west"]}},
        }
    )
    refused = decide(demand(resources={"gpu": "RTX4090"}), policy=policy)
    assert refused.counts == {Reason.NETWORK_GEOFENCE: 1, Reason.TENANT_GEOFENCE: 2, Reason.GPU_MODEL: 1}


def test_training_gang_needs_distinct_nodes_all_or_nothing() -> None:
    rows = fleet_rows()
    placer = Placer(NodeTable(rows), POLICY)
    gang = placer.decide(demand("training", workers=3, resources={"cpu": 1}), TENANT)
    assert len(set(gang.nodes)) == 3
    too_big = placer.decide(demand("training", workers=5, resources={"cpu": 1}), TENANT)
    assert not too_big.placed and "need 5 distinct node(s)" in too_big.message
    assert placer.table.used_replicas.sum() == 3  # the refused gang left no load behind


def test_spread_puts_replicas_on_distinct_providers() -> None:
    d = demand("inference", replicas=2, resources={"gpu": "RTX4090|H100"}, placement={"spread_providers": True})
    rows = fleet_rows()
    rows[0] = dataclasses.replace(rows[0], gpu_price_micros=100_000)  # make the H100 cheapest
    nodes = decide(d, rows).nodes
    providers = {r.name: r.provider for r in rows}
    assert len({providers[n] for n in nodes}) == 2


def test_a_session_goes_near_its_player_within_the_latency_budget() -> None:
    d = demand("gaming", near="ap-northeast", resources={"gpu": "RTX4090"})
    assert decide(d).nodes == ("tyo-4090-1",)
    far = demand("gaming", near="sa-east", latency_budget_ms=50, resources={"gpu": "RTX4090"})
    refused = decide(far)
    assert refused.counts.get(Reason.LATENCY) == 2 and "ms from sa-east > budget 50 ms" in refused.message


def test_batch_replicas_may_share_a_node_but_not_overfill_it() -> None:
    rows = [fleet_rows()[0]]  # one node, 2 CPUs
    assert decide(demand(replicas=2, resources={"cpu": 1}), rows).nodes == ("fra-h100-1", "fra-h100-1")
    assert not decide(demand(replicas=3, resources={"cpu": 1}), rows).placed


# ----------------------------------------------------------------------------- vector == oracle
REGIONS = ["eu-west", "us-east", "ap-northeast", "sa-east"]
COUNTRIES = ["DE", "US", "JP", "CN", "IR", "NL"]
MODELS = [None, *CATALOG]

rows_strategy = st.lists(
    st.builds(
        NodeRow,
        name=st.uuids().map(str),
        provider=st.sampled_from(["p1", "p2", "p3"]),
        region=st.sampled_from(REGIONS),
        country=st.sampled_from(COUNTRIES),
        gpu_model=st.sampled_from(MODELS),
        gpu_count=st.integers(0, 4),
        vram_gb=st.sampled_from([0, 16, 24, 48, 80]),
        cpus=st.sampled_from([1.0, 2.0, 8.0]),
        memory_mb=st.sampled_from([0, 2048, 8192]),
        alive=st.booleans(),
        state=st.sampled_from(list(NodeState)),
        provider_kyc=st.sampled_from(list(KYC)),
        gpu_price_micros=st.integers(0, 4_000_000),
        cpu_price_micros=st.integers(1, 50_000),
        reliability=st.floats(0.5, 1.0),
        tflops=st.floats(0, 100),
    ),
    min_size=1,
    max_size=30,
)
demand_strategy = st.builds(
    Demand,
    gpu_models=st.lists(st.sampled_from(list(CATALOG)), min_size=1, max_size=3, unique=True).map(tuple),
    gpus=st.integers(0, 3),
    min_vram_gb=st.sampled_from([None, 24, 80]),
    cpu=st.sampled_from([0.5, 1.0, 4.0]),
    memory_mb=st.sampled_from([0, 1024, 4096]),
    regions=st.lists(st.sampled_from(REGIONS), max_size=2).map(tuple),
    deny_countries=st.lists(st.sampled_from(COUNTRIES), max_size=2).map(tuple),
    max_price_micros=st.sampled_from([None, 500_000, 3_000_000]),
    min_reliability=st.sampled_from([None, 0.9]),
    near=st.sampled_from([None, "eu-west", "sa-east"]),
    latency_budget_ms=st.sampled_from([None, 60.0]),
    replicas=st.integers(1, 4),
    distinct_nodes=st.booleans(),
    spread_providers=st.booleans(),
)
tenant_strategy = st.builds(TenantFacts, id=st.just("t"), country=st.sampled_from(COUNTRIES), kyc=st.just(KYC.VERIFIED))


@settings(max_examples=300, deadline=None)
@given(rows=rows_strategy, d=demand_strategy, tenant=tenant_strategy, used=st.floats(0, 2))
def test_vector_rules_agree_with_the_scalar_oracle(
    rows: list[NodeRow], d: Demand, tenant: TenantFacts, used: float
) -> None:
    policy = PolicyConfig.from_dict(
        {
            "embargoed_countries": EMBARGOED,
            "network": {"deny_regions": ["sa-east"]},
            "tenants": {"t": {"deny_countries": ["NL"]}},
        }
    )
    loads = {r.name: Load(cpu=used, gpus=1, memory_mb=1024) for r in rows[::2]}
    placer = Placer(NodeTable(rows, loads), policy)
    codes = placer.full_codes(d, tenant)
    for i, row in enumerate(rows):
        expected = first_rejection(row, d, tenant, policy, loads.get(row.name, Load()), default_regions())
        assert Reason(int(codes[i])) is expected, (row, d)
    decision = placer.decide(d, tenant, commit=False)
    if decision.placed:  # whatever is chosen passes every rule
        assert all(codes[placer.table.position[n]] == Reason.OK for n in decision.nodes)
    else:  # refused: fewer nodes with room than replicas (each could take one), unless spread refused it
        fitting = int((codes == Reason.OK).sum())
        assert fitting < d.replicas or (d.spread_providers and d.replicas > 1)


# ----------------------------------------------------------------------------- gangs and spread, brute force
PROVIDERS = ["p1", "p2", "p3", "p4"]
SMALL_POLICY = PolicyConfig.from_dict({"embargoed_countries": EMBARGOED, "network": {"deny_regions": ["sa-east"]}})


@st.composite
def small_fleets(draw: st.DrawFn) -> tuple[list[NodeRow], dict[str, Load]]:
    """2 to 8 nodes on 4 providers, most of them eligible, some already loaded. Loads are exact binary
    fractions, so that adding and removing a replica's CPUs leaves them exactly as they were."""
    rows = [
        NodeRow(
            name=f"n{i}",
            provider=draw(st.sampled_from(PROVIDERS)),
            region=draw(st.sampled_from(["eu-west"] * 4 + ["us-east"] * 3 + ["sa-east"])),
            country=draw(st.sampled_from(["DE"] * 4 + ["US"] * 3 + ["CN"])),
            gpu_model=draw(st.sampled_from([None] + ["RTX4090"] * 3 + ["H100"] * 2)),
            gpu_count=draw(st.integers(1, 4)),
            vram_gb=draw(st.sampled_from([24, 80])),
            cpus=draw(st.sampled_from([1.0, 2.0, 4.0])),
            memory_mb=draw(st.sampled_from([0, 2048, 8192])),
            alive=draw(st.sampled_from([True] * 15 + [False])),
            state=draw(st.sampled_from([NodeState.ACTIVE] * 15 + [NodeState.DRAINING])),
            provider_kyc=draw(st.sampled_from([KYC.VERIFIED] * 15 + [KYC.PENDING])),
            gpu_price_micros=draw(st.sampled_from([0, 400_000, 2_500_000])),
            cpu_price_micros=draw(st.sampled_from([1, 10_000, 20_000])),
            reliability=draw(st.sampled_from([0.8, 0.95, 0.99, 1.0])),
            tflops=draw(st.sampled_from([0.0, 50.0, 100.0])),
        )
        for i in range(draw(st.integers(2, 8)))
    ]
    load = st.builds(
        Load, cpu=st.sampled_from([0.5, 1.0, 1.5]), gpus=st.integers(0, 2), memory_mb=st.sampled_from([0, 1024, 4096])
    )
    loads = {r.name: draw(load) for r in rows if draw(st.booleans())}
    return rows, loads


gang_strategy = st.builds(
    Demand,
    gpu_models=st.sampled_from([("RTX4090", "H100"), ("RTX4090", "H100"), ("RTX4090",), ("H100",)]),
    gpus=st.sampled_from([0, 0, 1, 2]),
    cpu=st.sampled_from([0.5, 0.5, 1.0, 2.0]),
    memory_mb=st.sampled_from([0, 1024, 4096]),
    regions=st.sampled_from([(), (), ("eu-west",), ("eu-west", "us-east")]),
    max_price_micros=st.sampled_from([None, 3_000_000]),
    min_reliability=st.sampled_from([None, None, 0.9]),
    replicas=st.sampled_from([1, 2, 2, 3, 3, 4]),
    distinct_nodes=st.booleans(),
    spread_providers=st.booleans(),
)


def room(row: NodeRow, d: Demand, tenant: TenantFacts, load: Load) -> int:
    """How many of ``d``'s replicas the node takes (at most ``d.replicas``; one on a gang), by the
    oracle: replica k passes every rule with the load as it was plus the k before it."""
    taken = 0
    while taken < (1 if d.distinct_nodes else d.replicas):
        if first_rejection(row, d, tenant, SMALL_POLICY, load, default_regions()) is not Reason.OK:
            break
        load, taken = load.plus(d.cpu, d.gpus, d.memory_mb), taken + 1
    return taken


def assignments(rows: list[NodeRow], d: Demand, rooms: list[int]) -> list[tuple[int, ...]]:
    """Every way to put ``d.replicas`` replicas on the nodes, by brute force: one node per replica
    (distinct on a gang), no node given more than it has room for."""
    pick = itertools.combinations if d.distinct_nodes else itertools.combinations_with_replacement
    return [
        combo for combo in pick(range(len(rows)), d.replicas) if all(rooms[i] >= n for i, n in Counter(combo).items())
    ]


def used(table: NodeTable, name: str) -> Load:
    i = table.position[name]
    return Load(
        float(table.used_cpu[i]), int(table.used_gpus[i]), int(table.used_memory[i]), int(table.used_replicas[i])
    )


@settings(max_examples=250, deadline=None)
@given(
    fleet=small_fleets(),
    demands=st.lists(gang_strategy, min_size=1, max_size=3),
    tenant=st.sampled_from([TENANT, TENANT, TenantFacts(id="t", country="IR", kyc=KYC.VERIFIED)]),
)
def test_gangs_and_spread_against_a_brute_force_search(
    fleet: tuple[list[NodeRow], dict[str, Load]], demands: list[Demand], tenant: TenantFacts
) -> None:
    """Decisions one after another on one placer, each checked against every assignment there is,
    with the load kept here (not read back from the placer) as it was before the decision:
    whatever is placed is ``replicas`` nodes that each pass every rule per the oracle (distinct on
    a gang, on distinct providers with spread whenever any such assignment exists, else on two
    providers at least); whatever is refused has no assignment (none on distinct providers, with
    spread), and leaves the table's load as it was; a placed one adds exactly its replicas."""
    rows, loads = fleet
    provider = {r.name: r.provider for r in rows}
    placer = Placer(NodeTable(rows, loads), SMALL_POLICY)
    for d in demands:
        before = {r.name: loads.get(r.name, Load()) for r in rows}
        rooms = [room(r, d, tenant, before[r.name]) for r in rows]
        possible = assignments(rows, d, rooms)
        spread = [a for a in possible if len({rows[i].provider for i in a}) == d.replicas]
        decision = placer.decide(d, tenant)
        if decision.placed:
            nodes = decision.nodes
            assert len(nodes) == d.replicas
            assert len(set(nodes)) == d.replicas or not d.distinct_nodes
            assert all(rooms[placer.table.position[n]] >= k for n, k in Counter(nodes).items()), (nodes, rooms)
            if d.spread_providers and spread:
                assert len({provider[n] for n in nodes}) == d.replicas
            elif d.spread_providers and d.replicas > 1:
                assert len({provider[n] for n in nodes}) >= 2  # spread where possible, two providers at least
            for n in nodes:
                loads[n] = loads.get(n, Load()).plus(d.cpu, d.gpus, d.memory_mb)
        else:  # nothing to place on: with spread, not even on two providers
            two = [a for a in possible if len({rows[i].provider for i in a}) >= min(2, d.replicas)]
            assert not (two if d.spread_providers else possible), (d, rooms)
            assert sum(decision.counts.values()) == len(rows)
            assert decision.counts.get(Reason.OK, 0) == sum(1 for r in rooms if r)
        for r in rows:  # a refused gang leaves no load behind; a placed one adds its replicas exactly
            assert used(placer.table, r.name) == loads.get(r.name, Load()), (r.name, decision.nodes)


def test_spread_falls_back_to_two_providers_when_distinct_ones_run_out() -> None:
    """The cheapest three share a provider; spread takes the best other provider's node instead of
    refusing (it used to: the greedy pick had one provider, so no pick had two)."""
    rows = [
        NodeRow(name=n, provider=p, region="eu-west", country="DE", cpus=2.0, cpu_price_micros=price)
        for n, p, price in [("a", "p1", 1_000), ("b", "p1", 1_000), ("c", "p1", 1_000), ("d", "p2", 9_000)]
    ]
    gang = Demand(cpu=1.0, replicas=3, distinct_nodes=True, spread_providers=True)  # a, b, d (or a, c, d)
    decision = decide(gang, rows)
    assert decision.placed and {r.provider for r in rows if r.name in decision.nodes} == {"p1", "p2"}


def test_a_refusal_says_which_rule_the_replicas_together_broke() -> None:
    """Nodes that fit alone but not together: the words name spread, distinctness or room."""
    one_provider = [
        NodeRow(name=n, provider="p1", region="eu-west", country="DE", cpus=2.0, cpu_price_micros=1_000) for n in "ab"
    ]
    spread = decide(Demand(cpu=1.0, replicas=2, distinct_nodes=True, spread_providers=True), one_provider)
    assert not spread.placed and "all one provider's; spread_providers needs two" in spread.message
    gang = decide(Demand(cpu=1.0, replicas=3, distinct_nodes=True), one_provider)
    assert not gang.placed and "only 2 node(s) fit, need 3 distinct node(s)" in gang.message
    batch = decide(Demand(cpu=1.0, replicas=5), one_provider)
    assert not batch.placed and "have room for fewer than 5 replica(s)" in batch.message


def test_on_a_large_fleet_the_choice_is_the_best_scoring_node_that_passes() -> None:
    """Past one ranking chunk (lazy sorting, skipped full nodes), decisions still take the best."""
    import random

    from bench.placement import make_fleet, make_jobs

    rng = random.Random(3)
    rows, jobs = make_fleet(1200, rng), make_jobs(150, rng)  # 1200 nodes: several ranking chunks
    placer = Placer(NodeTable(rows), POLICY)
    regions = default_regions()
    for job in jobs:
        d, tenant = job.demand, job.tenant
        if d.replicas != 1:
            continue
        table = placer.table
        loads = {
            n: Load(float(table.used_cpu[i]), int(table.used_gpus[i]), int(table.used_memory[i]))
            for i, n in enumerate(table.names)
        }
        ok = [
            i for i, r in enumerate(rows) if first_rejection(r, d, tenant, POLICY, loads[r.name], regions) is Reason.OK
        ]
        decision = placer.decide(d, tenant)
        if not ok:
            assert not decision.placed
            continue
        static_ok = np.flatnonzero(placer.static_codes(d, tenant) == 0)
        scores = dict(zip(static_ok.tolist(), placer.score(d, static_ok).tolist()))
        best = max(scores[i] for i in ok)
        assert decision.placed and abs(scores[table.position[decision.nodes[0]]] - best) < 1e-9
