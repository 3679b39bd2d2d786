"""An agent's refusals are audited once each, across control-plane restarts: the checker resumes
from the audit log itself (each entry names the agent process and its refusal's sequence), against
a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from runner.core.network import default_network
from runner.store import Store
from runner.supervisor.checker import Checker


def refusal(seq: int) -> dict[str, object]:
    return {"seq": seq, "reason": "not signed by the control plane", "at": 1000.0 + seq}


def heartbeat(checker: Checker, started_at: float, *seqs: int) -> None:
    """What a heartbeat hands the checker from a node's agent (its ``info``)."""
    checker._audit_refusals("barn-1", {"started_at": started_at, "refusals": [refusal(s) for s in seqs]})


def audited(store: Store) -> list[tuple[float, int]]:
    return [(e.payload["agent_started_at"], e.payload["seq"]) for e in store.audit_entries(kind="agent.refused")]


def test_a_restarted_control_plane_audits_no_refusal_twice_and_misses_none(db_url: str) -> None:
    store = Store(db_url)
    first = Checker(store, default_network(), cluster=None)  # type: ignore[arg-type]  # refusals need no cluster
    heartbeat(first, 7.0, 1, 2)
    heartbeat(first, 7.0, 1, 2)  # the agent keeps its refusals: the next heartbeat brings them again
    assert audited(store) == [(7.0, 1), (7.0, 2)]

    restarted = Checker(store, default_network(), cluster=None)  # type: ignore[arg-type]
    heartbeat(restarted, 7.0, 1, 2, 3)  # the same agent, one refusal more since
    assert audited(store) == [(7.0, 1), (7.0, 2), (7.0, 3)]

    heartbeat(restarted, 9.0, 1)  # the agent restarted: its count starts afresh, and is audited
    assert audited(store) == [(7.0, 1), (7.0, 2), (7.0, 3), (9.0, 1)]
    assert store.verify_audit().ok
