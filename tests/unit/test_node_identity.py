"""A node's identity is its name, held by one provider: attacks on it over the real join route.

The rules (``runner/onboarding.py``, ``Store.register_node``): a join token is scoped to one
provider and spent whether or not the join succeeds; a name a live Ray node uses is refused; a name
registered by another provider is refused (409), whatever that node's state; the same provider's
machine may register again (a restart), but a suspended node cannot rejoin its way out of the
suspension: only the operator's ``activate`` (after review) brings it back, and then it may join.

Served by the real API (``create_app``) over a real SQLite store; Ray's view of live nodes is a
stand-in (``tests/support/inprocess_api.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runner.core.agent_wire import NodeKeys
from runner.core.policy import KYC, NodeState
from runner.store import Store
from tests.support.inprocess_api import LOOPBACK_PEER, StubSupervisor, machine_csr, make_app

BENCH = {"tflops": 0.05, "device": "cpu", "dtype": "float32", "bandwidth_gbs": 1.0, "seconds": 0.1}


class Network:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
        self.supervisor = StubSupervisor()
        self.http = TestClient(
            make_app(self.store, self.supervisor), raise_server_exceptions=False, client=LOOPBACK_PEER
        )
        #: Each machine's public keys, made once (as ``runner node join`` keeps its key file).
        self.keys: dict[str, dict[str, str]] = {}
        self.op = {"Authorization": f"Bearer {self.store.create_operator_key()}"}
        for provider, country in (("gpu-barn", "NL"), ("squatter", "DE")):
            self.store.add_provider(provider, country=country, kyc=KYC.VERIFIED)

    def token(self, provider: str, **approved: Any) -> str:
        """A join token for a machine of ``provider``, approving ``approved`` (by default what
        ``join`` claims for a CPU machine)."""
        facts = {"region": "eu-west", "country": "NL", **approved}
        r = self.http.post("/v1/admin/tokens", json={"provider": provider, **facts}, headers=self.op)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def join(self, provider: str, name: str, *, token: str | None = None, **extra: Any) -> Any:
        """Join as ``name``, claiming ``extra``; without ``token``, one approving exactly that claim."""
        if token is None:
            claim = {k: extra[k] for k in ("region", "country", "gpu_model", "gpu_count", "simulated") if k in extra}
            token = self.token(provider, **claim)
        body = {
            "token": token,
            "provider": provider,
            "name": name,
            "region": "eu-west",
            "country": "NL",
            "cpus": 2,
            "memory_mb": 2048,
            "benchmark": BENCH,
            "node_keys": self.keys.setdefault(name, NodeKeys.generate().public().to_dict()),
            "tls_csr": machine_csr(),
            **extra,
        }
        return self.http.post("/v1/nodes/join", json=body)

    def node(self, name: str) -> Any:
        return self.store.get_node(name)


@pytest.fixture()
def net(tmp_path: Path) -> Network:
    return Network(tmp_path)


def registrations(net: Network, name: str) -> list[dict[str, Any]]:
    return [e.payload for e in net.store.audit_entries(kind="node.register") if e.payload["node"] == name]


def test_another_provider_cannot_take_over_a_node_name(net: Network) -> None:
    first = net.join("gpu-barn", "gpu-1", gpu_model="RTX4090", gpu_count=1, simulated=True)
    assert first.status_code == 200, first.text
    assert first.json()["labels"]["provider"] == "gpu-barn"
    before = net.node("gpu-1")
    # Not in Ray right now (a machine restarting): the registry holds the name for gpu-barn.
    spent = net.token("squatter", gpu_model="H100", gpu_count=8, simulated=True)  # all it claims, approved
    taken = net.join("squatter", "gpu-1", token=spent, gpu_model="H100", gpu_count=8, simulated=True)
    assert taken.status_code == 409 and taken.json()["error"] == "ConflictError", taken.text
    assert "taken by another provider" in taken.json()["message"]
    assert "ray_token" not in taken.text  # no grant: the squatter never learns how to join Ray
    # In Ray right now: refused as well.
    net.supervisor.cluster.live.add("gpu-1")
    live = net.join("squatter", "gpu-1")
    assert live.status_code == 409 and "in the cluster now" in live.json()["message"], live.text
    # Claiming to be gpu-barn with the squatter's own token: refused, the token is not gpu-barn's.
    posing = net.join("gpu-barn", "gpu-1", token=net.token("squatter"))
    assert posing.status_code == 401 and "another provider" in posing.json()["message"], posing.text
    # The refused token was spent: it cannot be tried again under another name.
    again = net.join("squatter", "gpu-9", token=spent)
    assert again.status_code == 401 and "already used" in again.json()["message"], again.text
    # gpu-1 is exactly what gpu-barn registered.
    after = net.node("gpu-1")
    assert (after.provider_id, after.state, after.gpu_model, after.gpu_count, after.registered_at) == (
        "gpu-barn",
        "verified",
        "RTX4090",
        1,
        before.registered_at,
    )
    assert [r["provider"] for r in registrations(net, "gpu-1")] == ["gpu-barn"]


def test_an_offboarded_nodes_name_still_belongs_to_its_provider(net: Network) -> None:
    assert net.join("gpu-barn", "gpu-2").status_code == 200
    r = net.http.post("/v1/admin/nodes/gpu-2/offboard", headers=net.op)
    assert r.status_code == 200 and r.json()["state"] == "offboarded", r.text
    taken = net.join("squatter", "gpu-2")
    assert taken.status_code == 409 and "taken by another provider" in taken.json()["message"], taken.text
    assert net.node("gpu-2").provider_id == "gpu-barn" and net.node("gpu-2").state == "offboarded"
    back = net.join("gpu-barn", "gpu-2")  # its own provider comes back with a new token
    assert back.status_code == 200 and back.json()["state"] == "verified", back.text


def test_a_suspended_node_cannot_rejoin_its_way_out_until_the_operator_activates_it(net: Network) -> None:
    assert net.join("gpu-barn", "gpu-3").status_code == 200
    net.store.move_node("gpu-3", NodeState.ACTIVE, "in Ray, agent up")  # as the supervisor does
    # As the checker suspends a node that failed its benchmark challenge:
    net.store.move_node(
        "gpu-3", NodeState.SUSPENDED, "failed benchmark challenge: too slow", by="checker", challenge_failures=2
    )
    for _ in range(2):  # the provider restarts the machine and joins again, with fresh tokens
        r = net.join("gpu-barn", "gpu-3", benchmark={**BENCH, "tflops": 400.0})
        assert r.status_code == 409 and r.json()["error"] == "ConflictError", r.text
        assert "is suspended" in r.json()["message"] and "runner node activate gpu-3" in r.json()["message"]
        node = net.node("gpu-3")
        assert (node.state, node.challenge_failures, node.verified_tflops) == ("suspended", 2, 0.05)
        assert node.message == "failed benchmark challenge: too slow"
    assert len(registrations(net, "gpu-3")) == 1
    # The tenant-less, operator-less caller cannot activate it; the operator can.
    assert net.http.post("/v1/admin/nodes/gpu-3/activate").status_code == 401
    tenant = {"Authorization": f"Bearer {net.store.create_api_key('acme')}"}
    assert net.http.post("/v1/admin/nodes/gpu-3/activate", headers=tenant).status_code == 401
    assert net.node("gpu-3").state == "suspended"
    r = net.http.post("/v1/admin/nodes/gpu-3/activate", headers=net.op)
    assert r.status_code == 200 and r.json()["state"] == "active", r.text
    assert net.node("gpu-3").challenge_failures == 0
    # Reviewed: now its machine may join again.
    r = net.join("gpu-barn", "gpu-3")
    assert r.status_code == 200 and r.json()["state"] == "verified", r.text
    moves = [
        (e.payload["from"], e.payload["to"], e.payload["by"])
        for e in net.store.audit_entries(kind="node.state")
        if e.payload["node"] == "gpu-3"
    ]
    assert ("suspended", "active", "operator") in moves
    assert net.store.verify_audit().ok


def test_a_machine_with_other_keys_cannot_rejoin_as_a_registered_node(net: Network) -> None:
    """The attack: a provider's second machine (or one that stole the name) re-joins as a node
    that is registered with keys, bringing its own. Refused: the keys made at the first join are
    the node's identity, and its agent's answers are checked against them. After the operator
    offboards the node, a reinstalled machine may register afresh."""
    assert net.join("gpu-barn", "gpu-9").status_code == 200
    first = net.node("gpu-9").node_keys
    net.keys["gpu-9"] = NodeKeys.generate().public().to_dict()
    r = net.join("gpu-barn", "gpu-9")
    assert r.status_code == 409 and "other keys" in r.json()["message"], r.text
    assert net.node("gpu-9").node_keys == first
    r = net.http.post("/v1/admin/nodes/gpu-9/offboard", headers=net.op)
    assert r.status_code == 200, r.text
    r = net.join("gpu-barn", "gpu-9")
    assert r.status_code == 200, r.text
    assert net.node("gpu-9").node_keys == net.keys["gpu-9"] != first
