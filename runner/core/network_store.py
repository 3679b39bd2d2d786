"""The network's own artifact store: where a workload's checkpoints go when its spec names none,
and what each workload may touch there. Pure: URIs and policies in, URIs and policies out.

Across providers' machines a ``file://`` folder is a different folder on each, so a network whose
hosts are separate needs a store every replica reaches: an S3-compatible one, configured once at
the head (`runner up --advertise ADDR --store s3://BUCKET --store-endpoint URL`). A workload's
artifacts live under ``tenants/<tenant>/<workload>/`` of it.

Every replica runs on a machine of a provider who may be hostile and can read its container's
environment, so no replica ever gets the store's own credential, nor its tenant's: each workload
gets a credential of its own (``runner/store_credentials.py``) whose policy allows its own prefix
(read and write) and the prefixes it serves a model from (read only), nothing else; it is revoked
when the workload ends. A stolen credential then opens only what its thief's machine already ran.
A tenant names only its own prefixes: a spec that points into another tenant's is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Object-level actions a workload's credential may take on its own prefix (read and write).
READ_WRITE = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
READ_ONLY = ("s3:GetObject",)


@dataclass(frozen=True)
class NetworkStore:
    """``s3://bucket[/prefix]`` and the endpoint replicas reach it at."""

    uri: str
    endpoint: str
    region: str = "us-east-1"

    @property
    def bucket(self) -> str:
        return urlsplit(self.uri).netloc

    @property
    def root(self) -> str:
        """The key prefix everything of this network lives under ('' or 'p/')."""
        path = urlsplit(self.uri).path.strip("/")
        return f"{path}/" if path else ""

    def tenant_uri(self, tenant_id: str) -> str:
        return f"s3://{self.bucket}/{self.root}tenants/{tenant_id}/"

    def workload_uri(self, tenant_id: str, workload_id: str) -> str:
        return f"{self.tenant_uri(tenant_id)}{workload_id}/"

    def holds(self, uri: str) -> bool:
        """Whether ``uri`` is in this store's bucket (under its root)."""
        parts = urlsplit(uri)
        return parts.scheme == "s3" and parts.netloc == self.bucket and parts.path.lstrip("/").startswith(self.root)

    def key_prefix(self, uri: str) -> str:
        """The key prefix of a URI in this store, ending with '/'."""
        key = urlsplit(uri).path.lstrip("/")
        return key if key.endswith("/") else key + "/"


def parse_store(uri: str, endpoint: str) -> NetworkStore:
    """A store from `runner up`'s flags; ValueError naming the flag when they do not make one."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"--store: expected s3://BUCKET or s3://BUCKET/PREFIX, got {uri!r}")
    ep = urlsplit(endpoint)
    if ep.scheme not in ("http", "https") or not ep.netloc:
        raise ValueError(
            f"--store-endpoint: expected http(s)://HOST:PORT, as providers' machines reach it, got {endpoint!r}"
        )
    return NetworkStore(uri=f"s3://{parts.netloc}/{parts.path.strip('/')}".rstrip("/"), endpoint=endpoint.rstrip("/"))


def foreign_prefix_problem(store: NetworkStore, tenant_id: str, uri: str, field: str) -> str | None:
    """Why a spec's URI may not be used by this tenant, or None: inside the network's store, a
    tenant names only its own prefix (it would otherwise read or overwrite another's)."""
    if not store.holds(uri):
        return None
    if store.key_prefix(uri).startswith(store.key_prefix(store.tenant_uri(tenant_id))):
        return None
    return (
        f"{field} {uri} is in the network's store outside this tenant's prefix {store.tenant_uri(tenant_id)}. "
        "To fix: leave checkpoint.uri out (the runner picks one) or name a URI under your own prefix"
    )


def workload_policy(store: NetworkStore, write: str, read: tuple[str, ...] = ()) -> dict[str, Any]:
    """The IAM policy of one workload's credential: ``write`` (a URI of this store) read and
    write, each of ``read`` read only, and listing of those prefixes only."""

    def objects(uri: str) -> str:
        return f"arn:aws:s3:::{store.bucket}/{store.key_prefix(uri)}*"

    prefixes = [store.key_prefix(u) + "*" for u in (write, *read)]
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": list(READ_WRITE), "Resource": [objects(write)]},
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{store.bucket}"],
            "Condition": {"StringLike": {"s3:prefix": prefixes}},
        },
    ]
    if read:
        statements.append({"Effect": "Allow", "Action": list(READ_ONLY), "Resource": [objects(u) for u in read]})
    return {"Version": "2012-10-17", "Statement": statements}
