"""The artifact store on a real disk and on a real S3-compatible server (moto in server mode on
loopback): put/get/list/delete, atomic publish with checksums, clear errors naming the URI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3 import aws_env, moto_server, new_bucket
from workloads.common.artifacts import (
    MANIFEST,
    ArtifactCorruptError,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactURIError,
    S3Store,
    fetch_verified,
    open_store,
    publish,
    read_manifest,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The AWS variables a container gets, pointing at the moto server; returns a fresh bucket."""
    for key, value in aws_env(s3_server).items():
        monkeypatch.setenv(key, value)
    return new_bucket(s3_server, prefix="ckpt")


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "file":
        return open_store(f"file://{tmp_path}/runs/w-1")
    bucket = request.getfixturevalue("s3_env")
    return open_store(f"s3://{bucket}/runs/w-1")


def test_put_get_list_delete(store: ArtifactStore) -> None:
    uri = store.put_bytes("step-1/a.bin", b"alpha")
    assert uri == f"{store.uri}/step-1/a.bin"
    store.put_bytes("step-1/b.bin", b"bravo!")
    store.put_bytes("notes.txt", b"n")
    assert store.get_bytes("step-1/a.bin") == b"alpha"
    assert [(i.key, i.size) for i in store.list()] == [("notes.txt", 1), ("step-1/a.bin", 5), ("step-1/b.bin", 6)]
    assert [i.key for i in store.list("step-1")] == ["step-1/a.bin", "step-1/b.bin"]
    assert all(i.uri == f"{store.uri}/{i.key}" and i.modified > 0 for i in store.list())
    assert store.exists("notes.txt") and not store.exists("nope.txt")
    store.put_bytes("notes.txt", b"overwritten")
    assert store.get_bytes("notes.txt") == b"overwritten"
    store.delete("notes.txt")
    store.delete("notes.txt")  # a missing key is not an error
    assert not store.exists("notes.txt")
    assert store.delete_prefix("step-1") == 2
    assert store.list() == []


def test_get_file_and_put_file(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    store.put_file("big/src.bin", src)
    dest = store.get_file("big/src.bin", tmp_path / "out" / "copy.bin")
    assert dest.read_bytes() == src.read_bytes()
    assert not [p for p in dest.parent.iterdir() if p.name != "copy.bin"]  # no temp file left


def test_missing_key_names_the_uri(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match=f"no artifact at {store.uri}/missing.bin"):
        store.get_bytes("missing.bin")


def test_list_does_not_leak_into_a_sibling_prefix(store: ArtifactStore) -> None:
    sibling = open_store(store.uri + "0")  # .../w-10 next to .../w-1
    sibling.put_bytes("x.bin", b"x")
    store.put_bytes("y.bin", b"y")
    assert [i.key for i in store.list()] == ["y.bin"]
    assert [i.key for i in sibling.list()] == ["x.bin"]


def test_publish_then_fetch_verified(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"weights" * 1000)
    files = {"model.pt": tmp_path / "w.bin", "state.pt": b"state"}
    manifest = publish(store, "step-00000010", files, meta={"step": 10})
    assert manifest.files["state.pt"] == {"sha256": hashlib.sha256(b"state").hexdigest(), "size": 5}
    doc = json.loads(store.get_bytes(f"step-00000010/{MANIFEST}"))
    assert doc["meta"] == {"step": 10} and set(doc["files"]) == {"model.pt", "state.pt"}
    got, files = fetch_verified(store, "step-00000010")
    assert got.meta == {"step": 10}
    assert files == {"model.pt": b"weights" * 1000, "state.pt": b"state"}
    _, only = fetch_verified(store, "step-00000010", ["state.pt"])
    assert only == {"state.pt": b"state"}


def test_fetch_verified_refuses_flipped_missing_and_unreadable(store: ArtifactStore) -> None:
    publish(store, "c", {"a.bin": b"a" * 100, "b.bin": b"b" * 100})
    store.put_bytes("c/a.bin", b"a" * 99 + b"X")  # same size, one byte flipped
    with pytest.raises(ArtifactCorruptError, match=f"{store.uri}/c/a.bin fails its checksum"):
        fetch_verified(store, "c")
    store.put_bytes("c/a.bin", b"a" * 100)
    fetch_verified(store, "c")  # repaired: verifies again
    store.delete("c/b.bin")
    with pytest.raises(ArtifactCorruptError, match="missing"):
        fetch_verified(store, "c")
    store.put_bytes(f"c/{MANIFEST}", b"{not json")
    with pytest.raises(ArtifactCorruptError, match="unreadable"):
        read_manifest(store, "c")
    with pytest.raises(ArtifactNotFoundError):
        read_manifest(store, "never-published")


def test_uri_and_key_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ArtifactURIError, match="'http://x/y' is not an artifact URI"):
        open_store("http://x/y")
    with pytest.raises(ArtifactURIError, match="absolute path"):
        open_store("file://relative/dir")
    with pytest.raises(ArtifactURIError, match="names a bucket"):
        open_store("s3:///just-a-path")
    store = open_store(f"file://{tmp_path}")
    for key in ("../escape", "/abs", "a/../../b", ""):
        with pytest.raises(ArtifactURIError, match="bad artifact key"):
            store.put_bytes(key, b"x")


def test_s3_missing_bucket_says_so(s3_env: str) -> None:
    store = open_store(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/w")
    assert isinstance(store, S3Store)
    with pytest.raises(ArtifactNotFoundError, match="does not exist at http://127.0.0.1"):
        store.put_bytes("x", b"x")


def test_file_store_unwritable_root_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a dir")
    store = open_store(f"file://{tmp_path}/file/sub")
    with pytest.raises(ArtifactError, match=f"cannot write {store.uri}/x.bin.*writable"):
        store.put_bytes("x.bin", b"x")


WRITER = """
import sys
from workloads.common.artifacts import open_store
store, a, b = open_store(sys.argv[1]), b"A" * 4_000_000, b"B" * 4_000_000
store.put_bytes("blob", a)
print("ready", flush=True)
while True:
    store.put_bytes("blob", b)
    store.put_bytes("blob", a)
"""


def test_file_writes_are_atomic_under_sigkill(tmp_path: Path) -> None:
    """A writer rewrites a 4 MB object in a loop while this test reads it, then is SIGKILLed:
    every read sees all-A or all-B (never a torn mix or a short file), and the leftover temp
    file of the interrupted write is never listed."""
    uri = f"file://{tmp_path}/store"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        store = open_store(uri)
        seen: set[bytes] = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            data = store.get_bytes("blob")
            assert len(data) == 4_000_000 and data.count(data[:1]) == len(data), "torn read"
            seen.add(data[:1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert seen == {b"A", b"B"}, f"the writer made no progress while reading: {seen}"
    assert [i.key for i in store.list()] == ["blob"]
    final = store.get_bytes("blob")
    assert final in (b"A" * 4_000_000, b"B" * 4_000_000)
