"""Each workload's own credential for the network's store, against a store that checks (moto's
server with its IAM checks on). Attacks: a workload's key used on another's artifacts, a key used
after its workload ended, a key made but never handed out."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from runner.core.network_store import NetworkStore
from runner.store_credentials import StoreCredentials, attempt_holder, user_name
from tests.support.s3 import moto_iam_server


@pytest.fixture(scope="module")
def iam_store() -> Iterator[tuple[NetworkStore, dict[str, str]]]:
    with moto_iam_server() as (endpoint, admin):
        store = NetworkStore(uri="s3://net/runner", endpoint=endpoint)
        s3(store, admin).create_bucket(Bucket="net")
        yield store, admin


def s3(store: NetworkStore, key: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key.get("access_key_id") or key["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=key.get("secret_access_key") or key["AWS_SECRET_ACCESS_KEY"],
    )


def refused(call: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def key_of(store: NetworkStore, uri: str) -> str:
    return store.key_prefix(uri).rstrip("/")


def test_a_workloads_key_opens_its_own_prefix_and_no_other(
    iam_store: tuple[NetworkStore, dict[str, str]], tmp_path: Path
) -> None:
    store, admin = iam_store
    creds = StoreCredentials(store, admin, tmp_path / "keys")
    mine, theirs = store.workload_uri("acme", "w-a1"), store.workload_uri("bob", "w-b1")
    env_a = creds.env_for("w-a1", mine)
    env_b = creds.env_for("w-b1", theirs)
    assert env_a["AWS_ACCESS_KEY_ID"] not in (admin["access_key_id"], env_b["AWS_ACCESS_KEY_ID"])
    assert env_a["AWS_ENDPOINT_URL"] == store.endpoint
    a, b = s3(store, env_a), s3(store, env_b)
    a.put_object(Bucket="net", Key=key_of(store, mine) + "/step-1/model.pt", Body=b"weights of acme")
    assert a.get_object(Bucket="net", Key=key_of(store, mine) + "/step-1/model.pt")["Body"].read() == b"weights of acme"

    # Bob's workload (its provider holds its key) reaches for acme's checkpoint: read, overwrite, plant.
    victim = key_of(store, mine) + "/step-1/model.pt"
    assert refused(lambda: b.get_object(Bucket="net", Key=victim)) == "AccessDenied"
    assert refused(lambda: b.put_object(Bucket="net", Key=victim, Body=b"poisoned")) == "AccessDenied"
    assert refused(lambda: b.delete_object(Bucket="net", Key=victim)) == "AccessDenied"
    assert refused(lambda: b.put_object(Bucket="net", Key="runner/tenants/acme/w-a9/x", Body=b"x")) == "AccessDenied"
    assert refused(lambda: b.create_bucket(Bucket="bobs-own")) == "AccessDenied"
    # Nor a workload of the same tenant: each workload has its own prefix.
    sibling = s3(store, creds.env_for("w-a2", store.workload_uri("acme", "w-a2")))
    assert refused(lambda: sibling.get_object(Bucket="net", Key=victim)) == "AccessDenied"
    assert s3(store, admin).get_object(Bucket="net", Key=victim)["Body"].read() == b"weights of acme"  # untouched


def test_a_service_reads_the_model_it_serves_and_cannot_write_it(
    iam_store: tuple[NetworkStore, dict[str, str]], tmp_path: Path
) -> None:
    store, admin = iam_store
    creds = StoreCredentials(store, admin, tmp_path / "keys")
    trained = store.workload_uri("acme", "w-t1") + "step-00000100"
    s3(store, admin).put_object(Bucket="net", Key=key_of(store, trained) + "/model.pt", Body=b"trained")
    svc = s3(store, creds.env_for("w-s1", store.workload_uri("acme", "w-s1"), (trained,)))
    assert svc.get_object(Bucket="net", Key=key_of(store, trained) + "/model.pt")["Body"].read() == b"trained"
    assert (
        refused(lambda: svc.put_object(Bucket="net", Key=key_of(store, trained) + "/model.pt", Body=b"x"))
        == "AccessDenied"
    )


def test_a_key_is_kept_for_the_next_replica_and_dies_with_its_workload(
    iam_store: tuple[NetworkStore, dict[str, str]], tmp_path: Path
) -> None:
    store, admin = iam_store
    uri = store.workload_uri("acme", "w-k1")
    env = StoreCredentials(store, admin, tmp_path / "keys").env_for("w-k1", uri)
    kept = tmp_path / "keys" / "w-k1.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # A restarted control plane hands out the same key (replicas still running hold it).
    again = StoreCredentials(store, admin, tmp_path / "keys")
    assert again.env_for("w-k1", uri) == env
    s3(store, env).put_object(Bucket="net", Key=key_of(store, uri) + "/x", Body=b"x")

    again.revoke("w-k1")
    assert not kept.exists()
    assert (
        refused(lambda: s3(store, env).put_object(Bucket="net", Key=key_of(store, uri) + "/y", Body=b"y"))
        == "InvalidAccessKeyId"
    )
    assert s3(store, admin).get_object(Bucket="net", Key=key_of(store, uri) + "/x")["Body"].read() == b"x"


def test_a_key_made_but_never_written_down_is_deleted_not_reused(
    iam_store: tuple[NetworkStore, dict[str, str]], tmp_path: Path
) -> None:
    store, admin = iam_store
    iam = boto3.client(
        "iam",
        endpoint_url=store.endpoint,
        region_name="us-east-1",
        aws_access_key_id=admin["access_key_id"],
        aws_secret_access_key=admin["secret_access_key"],
    )
    iam.create_user(UserName=user_name("w-c1"))
    stray = iam.create_access_key(UserName=user_name("w-c1"))["AccessKey"]  # a crash right after this
    env = StoreCredentials(store, admin, tmp_path / "keys").env_for("w-c1", store.workload_uri("acme", "w-c1"))
    keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user_name("w-c1"))["AccessKeyMetadata"]]
    assert keys == [env["AWS_ACCESS_KEY_ID"]] and stray["AccessKeyId"] not in keys


def test_keys_of_workloads_that_ended_while_the_control_plane_was_down_are_revoked(
    iam_store: tuple[NetworkStore, dict[str, str]], tmp_path: Path
) -> None:
    store, admin = iam_store
    creds = StoreCredentials(store, admin, tmp_path / "keys")
    ended = creds.env_for("w-e1", store.workload_uri("acme", "w-e1"))
    live = creds.env_for("w-e2", store.workload_uri("acme", "w-e2"))
    assert creds.revoke_ended(lambda wid: wid == "w-e1") == ["w-e1"]
    assert creds.kept() == ["w-e2"]
    assert (
        refused(lambda: s3(store, ended).put_object(Bucket="net", Key="runner/tenants/acme/w-e1/x", Body=b"x"))
        == "InvalidAccessKeyId"
    )
    s3(store, live).put_object(Bucket="net", Key="runner/tenants/acme/w-e2/x", Body=b"x")
    assert json.loads((tmp_path / "keys" / "w-e2.json").read_text())["access_key_id"] == live["AWS_ACCESS_KEY_ID"]


def test_a_gang_placed_again_fences_its_earlier_attempt(
    iam_store: tuple[NetworkStore, dict[str, str]], tmp_path: Path
) -> None:
    """A gang cut off from the head may still reach the store: once the next attempt has its key,
    the old attempt's key writes nothing more (the store itself refuses it)."""
    store, admin = iam_store
    creds = StoreCredentials(store, admin, tmp_path / "keys")
    uri = store.workload_uri("acme", "w-f1")
    first = creds.env_for(attempt_holder("w-f1", 1), uri)
    s3(store, first).put_object(Bucket="net", Key=key_of(store, uri) + "/step-20/manifest.json", Body=b"a1")
    second = creds.env_for(attempt_holder("w-f1", 2), uri)
    assert creds.revoke_earlier_attempts("w-f1", 2) == [attempt_holder("w-f1", 1)]
    assert (
        refused(
            lambda: s3(store, first).put_object(
                Bucket="net", Key=key_of(store, uri) + "/step-40/manifest.json", Body=b"stale"
            )
        )
        == "InvalidAccessKeyId"
    )
    # The new attempt resumes from what the old one wrote, and goes on writing.
    assert (
        s3(store, second).get_object(Bucket="net", Key=key_of(store, uri) + "/step-20/manifest.json")["Body"].read()
        == b"a1"
    )
    s3(store, second).put_object(Bucket="net", Key=key_of(store, uri) + "/step-40/manifest.json", Body=b"a2")
    assert creds.kept("w-f1") == [attempt_holder("w-f1", 2)]
