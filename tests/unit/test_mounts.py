"""Bind mounts: a node prepares them only inside its artifact store, never through a symlink
there; they land under runner's own mount root, and URIs cross that line both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.core.errors import UserError
from runner.core.mounts import CHECKPOINTS, MODEL, MOUNT_ROOT, Mount, file_mount, to_container, to_host
from runner.runtime.base import prepare_mounts


def test_a_missing_source_is_created(tmp_path: Path) -> None:
    source = tmp_path / "artifacts" / "local" / "w-1"
    prepare_mounts([Mount(source=str(source), target=str(source))], tmp_path / "artifacts")
    assert source.is_dir()


def test_a_source_outside_the_artifact_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="outside this node's artifact store"):
        prepare_mounts([Mount(source="/etc", target="/etc", read_only=True)], tmp_path)
    with pytest.raises(UserError, match="outside this node's artifact store"):
        prepare_mounts([Mount(source=f"{tmp_path}/../etc", target="/x")], tmp_path)


def test_a_source_through_a_symlink_in_the_store_is_refused(tmp_path: Path) -> None:
    """A container could leave a symlink in its own folder; a later mount must not follow it."""
    store = tmp_path / "artifacts"
    (store / "local").mkdir(parents=True)
    (store / "other").mkdir()
    (store / "local" / "evil").symlink_to("/etc")
    (store / "local" / "peek").symlink_to(store / "other")
    for source in (store / "local" / "evil", store / "local" / "evil" / "ssl", store / "local" / "peek"):
        with pytest.raises(UserError, match="symlink"):
            prepare_mounts([Mount(source=str(source), target="/ckpt", read_only=True)], store)


def test_a_symlink_above_the_store_is_fine(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "disk")  # e.g. a home on another disk
    store = tmp_path / "home" / "artifacts"
    prepare_mounts([Mount(source=str(store / "local" / "w-1"), target="/ckpt")], store)
    assert (tmp_path / "disk" / "artifacts" / "local" / "w-1").is_dir()


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="absolute"):
        prepare_mounts([Mount(source="relative/dir", target="/ckpt")], tmp_path)


# -- where a folder lands inside, and URIs across that line (runner.core.mounts) ----------------------
def test_a_file_uri_lands_under_runners_own_mount_root_whatever_its_host_path() -> None:
    """Never at the host path: an image may hold a folder there that its user cannot enter."""
    for home in ("/root/.runner", "/home/ann/.runner", "/srv/runner"):
        mount = file_mount(f"file://{home}/artifacts/local/w-1/", CHECKPOINTS)
        assert mount == Mount(source=f"{home}/artifacts/local/w-1", target=f"{MOUNT_ROOT}/checkpoints")
    assert file_mount("s3://bucket/runs/w-1/", CHECKPOINTS) is None
    assert file_mount("file:///a/b", MODEL, read_only=True) == Mount("/a/b", f"{MOUNT_ROOT}/model", read_only=True)


def test_the_container_is_told_the_mount_point_and_its_reports_read_back_as_host_uris() -> None:
    mount = Mount(source="/root/.runner/artifacts/local/w-1", target=f"{MOUNT_ROOT}/checkpoints")
    env = to_container(
        {
            "RUNNER_CHECKPOINT_URI": "file:///root/.runner/artifacts/local/w-1/",
            "OTHER": "file:///x",
            "S3": "s3://b/root/.runner/artifacts/local/w-1/",
        },
        [mount],
    )
    assert env == {
        "RUNNER_CHECKPOINT_URI": f"file://{MOUNT_ROOT}/checkpoints/",
        "OTHER": "file:///x",
        "S3": "s3://b/root/.runner/artifacts/local/w-1/",
    }
    report = {
        "result": {"checkpoint": f"file://{MOUNT_ROOT}/checkpoints/step-00000300", "steps": 300},
        "resume": {"uri": f"file://{MOUNT_ROOT}/checkpoints/step-00000100"},
        "list": [f"file://{MOUNT_ROOT}/checkpointsX/y"],
    }
    assert to_host(report, [mount]) == {
        "result": {"checkpoint": "file:///root/.runner/artifacts/local/w-1/step-00000300", "steps": 300},
        "resume": {"uri": "file:///root/.runner/artifacts/local/w-1/step-00000100"},
        "list": [f"file://{MOUNT_ROOT}/checkpointsX/y"],  # another folder that merely shares the prefix
    }


@given(
    st.lists(
        st.text(alphabet="abc-_. %", min_size=1, max_size=6).filter(lambda p: p not in (".", "..")),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.text(alphabet="abc-_.", min_size=1, max_size=6).filter(lambda p: p not in (".", "..")), max_size=3),
)
def test_a_uri_in_the_folder_goes_in_and_comes_back_unchanged(home: list[str], below: list[str]) -> None:
    from urllib.parse import quote

    source = "/" + "/".join(home)
    mount = file_mount("file://" + quote(source), CHECKPOINTS)
    assert mount is not None and mount.source == source
    uri = "file://" + quote("/".join([source, *below]))
    inside = to_container(uri, [mount])
    assert inside.startswith(f"file://{MOUNT_ROOT}/{CHECKPOINTS}")
    assert to_host(inside, [mount]) == uri


def test_a_file_folder_is_refused_where_nodes_do_not_share_a_filesystem() -> None:
    from runner.api.workloads import separate_hosts_problem
    from runner.core.spec import parse_workload

    training = parse_workload({"kind": "training", "name": "t", "image": "runner/training:latest", "workers": 2})
    on_s3 = parse_workload(
        {
            "kind": "training",
            "name": "t",
            "image": "runner/training:latest",
            "workers": 2,
            "checkpoint": {"uri": "s3://bucket/runs"},
        }
    )
    served = parse_workload(
        {
            "kind": "inference",
            "name": "s",
            "image": "runner/inference:latest",
            "ports": [8000],
            "model": "file:///srv/runner/artifacts/local/w-1/step-00000010",
        }
    )
    assert separate_hosts_problem(training, shared_filesystem=True) is None  # CPU mode: one machine
    assert separate_hosts_problem(served, shared_filesystem=True) is None
    assert "default checkpoint folder" in (separate_hosts_problem(training, shared_filesystem=False) or "")
    assert separate_hosts_problem(on_s3, shared_filesystem=False) is None
    assert "providers' machines" in (separate_hosts_problem(served, shared_filesystem=False) or "")
    # A network with its own store puts a checkpoint left out there; a file:// one named is still refused.
    assert separate_hosts_problem(training, shared_filesystem=False, network_store=True) is None
    on_file = parse_workload(
        {
            "kind": "training",
            "name": "t",
            "image": "runner/training:latest",
            "workers": 2,
            "checkpoint": {"uri": "file:///srv/runner/artifacts/local/x"},
        }
    )
    assert "checkpoint.uri file://" in (
        separate_hosts_problem(on_file, shared_filesystem=False, network_store=True) or ""
    )
