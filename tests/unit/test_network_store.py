"""The network store's pure rules (runner/core/network_store.py): where artifacts go, which URIs a
tenant may name, and what a workload's credential allows."""

from __future__ import annotations

import pytest

from runner.core.network_store import NetworkStore, foreign_prefix_problem, parse_store, workload_policy

STORE = NetworkStore(uri="s3://net/runner", endpoint="http://10.0.0.1:9000")


def test_a_workloads_artifacts_live_under_its_tenants_prefix() -> None:
    assert STORE.workload_uri("acme", "w-1") == "s3://net/runner/tenants/acme/w-1/"
    assert (
        NetworkStore(uri="s3://net", endpoint="http://x:1").workload_uri("acme", "w-1") == "s3://net/tenants/acme/w-1/"
    )


def test_the_store_holds_only_its_bucket_under_its_root() -> None:
    assert STORE.holds("s3://net/runner/tenants/acme/w-1/step-00000010")
    assert not STORE.holds("s3://net/elsewhere/x") and not STORE.holds("s3://other/runner/x")
    assert not STORE.holds("file:///root/.runner/artifacts/acme")


def test_a_tenant_names_only_its_own_prefix_of_the_store() -> None:
    assert foreign_prefix_problem(STORE, "acme", "s3://net/runner/tenants/acme/w-1/step-10", "model") is None
    assert foreign_prefix_problem(STORE, "acme", "s3://own-bucket/x", "checkpoint.uri") is None  # not the store's
    problem = foreign_prefix_problem(STORE, "acme", "s3://net/runner/tenants/acme-evil/w-9/", "model")
    assert problem and problem.startswith("model s3://net/runner/tenants/acme-evil/w-9/ is in the network's store")
    assert foreign_prefix_problem(STORE, "acme", "s3://net/runner/tenants/bob/w-2/", "checkpoint.uri")
    assert foreign_prefix_problem(STORE, "acme", "s3://net/runner/", "checkpoint.uri")  # the whole network


def test_a_workloads_policy_allows_its_prefix_and_what_it_serves_and_nothing_else() -> None:
    policy = workload_policy(STORE, "s3://net/runner/tenants/acme/w-2/", ("s3://net/runner/tenants/acme/w-1/step-5",))
    statements = policy["Statement"]
    assert statements[0]["Resource"] == ["arn:aws:s3:::net/runner/tenants/acme/w-2/*"]
    assert "s3:PutObject" in statements[0]["Action"]
    assert statements[1]["Condition"]["StringLike"]["s3:prefix"] == [
        "runner/tenants/acme/w-2/*",
        "runner/tenants/acme/w-1/step-5/*",
    ]
    assert statements[2] == {
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::net/runner/tenants/acme/w-1/step-5/*"],
    }
    assert all(s["Effect"] == "Allow" and "*" not in s["Action"] for s in statements)


@pytest.mark.parametrize(
    "uri, endpoint, flag",
    [("net", "http://x:1", "--store"), ("s3://", "http://x:1", "--store"), ("s3://net", "x:1", "--store-endpoint")],
)
def test_bad_store_flags_name_the_flag(uri: str, endpoint: str, flag: str) -> None:
    with pytest.raises(ValueError, match=f"^{flag}:"):
        parse_store(uri, endpoint)
    assert parse_store("s3://net/p/", "http://x:1/").uri == "s3://net/p"
