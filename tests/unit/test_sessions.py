"""Sessions, the pure part: the spec ``runner session start`` makes, the player's URL, the SLA
judge, the session view, and which job a session preempts."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from runner.core.demand import Demand
from runner.core.errors import SpecError
from runner.core.network import default_network
from runner.core.nodetable import Load, NodeRow, NodeTable
from runner.core.placement import Placer
from runner.core.policy import KYC, TenantFacts
from runner.core.preemption import (
    Allowance,
    Holder,
    PastPreemption,
    PreemptionRules,
    allowance,
    plan_preemption,
    priority,
)
from runner.core.sessions import (
    DEFAULT_GPU,
    SlaWatch,
    phase,
    player_url,
    session_spec,
    session_view,
    sla_problems,
    sla_state,
)
from runner.core.spec import parse_workload, spec_to_dict
from runner.fleet import load_fleet

TENANT = TenantFacts(id="acme", country="DE", kyc=KYC.VERIFIED)


# ----------------------------------------------------------------------------- the spec
def test_a_session_request_becomes_a_gaming_spec_with_sensible_defaults() -> None:
    spec = parse_workload(session_spec({"game": "breakout", "near": "ap-northeast"}), source="session")
    assert spec.kind == "gaming" and spec.game == "breakout" and spec.near == "ap-northeast"
    assert spec.image == "runner/gaming:latest" and [p.container for p in spec.ports] == [8000]
    assert spec.resources.gpu is not None and "|".join(spec.resources.gpu.models) == DEFAULT_GPU
    assert spec.resources.cpu == 1.0 and spec.fps == 60 and spec.resolution == "1280x720"
    assert spec.name == "breakout-session"


def test_session_options_reach_the_spec() -> None:
    spec = parse_workload(
        session_spec(
            {
                "game": "breakout",
                "near": "eu-west",
                "fps": 30,
                "resolution": "640x360",
                "idle_timeout": "30s",
                "gpu": "T4",
                "max_price_per_gpu_hour": 0.5,
            }
        )
    )
    assert (spec.fps, spec.resolution, spec.idle_timeout) == (30, "640x360", 30.0)
    assert spec.resources.gpu is not None and spec.resources.gpu.models == ["T4"]
    assert spec.placement.max_price_per_gpu_hour == 0.5


def test_bad_session_requests_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"near: unknown region 'mars'; known regions: eu-west"):
        session_spec({"game": "breakout", "near": "mars"})
    with pytest.raises(SpecError, match=r"fsp: unknown field \(did you mean 'fps'\?\)"):
        session_spec({"game": "breakout", "near": "eu-west", "fsp": 60})
    with pytest.raises(SpecError, match="game: missing required field"):
        session_spec({"near": "eu-west"})
    with pytest.raises(SpecError, match="fps: must be <= 240, got 500"):
        parse_workload(session_spec({"game": "breakout", "near": "eu-west", "fps": 500}), source="session")


# ----------------------------------------------------------------------------- the URL
def test_the_player_url_comes_from_the_published_port() -> None:
    assert player_url({"8000/tcp": "127.0.0.1:49153"}) == "http://127.0.0.1:49153/"
    assert player_url({"8000/tcp": "0.0.0.0:49153"}, node_address="10.0.0.7") == "http://10.0.0.7:49153/"
    assert player_url({"8000/tcp": "::1:5000"}) == "http://[::1]:5000/"
    assert player_url({}) is None and player_url({"9000/tcp": "127.0.0.1:1"}) is None


# ----------------------------------------------------------------------------- the SLA
def metrics(fps: float = 60.0, latency: float | None = 20.0) -> dict[str, Any]:
    return {"fps": fps, "latency_p95_ms": latency, "target_fps": 60}


def test_problems_are_fps_below_95_percent_and_latency_over_budget() -> None:
    assert sla_problems(metrics(57.0), 60, 50) == []
    assert sla_problems(metrics(56.9), 60, 50) == ["fps 56.9 < 57 (95% of 60)"]
    assert sla_problems(metrics(latency=50.5), 60, 50) == ["latency p95 50.5 ms > budget 50 ms"]
    assert sla_problems(metrics(latency=None), 60, 50) == []  # no player input yet: nothing to judge


def test_one_bad_sample_is_not_a_breach_but_a_sustained_one_is() -> None:
    watch = SlaWatch(target_fps=60, budget_ms=50, sustain_s=10)
    assert watch.observe(5, metrics(30)) is None
    assert watch.observe(10, metrics(60)) is None  # it recovered at once: no breach
    assert watch.observe(15, metrics(30)) is None
    assert watch.observe(20, metrics(30)) is None
    change = watch.observe(25, metrics(30, latency=80))
    assert change is not None and change.kind == "breach" and watch.breached
    assert change.message == "SLA breach: fps 30 < 57 (95% of 60); latency p95 80 ms > budget 50 ms for 10s"
    assert watch.observe(30, metrics(30)) is None  # still breached: reported once
    assert watch.observe(30, metrics(60)) is None  # the same sample again is ignored
    assert watch.observe(35, metrics(60)) is None and watch.observe(40, metrics(60)) is None
    recovered = watch.observe(45, metrics(60))
    assert recovered is not None and recovered.kind == "recovered" and not watch.breached


def test_the_sla_state_is_read_back_from_events() -> None:
    assert sla_state([])["state"] == "ok"
    events = [
        SimpleNamespace(kind=kind, message=message)
        for kind, message in [
            ("state", "running"),
            ("sla_breach", "SLA breach: fps 30 < 57 for 10s"),
            ("sla_recovered", "SLA recovered: ..."),
            ("note", "SLA recovered: only words"),
            ("sla_breach", "SLA breach: x"),
        ]
    ]
    assert sla_state(events) == {"state": "breached", "breaches": 2, "last": "SLA breach: x"}


# ----------------------------------------------------------------------------- the view
def test_phases() -> None:
    assert phase("PENDING", serving=False, ending=False, ended=False) == "waiting"
    assert phase("RUNNING", serving=False, ending=False, ended=False) == "starting"
    assert phase("RUNNING", serving=True, ending=False, ended=False) == "serving"
    assert phase("RUNNING", serving=True, ending=True, ended=False) == "ending"
    assert phase("SUCCEEDED", serving=False, ending=False, ended=True) == "ended"


def _session_rows(metrics: dict[str, Any]) -> tuple[Any, Any]:
    """A running session near ap-northeast on tyo-4090-1 whose latest metrics report is ``metrics``."""
    spec = spec_to_dict(parse_workload(session_spec({"game": "breakout", "near": "ap-northeast"})))
    w = SimpleNamespace(
        id="w-1",
        name="s",
        spec=spec,
        state="RUNNING",
        attempts=1,
        stop_reason="",
        stop_kind="",
        cancel_requested=False,
        message="running",
        created_at=1.0,
        started_at=2.0,
        finished_at=None,
    )
    rep = SimpleNamespace(
        attempt=1,
        node="tyo-4090-1",
        finished_at=None,
        ports={"8000/tcp": "127.0.0.1:4000"},
        reports={"session": {"event": "ready"}, "metrics": metrics},
    )
    return w, rep


def test_the_session_view_shows_where_how_far_and_how_it_plays() -> None:
    w, rep = _session_rows({"fps": 59.9, "latency_p95_ms": 31.0})
    events = [SimpleNamespace(kind="sla_breach", message="SLA breach: fps 20 < 57 for 10s")]
    v = session_view(w, [rep], events, node_region="ap-northeast")
    assert v["phase"] == "serving" and v["url"] == "http://127.0.0.1:4000/" and v["expected_rtt_ms"] == 5
    assert v["measured_rtt_ms"] is None and v["measured_rtt_p95_ms"] is None  # no player has pinged yet
    assert v["fps"] == 59.9 and v["latency_p95_ms"] == 31.0 and v["sla"]["state"] == "breached"
    assert "rtt_ms" not in v  # renamed: the table's figure is an expectation, not a measurement
    far = session_view(w, [rep], [], node_region="eu-west")
    assert far["expected_rtt_ms"] == 230 and far["sla"]["state"] == "ok"
    assert session_view(w, [rep], [], node_region=None)["expected_rtt_ms"] is None


def test_the_session_view_shows_the_measured_round_trip_beside_the_tables() -> None:
    from runner.cli.sessions import _rtt_cell, _where

    w, rep = _session_rows({"fps": 60.0, "rtt_p50_ms": 27.4, "rtt_p95_ms": 41.0, "rtt_samples": 12})
    v = session_view(w, [rep], [], node_region="ap-northeast")
    assert (v["measured_rtt_ms"], v["measured_rtt_p95_ms"], v["measured_rtt_samples"]) == (27.4, 41.0, 12)
    assert v["expected_rtt_ms"] == 5  # the table's figure stays, beside the measurement
    assert _rtt_cell(v) == "27 ms (table 5)"
    assert _where(v) == "on tyo-4090-1 (ap-northeast, RTT 27 ms measured, table 5 ms from ap-northeast)"
    loopback = session_view(
        w,
        [SimpleNamespace(**{**vars(rep), "reports": {"metrics": {"rtt_p50_ms": 0.43}}})],
        [],
        node_region="ap-northeast",
    )
    assert _rtt_cell(loopback) == "0.4 ms (table 5)"
    unmeasured = session_view(w, [SimpleNamespace(**{**vars(rep), "reports": {}})], [], node_region="ap-northeast")
    assert _rtt_cell(unmeasured) == "- (table 5)"
    assert _where(unmeasured) == "on tyo-4090-1 (ap-northeast, table RTT 5 ms from ap-northeast)"


@pytest.mark.parametrize("bad", ["fast", float("nan"), float("inf"), -1.0, True, [27]])
def test_a_measured_round_trip_that_is_not_a_duration_reads_as_not_measured(bad: Any) -> None:
    # The report is the workload's own stdout: what it writes must not break `session ls`.
    w, rep = _session_rows({"rtt_p50_ms": bad, "rtt_p95_ms": bad, "rtt_samples": bad})
    v = session_view(w, [rep], [], node_region="ap-northeast")
    assert (v["measured_rtt_ms"], v["measured_rtt_p95_ms"], v["measured_rtt_samples"]) == (None, None, None)


# ----------------------------------------------------------------------------- preemption
def placer(loads: dict[str, Load]) -> Placer:
    rows: list[NodeRow] = [n.to_row() for n in load_fleet().nodes]
    return Placer(NodeTable(rows, loads), default_network().policy)


def session_demand(near: str = "ap-northeast") -> Demand:
    return Demand.from_spec(parse_workload(session_spec({"game": "breakout", "near": near})))


GPU_JOB = Load(cpu=0.5, gpus=1, memory_mb=1024, replicas=1)


def test_a_session_preempts_the_cheapest_job_that_makes_room_near_the_player() -> None:
    loads = {"tyo-4090-1": Load(cpu=1.0, gpus=1, memory_mb=2048, replicas=2), "ams-4090-1": GPU_JOB}
    holders = [
        Holder("w-old", "batch", {"tyo-4090-1": GPU_JOB}, lost_s=600),
        Holder("w-new", "batch", {"tyo-4090-1": Load(cpu=0.5, memory_mb=1024, replicas=1)}, lost_s=5),
        Holder("w-eu", "batch", {"ams-4090-1": GPU_JOB}, lost_s=1),  # frees a node too far from Tokyo
    ]
    plan = plan_preemption(placer(loads), session_demand(), TENANT, "gaming", holders)
    # w-new is cheaper but holds no GPU: stopping it would not make room; w-eu is too far away.
    assert plan is not None and (plan.victim, plan.node) == ("w-old", "tyo-4090-1")
    assert [c[0] for c in plan.candidates] == ["w-old"]


def test_the_cheapest_of_several_victims_is_chosen() -> None:
    cpus_full = {"tyo-4090-1": Load(cpu=2.0, gpus=0, memory_mb=2048, replicas=2)}  # its GPU is free, its CPUs not
    holders = [
        Holder("w-a", "training", {"tyo-4090-1": Load(cpu=1.0, replicas=1)}, lost_s=300),
        Holder("w-b", "batch", {"tyo-4090-1": Load(cpu=1.0, replicas=1)}, lost_s=20),
    ]
    plan = plan_preemption(placer(cpus_full), session_demand(), TENANT, "gaming", holders)
    assert plan is not None and plan.victim == "w-b" and plan.lost_s == 20
    assert [c[0] for c in plan.candidates] == ["w-b", "w-a"]


def test_room_already_being_freed_means_wait_not_preempt_again() -> None:
    loads = {"tyo-4090-1": Load(cpu=1.0, gpus=1, memory_mb=2048, replicas=2)}
    holders = [
        Holder("w-going", "batch", {"tyo-4090-1": GPU_JOB}, lost_s=60, stopping=True),
        Holder("w-other", "batch", {"tyo-4090-1": GPU_JOB}, lost_s=1),
    ]
    plan = plan_preemption(placer(loads), session_demand(), TENANT, "gaming", holders)
    assert plan is not None and plan.victim is None and plan.node == "tyo-4090-1"


def test_services_and_unreachable_nodes_are_never_preempted_for() -> None:
    loads = {"tyo-4090-1": GPU_JOB, "ams-4090-1": GPU_JOB}
    service = [Holder("w-svc", "inference", {"tyo-4090-1": GPU_JOB}, lost_s=1)]
    assert plan_preemption(placer(loads), session_demand(), TENANT, "gaming", service) is None
    # From sa-east every 4090 node is beyond the 50 ms budget: stopping work cannot help.
    batch = [Holder("w-b", "batch", {"tyo-4090-1": GPU_JOB}, lost_s=1)]
    assert plan_preemption(placer(loads), session_demand("sa-east"), TENANT, "gaming", batch) is None
    # A batch job preempts nothing.
    job = Demand.from_spec(
        parse_workload({"name": "j", "kind": "batch", "image": "i", "resources": {"gpu": "RTX4090"}})
    )
    assert plan_preemption(placer(loads), job, TENANT, "batch", batch) is None
    assert priority("gaming") > priority("inference") > priority("batch") == priority("training")


def test_a_preemption_never_breaks_a_static_rule() -> None:
    rows = [dataclasses.replace(n.to_row(), alive=n.name != "tyo-4090-1") for n in load_fleet().nodes]
    table = Placer(NodeTable(rows, {"tyo-4090-1": GPU_JOB}), default_network().policy)
    holders = [Holder("w-b", "batch", {"tyo-4090-1": GPU_JOB}, lost_s=1)]
    assert plan_preemption(table, session_demand(), TENANT, "gaming", holders) is None  # the node is down


# -- preemption at will: the rate rules ---------------------------------------------------------------
RULES = PreemptionRules(victim_cooldown_s=1800, others_per_tenant_per_hour=2)
NOW = 100_000.0


def test_a_victim_is_protected_for_the_cooldown_and_a_tenant_may_stop_only_so_many_of_others() -> None:
    past = [
        PastPreemption(NOW - 1790, "acme", "w-rival-1", "rival"),  # 10 s of cooldown left
        PastPreemption(NOW - 1810, "acme", "w-rival-2", "rival"),  # cooled down, still within the hour
        PastPreemption(NOW - 60, "acme", "w-own", "acme"),  # its own work: not counted against it
        PastPreemption(NOW - 4000, "acme", "w-rival-3", "rival"),  # over an hour ago: not counted
    ]
    a = allowance(past, NOW, "acme", RULES)
    assert a.protected == {"w-rival-1", "w-own"} and a.others is False  # two of others' in the hour: spent
    assert allowance(past, NOW + 11, "acme", RULES).protected == {"w-own"}
    assert allowance(past, NOW, "other", RULES).others is True  # another tenant's count is its own
    assert allowance(past[:1], NOW, "acme", RULES).others is True


def test_a_tenant_that_has_spent_its_preemptions_stops_only_its_own_work() -> None:
    loads = {"tyo-4090-1": Load(cpu=1.0, gpus=1, memory_mb=2048, replicas=2)}
    holders = [
        Holder("w-rival", "batch", {"tyo-4090-1": GPU_JOB}, tenant_id="rival", lost_s=1),
        Holder("w-own", "batch", {"tyo-4090-1": GPU_JOB}, tenant_id="acme", lost_s=900),
    ]
    free = plan_preemption(placer(loads), session_demand(), TENANT, "gaming", holders)
    assert free is not None and free.victim == "w-rival"  # the cheapest, whoever's it is
    spent = Allowance(protected=frozenset(), others=False)
    plan = plan_preemption(placer(loads), session_demand(), TENANT, "gaming", holders, spent)
    assert plan is not None and plan.victim == "w-own"
    protected = Allowance(protected=frozenset({"w-rival", "w-own"}), others=True)
    assert plan_preemption(placer(loads), session_demand(), TENANT, "gaming", holders, protected) is None
