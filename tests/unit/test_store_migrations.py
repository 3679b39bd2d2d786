"""Schema migrations on a real SQLite file and a real PostgreSQL server: a new database and one an
older runner made with ``create_all`` both reach head with their rows, the result is exactly what
the models define, processes opening one database at once do not trip over each other, and a
database from a newer runner is refused by name."""

from __future__ import annotations

import multiprocessing
import tomllib
import traceback
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Session

from runner.store import Store
from runner.store.migrations import FIRST_REVISION, MIGRATIONS_DIR, alembic_config, script_directory
from runner.store.migrations.__main__ import next_revision_id
from runner.store.models import Base
from runner.store.schema import DatabaseVersionError, upgrade_to_head
from tests.support import legacy_models as legacy
from tests.support.databases import empty_database

ROOT = Path(__file__).resolve().parents[2]
HEAD = "0012_tenant_secrets"
SPEC = {"name": "t", "kind": "batch", "image": "img", "command": ["true"]}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, emptied of ``alembic_version`` too (and again afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runner.db'}"
        return
    pg: str = request.getfixturevalue("postgres_url")
    empty_database(pg)
    yield pg
    empty_database(pg)


def schema_differences(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database what the models define."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata))
    finally:
        engine.dispose()


def revision_of(url: str) -> tuple[str, ...]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()


def add_old_rows(url: str, **replica: Any) -> None:
    """A tenant, a workload with an event and a log line, and one replica, as an older runner wrote them."""
    engine = create_engine(url)
    with Session(engine) as s, s.begin():
        s.add(legacy.Tenant(id="acme", country="DE"))
        s.add(
            legacy.Workload(id="w1", tenant_id="acme", name="t", kind="batch", spec=SPEC, state="RUNNING", attempts=1)
        )
        s.flush()
        s.add(legacy.Event(workload_id="w1", state="RUNNING", message="started"))
        s.add(legacy.LogLine(workload_id="w1", replica_key="w1-0-1", seq=0, line="hello"))
        s.add(
            legacy.Replica(
                key="w1-0-1",
                workload_id="w1",
                index=0,
                attempt=1,
                node="n1",
                state="RUNNING",
                metered_s=42,
                ports={"8000/tcp": "127.0.0.1:49153"},
            )
        )
    if replica:
        with engine.begin() as conn:
            sets = ", ".join(f"{name} = :{name}" for name in replica)
            conn.execute(text(f"UPDATE replicas SET {sets} WHERE key = 'w1-0-1'"), replica)
    engine.dispose()


def test_the_revisions_are_one_line_named_by_their_ids() -> None:
    script = script_directory()
    assert script.get_heads() == [HEAD]
    assert [rev.revision for rev in script.walk_revisions()] == [
        HEAD,
        "0011_api_key_revocation",
        "0010_allowed_endpoints",
        "0009_budget_reservations",
        "0008_image_pins",
        "0007_node_keys",
        "0006_services_never_retrying",
        "0005_join_token_approved",
        "0004_replica_start_failure",
        "0003_event_kinds_and_stop_kinds",
        "0002_replica_pull_bytes",
        FIRST_REVISION,
    ]
    for rev in script.walk_revisions():
        assert len(rev.revision) <= 32 and Path(rev.path).stem == rev.revision  # alembic_version is VARCHAR(32)
    assert next_revision_id("Add nodes' labels!") == "0013_add_nodes_labels"


def test_a_new_database_migrates_to_exactly_what_the_models_define(url: str) -> None:
    store = Store(url)
    store.engine.dispose()
    assert revision_of(url) == (HEAD,)
    assert schema_differences(url) == []


def test_a_database_made_before_migrations_is_upgraded_with_its_rows(url: str) -> None:
    legacy.make_legacy_database(url)
    add_old_rows(url)
    assert revision_of(url) == ()
    store = Store(url)
    assert revision_of(url) == (HEAD,)
    assert schema_differences(url) == []  # create_all's old tables plus 0002 are what the models define
    w = store.get_workload("w1", tenant_id="acme")
    assert (w.spec, w.state, w.attempts) == (SPEC, "RUNNING", 1)
    assert [e.message for e in store.events("w1")] == ["started"]
    assert [line.line for line in store.logs_after("w1")] == ["hello"]
    replica = store.get_replica("w1-0-1")
    assert (replica.metered_s, replica.ports) == (42, {"8000/tcp": "127.0.0.1:49153"})
    assert (replica.pull_done_bytes, replica.pull_total_bytes) == (None, None)
    store.update_replica("w1-0-1", state="PULLING", pull_done_bytes=5, pull_total_bytes=10)
    assert (store.get_replica("w1-0-1").pull_done_bytes, store.get_replica("w1-0-1").pull_total_bytes) == (5, 10)
    new, _ = store.create_workload(tenant_id="acme", spec=SPEC)  # and it takes new rows as ever
    assert {x.id for x in store.list_workloads(tenant_id="acme")} == {"w1", new.id}
    store.engine.dispose()
    Store(url).engine.dispose()  # opening it again finds it at head: nothing to do, nothing fails
    assert revision_of(url) == (HEAD,)


@pytest.mark.parametrize(
    ("exit_code", "error", "start_failure"),
    [
        (
            125,
            "host port 29600/tcp is in use on node n1; the runner places the gang again with another port",
            "port_in_use",
        ),
        (125, "image runner/smoke:abc is not on node n1", ""),
        (1, "host port words in a workload's own exit", ""),
    ],
)
def test_a_port_clash_recorded_in_words_before_0004_becomes_data(
    url: str, exit_code: int, error: str, start_failure: str
) -> None:
    """The one place the old text is read: a replica whose start failed on a taken host port (exit
    125, the agent's words) is a PORT_IN_USE start failure after the upgrade; nothing else is."""
    legacy.make_legacy_database(url)
    add_old_rows(url, exit_code=exit_code, error=error)
    store = Store(url)
    assert store.get_replica("w1-0-1").start_failure == start_failure
    store.engine.dispose()


def test_a_database_the_last_runner_added_pull_columns_to_is_stamped_past_them(url: str) -> None:
    """Runner e478248 added the pull columns at startup, without a revision: 0002 must not run again."""
    legacy.make_legacy_database(url, with_pull_columns=True)
    add_old_rows(url, pull_done_bytes=7, pull_total_bytes=9)
    store = Store(url)
    assert revision_of(url) == (HEAD,)
    assert schema_differences(url) == []
    assert (store.get_replica("w1-0-1").pull_done_bytes, store.get_replica("w1-0-1").pull_total_bytes) == (7, 9)
    store.engine.dispose()


def _open_store(url: str, barrier: Any, results: Any) -> None:
    """One process of several opening the same database at the same moment."""
    try:
        barrier.wait(timeout=120)
        Store(url).engine.dispose()
        results.put("ok")
    except BaseException:  # noqa: BLE001 - reported to the test, which shows where it failed
        results.put(traceback.format_exc())


@pytest.mark.parametrize("made_by", ["nothing", "an older runner"])
def test_processes_opening_one_database_at_once_all_succeed(url: str, made_by: str) -> None:
    if made_by == "an older runner":
        legacy.make_legacy_database(url)
        add_old_rows(url)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(url, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["ok"] * 4
    assert revision_of(url) == (HEAD,)
    assert schema_differences(url) == []
    store = Store(url)
    if made_by == "an older runner":
        assert store.get_replica("w1-0-1").metered_s == 42
    assert store.verify_audit().ok  # the chain's head row was added once
    store.engine.dispose()


def test_a_database_a_newer_runner_upgraded_is_refused_by_its_revision(url: str) -> None:
    Store(url).engine.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_a_newer_runner'"))
    engine.dispose()
    with pytest.raises(DatabaseVersionError, match="'0099_from_a_newer_runner'") as refused:
        Store(url)
    assert "newer runner" in str(refused.value) and "To fix:" in str(refused.value)
    assert f"its newest is '{HEAD}'" in str(refused.value)
    assert revision_of(url) == ("0099_from_a_newer_runner",)  # left as it was


def test_a_database_with_only_some_old_tables_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    engine = create_engine(url)
    legacy.Base.metadata.create_all(engine, tables=[legacy.Tenant.__table__, legacy.Provider.__table__])
    engine.dispose()
    with pytest.raises(DatabaseVersionError, match="api_keys.*no schema revision"):
        Store(url)


def test_every_revision_downgrades_to_nothing_and_back(url: str) -> None:
    engine = create_engine(url)
    upgrade_to_head(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_to_head(engine)
    engine.dispose()
    assert revision_of(url) == (HEAD,) and schema_differences(url) == []


def test_an_installed_package_carries_the_migrations() -> None:
    """Every file of the Alembic environment is a module of a package or named in package-data."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    runner_dir = ROOT / "runner"
    files = [p for p in MIGRATIONS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert {p.name for p in files} >= {"env.py", "script.py.mako", f"{FIRST_REVISION}.py", f"{HEAD}.py"}
    for path in files:
        in_package = path.suffix == ".py" and (path.parent / "__init__.py").exists()
        shipped = any(fnmatch(str(path.relative_to(runner_dir)), glob) for glob in package_data["runner"])
        assert in_package or shipped, f"{path} would be missing from an installed runner"
