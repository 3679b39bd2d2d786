"""A real S3-compatible server for tests: moto in server mode on a free loopback port.

Loopback, so host-networked training containers reach it at the same URL as the test does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def aws_env(endpoint: str) -> dict[str, str]:
    """The AWS variables a container (or this process) needs to reach ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def new_bucket(endpoint: str, prefix: str = "runs") -> str:
    """Create a fresh, uniquely named bucket on the server; returns its name."""
    import boto3

    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    env = aws_env(endpoint)
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)
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


#: Actions moto answers before it starts checking credentials: the three that make its admin.
_BOOTSTRAP_ACTIONS = 3


@contextmanager
def moto_iam_server(ip_address: str = "127.0.0.1") -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server that checks credentials and IAM policies, as a real store does (moto only
    does so from the start of its process: ``INITIAL_NO_AUTH_ACTION_COUNT``). Its first actions
    make an admin user; yields the endpoint and that admin's credential. Every later request is
    authenticated, and object access is checked against the caller's policy."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time

    import boto3

    with socket.socket() as probe:
        probe.bind((ip_address, 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_BOOTSTRAP_ACTIONS)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", ip_address, "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://{ip_address}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((ip_address, port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {endpoint} did not start") from None
                time.sleep(0.1)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="store-admin")
        iam.put_user_policy(
            UserName="store-admin",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="store-admin")["AccessKey"]
        yield endpoint, {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    finally:
        proc.kill()
        proc.wait(timeout=10)
