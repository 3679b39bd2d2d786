"""Placement on hand-made fleets: every filter, and the least-loaded choice."""

from __future__ import annotations

from runner.fleet import load_fleet
from runner.nodes import NodeInfo
from runner.placement import Demand, Load, place
from runner.spec import parse_workload

GiB = 1024**3


def fleet_nodes(alive: bool = True) -> list[NodeInfo]:
    """The packaged default fleet, as the control plane would see it from Ray."""
    return [
        NodeInfo(
            name=n.name, node_id=f"id-{n.name}", alive=alive, labels=n.labels(simulated=True),
            resources={"CPU": n.cpus, "GPU": n.gpu_count, "memory": n.memory_gb * GiB},
        )  # fmt: skip
        for n in load_fleet().nodes
    ]


def demand(**spec: object) -> Demand:
    base = {"name": "t", "kind": "batch", "image": "img"}
    return Demand.from_spec(parse_workload({**base, **spec}))


def test_gpu_model_picks_the_only_node_with_it() -> None:
    assert place(demand(resources={"gpu": "H100"}), fleet_nodes(), {}).node == "fra-h100-1"


def test_region_filter() -> None:
    decision = place(demand(placement={"regions": ["ap-northeast"]}), fleet_nodes(), {})
    assert decision.node == "tyo-4090-1"
    assert decision.reasons["fra-h100-1"].startswith("region eu-west not in")


def test_denied_country_and_region() -> None:
    d = demand(resources={"gpu": "RTX4090"}, placement={"deny_countries": ["NL"]})
    assert place(d, fleet_nodes(), {}).node == "tyo-4090-1"
    d = demand(resources={"gpu": "RTX4090"}, placement={"deny_regions": ["ap-northeast", "eu-west"]})
    decision = place(d, fleet_nodes(), {})
    assert decision.node is None
    assert "denied" in decision.reasons["tyo-4090-1"]


def test_gpu_count_and_vram() -> None:
    assert place(demand(resources={"gpu": "A100:2"}), fleet_nodes(), {}).node == "nyc-a100-1"
    decision = place(demand(resources={"gpu": "A100|H100:3"}), fleet_nodes(), {})
    assert decision.node is None and "GPUs free" in decision.reasons["nyc-a100-1"]
    decision = place(demand(resources={"gpu": {"models": ["RTX4090", "H100"], "min_vram_gb": 40}}), fleet_nodes(), {})
    assert decision.node == "fra-h100-1"


def test_price_cap() -> None:
    decision = place(demand(resources={"gpu": "H100"}, placement={"max_price_per_gpu_hour": 0.5}), fleet_nodes(), {})
    assert decision.node is None
    assert "price" in decision.reasons["fra-h100-1"]


def test_busy_gpus_are_not_double_booked() -> None:
    d = demand(resources={"gpu": "H100"})
    busy = {"fra-h100-1": Load().plus(d)}
    decision = place(d, fleet_nodes(), busy)
    assert decision.node is None
    assert decision.reasons["fra-h100-1"] == "0 of 1 GPUs free, need 1"


def test_cpu_only_work_goes_to_the_least_loaded_node() -> None:
    d = demand(resources={"cpu": 1})
    loads = {"ams-4090-1": Load(cpu=1, replicas=1), "fra-h100-1": Load(cpu=1, replicas=1), "nyc-a100-1": Load(cpu=1.5, replicas=2)}
    assert place(d, fleet_nodes(), loads).node == "tyo-4090-1"


def test_dead_nodes_never_receive_work() -> None:
    decision = place(demand(), fleet_nodes(alive=False), {})
    assert decision.node is None
    assert set(decision.reasons.values()) == {"node is down"}
    assert "node is down" in decision.summary()


def test_summary_groups_reasons() -> None:
    decision = place(demand(resources={"gpu": "T4"}), fleet_nodes(), {})
    assert decision.node is None
    assert decision.summary().startswith("no node fits: ")
    assert "not in T4" in decision.summary()
