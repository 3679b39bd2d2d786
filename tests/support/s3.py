"""A real S3-compatible server for tests: moto in server mode on a free loopback port.

Loopback, so host-networked training containers reach it at the same URL as the test does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def aws_env(endpoint: str) -> dict[str, str]:
    """The AWS variables a container (or this process) needs to reach ``endpoint``."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def new_bucket(endpoint: str, prefix: str = "runs") -> str:
    """Create a fresh, uniquely named bucket on the server; returns its name."""
    import boto3

    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    env = aws_env(endpoint)
    boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                 aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)  # fmt: skip
    return bucket


@contextmanager
def moto_server(ip_address: str = "127.0.0.1") -> Iterator[str]:
    """Run a moto S3 server until the block ends; yields its endpoint URL. On the multi-host
    harness it listens on the head's address, where every host reaches it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=ip_address, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
