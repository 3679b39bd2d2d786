"""Inference services, the pure parts: slot planning (replace, back off, give up, move off a
leaving node, retire), the autoscaler's hysteresis, placing a replica beside its siblings, and the
tenant's view."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from runner.core.autoscale import Autoscaler, Policy, Sample, wanted
from runner.core.demand import Demand
from runner.core.network import default_network
from runner.core.nodetable import Load, NodeTable
from runner.core.policy import KYC, TenantFacts
from runner.core.service_placement import ServicePlacer
from runner.core.services import (
    Slot,
    desired_from_events,
    ended_keys,
    endpoint_url,
    plan,
    serves,
    service_view,
    slots_of,
)
from runner.core.spec import RetryPolicy, parse_workload
from runner.fleet import load_fleet

NOW = 1_000.0
RETRIES = RetryPolicy(max_attempts=3, backoff_s=2, backoff_factor=2)


@dataclass
class Rep:
    """A replica row, as far as the rules read one."""

    index: int
    attempt: int
    node: str = "n1"
    state: str = "RUNNING"
    finished_at: float | None = None
    reports: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    error: str = ""
    provider_id: str = "p"
    ports: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"w-1-r{self.index}-a{self.attempt}"


def serving(index: int, attempt: int = 1, node: str = "n1") -> Rep:
    return Rep(index, attempt, node=node, reports={"ready": {}})


def crashed(index: int, attempt: int, at: float = NOW - 0.5, served: bool = False) -> Rep:
    return Rep(index, attempt, state="EXITED", finished_at=at, exit_code=1, reports={"ready": {}} if served else {})


# ----------------------------------------------------------------------------- slots
def test_a_new_service_starts_every_slot() -> None:
    p = plan([], desired=2, leaving=set(), retries=RETRIES, now=NOW)
    assert [i for i, _ in p.start] == [0, 1] and not p.retire and not p.given_up


def test_a_replica_that_served_is_replaced_at_once() -> None:
    reps = [serving(0), crashed(1, 1, served=True)]
    p = plan(reps, desired=2, leaving=set(), retries=RETRIES, now=NOW)
    assert p.start == [(1, "replacing w-1-r1-a1, which exited with code 1 after serving")]


def test_a_lost_replica_is_replaced_at_once_and_never_counts() -> None:
    lost = [Rep(0, a, state="LOST", finished_at=NOW - 0.1, error="node n1 is gone") for a in (1, 2, 3, 4)]
    p = plan(lost, desired=1, leaving=set(), retries=RETRIES, now=NOW)
    assert [i for i, _ in p.start] == [0] and "was lost (node n1 is gone)" in p.start[0][1]
    assert slots_of(lost)[0].next_attempt == 5


def test_a_crash_loop_backs_off_then_gives_up() -> None:
    one = [crashed(0, 1)]
    p = plan(one, desired=1, leaving=set(), retries=RETRIES, now=NOW)
    assert not p.start and p.waiting == {0: NOW - 0.5 + 2}  # backoff_s before the 2nd attempt
    assert plan(one, desired=1, leaving=set(), retries=RETRIES, now=NOW + 2).start
    two = [crashed(0, 1, at=NOW - 10), crashed(0, 2)]
    assert plan(two, desired=1, leaving=set(), retries=RETRIES, now=NOW).waiting == {0: NOW - 0.5 + 4}
    three = [crashed(0, 1, at=NOW - 20), crashed(0, 2, at=NOW - 10), crashed(0, 3)]
    p = plan(three, desired=1, leaving=set(), retries=RETRIES, now=NOW + 100)
    assert not p.start and p.given_up == {0: three[-1]}


def test_a_sigterm_is_a_stop_not_a_crash() -> None:
    stopped = Rep(0, 1, state="EXITED", finished_at=NOW - 0.1, exit_code=143)
    assert Slot(0, [stopped]).streak == 0
    assert plan([stopped], desired=1, leaving=set(), retries=RETRIES, now=NOW).start


def test_serving_resets_the_crash_loop() -> None:
    reps = [crashed(0, 1, at=NOW - 30), crashed(0, 2, at=NOW - 20, served=True), crashed(0, 3)]
    assert Slot(0, reps).streak == 1
    assert plan(reps, desired=1, leaving=set(), retries=RETRIES, now=NOW + 2).start


def test_a_replica_on_a_leaving_node_gets_a_successor_first_and_is_retired_once_it_serves() -> None:
    old = serving(0, 1, node="draining")
    p = plan([old], desired=1, leaving={"draining"}, retries=RETRIES, now=NOW)
    assert p.start == [(0, "moving w-1-r0-a1 off node draining, which is leaving")] and not p.retire
    starting = Rep(0, 2, node="n2", state="STARTING")
    p = plan([old, starting], desired=1, leaving={"draining"}, retries=RETRIES, now=NOW)
    assert not p.start and not p.retire  # the old one serves until its successor does
    p = plan([old, serving(0, 2, node="n2")], desired=1, leaving={"draining"}, retries=RETRIES, now=NOW)
    assert p.retire == [(old, "its successor w-1-r0-a2 serves")] and not p.start


def test_scaling_down_retires_the_top_slots() -> None:
    reps = [serving(0), serving(1), serving(2)]
    p = plan(reps, desired=2, leaving=set(), retries=RETRIES, now=NOW)
    assert p.retire == [(reps[2], "scaled down to 2")] and not p.start


def event(kind: str, message: str = "x", **data: Any) -> SimpleNamespace:
    """An event row: what recovery reads is its kind and data, never its message."""
    return SimpleNamespace(kind=kind, message=message, data=data or None)


def test_sizes_and_ended_replicas_are_read_back_from_events() -> None:
    events = [
        event("state", "submitted"),
        event("scaled", "scaling up 1 -> 3: load", **{"from": 1, "to": 3}),
        event("replica_ended", "replica w-1-r0-a1 on n1 was lost; replacing it", key="w-1-r0-a1", node="n1"),
        event("scaled", "scaling down 3 -> 2: quiet", **{"from": 3, "to": 2}),
        event("note", "scaling up 2 -> 4: only words"),
        event("note", "replica w-1-r1-a1 on n2 only words"),
    ]
    assert desired_from_events(events, 1, 4) == 2
    assert desired_from_events(events, 3, 4) == 3  # never below the spec's min
    assert desired_from_events([], 2, 4) == 2
    assert ended_keys(events) == {"w-1-r0-a1"}


# ----------------------------------------------------------------------------- autoscaling
POLICY = Policy(min=1, max=4, target_concurrency=10, up_after_s=10, down_after_s=60)


def busy(in_flight: float, ts: float, queue: int = 0) -> Sample:
    """A report whose Little's-law concurrency is ``in_flight`` (100 requests/s at that latency)."""
    return Sample(requests_per_s=100.0, latency_ms_p50=in_flight * 10.0, latency_ms_p99=None, queue_depth=queue, ts=ts)


def test_concurrency_is_rate_times_latency() -> None:
    assert busy(25, NOW).concurrency == 25
    assert wanted(POLICY, 1, [busy(25, NOW)])[0] == 3
    assert wanted(POLICY, 3, [busy(2, NOW)])[0] == 1
    assert wanted(POLICY, 1, [busy(500, NOW)])[0] == 4  # clamped to max


def test_up_after_the_load_held_then_at_once_to_what_it_asks() -> None:
    s = Autoscaler(POLICY)
    assert s.observe(NOW, 1, [busy(35, NOW)]) is None
    assert s.observe(NOW + 5, 1, [busy(35, NOW + 5)]) is None
    decision = s.observe(NOW + 10, 1, [busy(35, NOW + 10)])
    assert decision is not None and (decision.current, decision.target) == (1, 4)
    assert decision.message.startswith("scaling up 1 -> 4: 35.0 requests in flight on 1 serving replica(s)")


def test_a_dip_resets_the_clock() -> None:
    s = Autoscaler(POLICY)
    s.observe(NOW, 1, [busy(35, NOW)])
    s.observe(NOW + 6, 1, [busy(5, NOW + 6)])
    assert s.observe(NOW + 12, 1, [busy(35, NOW + 12)]) is None
    assert s.observe(NOW + 22, 1, [busy(35, NOW + 22)]) is not None


def test_down_slowly_one_at_a_time() -> None:
    s = Autoscaler(POLICY)
    assert s.observe(NOW, 3, [busy(1, NOW)]) is None
    assert s.observe(NOW + 59, 3, [busy(1, NOW + 59)]) is None
    decision = s.observe(NOW + 60, 3, [busy(1, NOW + 60)])
    assert decision is not None and decision.target == 2
    assert s.observe(NOW + 61, 2, [busy(1, NOW + 61)]) is None  # the clock starts again


def test_stale_or_missing_reports_decide_nothing_and_fixed_sizes_never_move() -> None:
    s = Autoscaler(POLICY)
    assert s.observe(NOW + 100, 3, [busy(1, NOW)]) is None
    assert s.observe(NOW, 3, []) is None
    fixed = Autoscaler(dataclasses.replace(POLICY, min=2, max=2, up_after_s=0))
    assert fixed.observe(NOW, 2, [busy(100, NOW)]) is None


def test_a_latency_bound_adds_a_replica() -> None:
    policy = dataclasses.replace(POLICY, max_p99_ms=100, up_after_s=0)
    slow = Sample(requests_per_s=10, latency_ms_p50=50, latency_ms_p99=400, queue_depth=0, ts=NOW)
    decision = Autoscaler(policy).observe(NOW, 1, [slow])
    assert decision is not None and decision.target == 2 and "over 100 ms" in decision.reason


def test_policy_defaults_come_from_the_spec() -> None:
    spec = parse_workload(
        {
            "name": "s",
            "kind": "inference",
            "image": "i",
            "replicas": {"min": 1, "max": 3},
            "batching": {"max_batch_size": 16},
            "autoscale": {"down_after": "5m"},
        }
    )
    policy = Policy.from_spec(spec)
    assert (policy.target_concurrency, policy.up_after_s, policy.down_after_s) == (16, 10, 300)
    assert spec.retries.max_attempts == 3  # a service's crash-loop bound unless it says otherwise


def test_samples_come_from_stored_reports() -> None:
    report = {"requests_per_s": 12.5, "latency_ms_p50": 80, "latency_ms_p99": None, "queue_depth": 3, "ts": NOW}
    sample = Sample.from_report(report)
    assert sample is not None and sample.concurrency == 1.0 and sample.queue_depth == 3
    assert Sample.from_report({"requests_per_s": 1}) is None  # no timestamp: not a stored report


# ----------------------------------------------------------------------------- placing beside
TENANT = TenantFacts(id="acme", country="DE", kyc=KYC.VERIFIED)


def placer(loads: dict[str, Load] | None = None) -> ServicePlacer:
    return ServicePlacer(NodeTable([n.to_row() for n in load_fleet().nodes], loads), default_network().policy)


def one(**placement: Any) -> Demand:
    spec = parse_workload(
        {"name": "s", "kind": "inference", "image": "i", "resources": {"cpu": 1}, "placement": placement}
    )
    return Demand.from_spec(spec, replicas=1)


def test_a_replacement_goes_to_a_node_the_service_does_not_use() -> None:
    d = one()
    first = placer().decide(d, TENANT).nodes[0]
    again = placer().decide_beside(d, TENANT, [first])
    assert again.placed and again.nodes[0] != first


def test_spread_prefers_a_provider_the_service_does_not_use() -> None:
    # ams-4090-1 and tyo-4090-1 are both pixelfarm's: beside ams, spread must not pick tyo
    for _ in range(3):
        chosen = placer().decide_beside(one(spread_providers=True), TENANT, ["ams-4090-1"]).nodes[0]
        assert chosen in ("fra-h100-1", "nyc-a100-1")


def test_with_no_other_node_left_a_replica_shares_one() -> None:
    d = one(regions=["ap-northeast"])
    decision = placer().decide_beside(d, TENANT, ["tyo-4090-1"])
    assert decision.nodes == ("tyo-4090-1",) and "no node apart from the service's others" in decision.message
    full = placer({"tyo-4090-1": Load(cpu=2.0)}).decide_beside(d, TENANT, ["tyo-4090-1"])
    assert not full.placed and "tyo-4090-1" in full.message


def test_several_more_replicas_land_on_distinct_nodes() -> None:
    decision = placer().decide_beside(dataclasses.replace(one(), replicas=2), TENANT, ["fra-h100-1"])
    assert decision.placed and len(set(decision.nodes)) == 2 and "fra-h100-1" not in decision.nodes


# ----------------------------------------------------------------------------- the tenant's view
def test_the_view_sums_fresh_rates_and_names_the_endpoint() -> None:
    spec = parse_workload({"name": "s", "kind": "inference", "image": "i", "replicas": {"min": 1, "max": 3}})

    @dataclass
    class W:
        id: str = "w-1"
        name: str = "s"
        state: str = "RUNNING"
        message: str = ""

    a, b = serving(0, node="n1"), serving(1, node="n2")
    a.reports["metrics"] = {"requests_per_s": 10.0, "items_per_s": 20.0, "ts": NOW - 1}
    b.reports["metrics"] = {"requests_per_s": 99.0, "items_per_s": 99.0, "ts": NOW - 100}  # stale: not counted
    scaled = event("scaled", "scaling up 1 -> 2: load", **{"from": 1, "to": 2})
    view = service_view(W(), spec, [a, b, crashed(2, 1)], [scaled], gateway="http://gw:1", now=NOW)
    assert view["endpoint"] == "http://gw:1/s/w-1/v1" == endpoint_url("http://gw:1/", "w-1")
    assert view["requests_per_s"] == 10.0 and view["items_per_s"] == 20.0
    assert view["replicas"] == {"min": 1, "max": 3, "desired": 2, "serving": 2, "live": 2}
    assert [m["node"] for m in view["members"]] == ["n1", "n2"] and serves(a)
    assert view["last_scaling"] == "scaling up 1 -> 2: load"
