"""A provider's machine may lie about itself: each attack here is a join (or a benchmark) that
claims more than the machine is, and the test fails if the claim is believed (issue 14, point 4).

Served by the real API over a real SQLite store (``test_node_identity.Network``); the benchmark
figures are what a machine *reports*, which is exactly what an attacker controls.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runner.benchmark import PEAK_MARGIN, ceiling_tflops, judge
from runner.core.approval import ApprovedMachine
from runner.core.catalog import CATALOG
from runner.core.errors import NotFoundError
from runner.core.network import default_network
from runner.settings import Settings
from tests.support.inprocess_api import LOOPBACK_PEER, StubSupervisor, make_app
from tests.unit.test_node_identity import BENCH, Network


@pytest.fixture()
def net(tmp_path: Path) -> Network:
    return Network(tmp_path)


def refusals(net: Network, name: str) -> list[str]:
    return [e.payload["reason"] for e in net.store.audit_entries(kind="node.refused") if e.payload["node"] == name]


def test_a_gpu_faster_than_the_model_it_declares_is_refused_at_join(net: Network) -> None:
    """An H100 (about 990 dense FP16 TFLOPS) declared as an RTX 4090 (165): no 4090 reaches that."""
    as_h100 = {**BENCH, "tflops": 600.0, "device": "cuda", "dtype": "float16"}
    lied = net.join("gpu-barn", "cheap-4090", gpu_model="RTX4090", gpu_count=1, benchmark=as_h100)
    assert lied.status_code == 403 and lied.json()["error"] == "PolicyError", lied.text
    assert "faster GPU than it declares" in lied.json()["message"]
    assert "ray_token" not in lied.text
    assert len(refusals(net, "cheap-4090")) == 1
    # The same figure declared as what it is passes the benchmark rule.
    honest = net.join("gpu-barn", "real-h100", gpu_model="H100", gpu_count=1, benchmark=as_h100)
    assert honest.status_code == 200, honest.text


@pytest.mark.parametrize("model", sorted(CATALOG))
def test_no_model_is_judged_too_fast_at_its_own_peak_and_every_one_past_the_margin(model: str) -> None:
    peak = CATALOG[model].fp16_tflops
    ceiling = ceiling_tflops(model, simulated=False)
    assert ceiling == pytest.approx(PEAK_MARGIN * peak)
    assert judge(peak, 0.25 * peak, 0.25, ceiling=ceiling) is None
    assert "faster GPU than it declares" in (judge(ceiling * 1.01, 0.25 * peak, 0.25, ceiling=ceiling) or "")


def test_nothing_bounds_a_cpu_node_or_a_simulated_gpu_from_above() -> None:
    """A CPU-only node's figure is its own; a simulated GPU (CPU mode) measures the CPU."""
    assert ceiling_tflops(None, simulated=False) is None
    assert ceiling_tflops("H100", simulated=True) is None


def test_joining_again_keeps_the_nodes_history(net: Network) -> None:
    """A machine that failed a challenge cannot wipe the record by joining again; when it first
    registered is kept too (its age is part of its reputation)."""
    first = net.join("gpu-barn", "flaky-1")
    assert first.status_code == 200, first.text
    registered = net.node("flaky-1").registered_at
    net.store.update_node("flaky-1", challenge_failures=1)
    again = net.join("gpu-barn", "flaky-1")
    assert again.status_code == 200, again.text
    after = net.node("flaky-1")
    assert (after.challenge_failures, after.registered_at) == (1, registered)
    assert after.state_changed_at > registered


# -- the join token binds what the operator approved ----------------------------------------------------
@pytest.mark.parametrize(
    ("claim", "words"),
    [
        ({"country": "US"}, "it claims country US, its join token approves NL"),  # dodging a geofence
        ({"region": "us-east"}, "it claims region us-east, its join token approves eu-west"),
        (
            {"gpu_model": "RTX4090", "gpu_count": 8, "simulated": True},
            "it claims gpu_count 8, its join token approves 1",
        ),
        (
            {"gpu_model": "H100", "gpu_count": 1, "simulated": True},
            "it claims gpu_model H100, its join token approves RTX4090",
        ),
    ],
)
def test_a_machine_claiming_more_than_its_token_approves_is_refused(
    net: Network, claim: dict[str, object], words: str
) -> None:
    token = net.token("gpu-barn", gpu_model="RTX4090", gpu_count=1, simulated=True)
    lied = net.join(
        "gpu-barn", "liar-1", token=token, **{"gpu_model": "RTX4090", "gpu_count": 1, "simulated": True, **claim}
    )
    assert lied.status_code == 403 and words in lied.json()["message"], lied.text
    assert "ray_token" not in lied.text
    [refusal] = [e.payload for e in net.store.audit_entries(kind="node.refused") if e.payload["node"] == "liar-1"]
    assert refusal["approved"]["gpu_model"] == "RTX4090" and refusal["claimed"] != refusal["approved"]
    again = net.join("gpu-barn", "liar-1", token=token, gpu_model="RTX4090", gpu_count=1, simulated=True)
    assert again.status_code == 401 and "already used" in again.json()["message"]  # the token is spent
    with pytest.raises(NotFoundError):
        net.node("liar-1")


def test_a_simulated_gpu_the_token_never_approved_is_refused(net: Network) -> None:
    token = net.token("gpu-barn")  # a CPU machine
    lied = net.join("gpu-barn", "sim-1", token=token, gpu_model="H100", gpu_count=8, simulated=True)
    assert (
        lied.status_code == 403 and "it claims gpu_model H100, its join token approves none" in lied.json()["message"]
    )


def network_head(tmp_path: Path, *, simulated_gpus: bool = False) -> Network:
    """The real API of a network's head (its address not loopback: not CPU mode)."""
    net = Network(tmp_path)
    settings = Settings(home=tmp_path / "home", advertise="198.51.100.7")  # (an address in config only)
    config = dataclasses.replace(default_network(), simulated_gpus=simulated_gpus)
    net.supervisor = StubSupervisor(settings=settings)
    net.http = TestClient(
        make_app(net.store, net.supervisor, config=config), raise_server_exceptions=False, client=LOOPBACK_PEER
    )
    return net


def test_outside_cpu_mode_no_token_approves_a_simulated_gpu_and_no_machine_joins_with_one(tmp_path: Path) -> None:
    net = network_head(tmp_path)
    r = net.http.post(
        "/v1/admin/tokens",
        json={"provider": "gpu-barn", "region": "eu-west", "country": "NL", "gpu_model": "H100", "simulated": True},
        headers=net.op,
    )
    assert r.status_code == 403 and "simulated GPUs join only in CPU mode" in r.json()["message"], r.text
    # A token approving one anyway (issued while the rules allowed it): the join is refused as well.
    approved = ApprovedMachine(region="eu-west", country="NL", gpu_model="H100", gpu_count=1, simulated=True)
    token = net.store.issue_join_token("gpu-barn", ttl_s=60, approved=approved)
    lied = net.join("gpu-barn", "sim-h100", token=token, gpu_model="H100", gpu_count=1, simulated=True)
    assert lied.status_code == 403 and "simulated GPUs join only in CPU mode" in lied.json()["message"], lied.text


def test_a_test_network_whose_rules_allow_simulated_gpus_takes_them(tmp_path: Path) -> None:
    net = network_head(tmp_path, simulated_gpus=True)
    joined = net.join("gpu-barn", "sim-4090", gpu_model="RTX4090", gpu_count=1, simulated=True)
    assert joined.status_code == 200, joined.text
