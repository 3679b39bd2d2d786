"""Checkpoints to S3: the trainer writes to, prunes in and resumes from a real S3-compatible
server (moto in server mode on a loopback port), and a server loads the model from it."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from tests.support.s3 import aws_env, moto_server, new_bucket
from tests.workloads.test_training import TINY, TrainProc
from workloads.training.serve import generate, load_for_inference


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """The env a container gets for S3, with a fresh bucket on a moto server."""
    with moto_server() as endpoint:
        yield {**aws_env(endpoint), "BUCKET": new_bucket(endpoint)}


def test_checkpoints_go_to_s3_and_a_restart_resumes_from_there(
    s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    uri = f"s3://{s3['BUCKET']}/runs/w-s3"
    env = {k: v for k, v in s3.items() if k != "BUCKET"}
    first = TrainProc(
        [*TINY, "--steps", "1000", "--log-every", "1", "--keep", "2"],
        RUNNER_CHECKPOINT_URI=uri,
        RUNNER_CHECKPOINT_EVERY="10",
        **env,
    )
    try:
        first.wait_report("checkpoint", lambda c: c["step"] >= 30)
        first.signal(signal.SIGTERM)
        assert first.finish() == 143, first.output()
    finally:
        first.kill()
    saved = first.reports("checkpoint")[-1]
    assert saved["uri"] == f"{uri}/step-{saved['step']:08d}"

    client = boto3.client(
        "s3",
        endpoint_url=s3["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3["BUCKET"], Prefix="runs/w-s3/")["Contents"])
    steps = sorted({k.split("/")[2] for k in keys if k.split("/")[2].startswith("step-")})
    assert len(steps) == 2 and steps[-1] == f"step-{saved['step']:08d}", keys  # --keep 2 pruned the rest
    assert f"runs/w-s3/{steps[-1]}/manifest.json" in keys and "runs/w-s3/latest.json" in keys
    pointer = json.loads(client.get_object(Bucket=s3["BUCKET"], Key="runs/w-s3/latest.json")["Body"].read())
    assert pointer["uri"] == saved["uri"]

    second = TrainProc([*TINY, "--steps", str(saved["step"] + 5)], RUNNER_CHECKPOINT_URI=uri, **env)
    assert second.finish(timeout_s=120) == 0, second.output()
    assert second.reports("resume")[0] == {
        "runner": "resume",
        "step": saved["step"],
        "total_steps": saved["step"] + 5,
        "uri": saved["uri"],
    }

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = load_for_inference(uri)
    assert model.step == saved["step"] + 5
    assert isinstance(generate(model, "def ", max_tokens=8, temperature=0), str)


def test_a_missing_bucket_fails_with_a_clear_line(s3: dict[str, str]) -> None:
    env = {k: v for k, v in s3.items() if k != "BUCKET"}
    run = TrainProc([*TINY, "--steps", "3"], RUNNER_CHECKPOINT_URI="s3://no-such-bucket-here/w-1", **env)
    assert run.finish(timeout_s=120) == 1
    expected = "training: error: bucket 'no-such-bucket-here' of s3://no-such-bucket-here/w-1 does not exist"
    assert expected in run.output()
