"""A node's life on a real network: heartbeats, benchmark challenges (passed, and failed by a host
slower than it claimed), a drain and the offboarding it ends in, each on a provider host of the
harness (a namespace with its own engine, joined with `runner node join`).

The evidence is the hosts' own: their Docker engines' events and containers, and the kernel's view
of the processes inside each host's namespace (the node's agent, its CPU time, its Ray processes),
next to what the head's API records.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.hosts import Host
from harness.network import Network
from harness.runner_net import Head, join, runner_cli, running_head
from tests.conftest import free_ports, wait_for
from tests.integration.test_workloads import smoke
from tests.support.hosts import engine_events, host_processes, is_ray, wait_job

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(900)]

#: name -> (provider, region, country): one host per region, so that work a region asks for has
#: only that region's host to go to.
HOSTS = {"host-a": ("barn-a", "eu-west", "DE"), "host-b": ("barn-b", "ap-northeast", "JP")}
HEARTBEAT_S = 5.0  # runner/data/network.yaml: checker.heartbeat_seconds
CHALLENGE_TOLERANCE = 0.05  # this module's network rules (see network_config)
FAILED_CHALLENGE_SLASH = 20_000_000  # runner/data/network.yaml: market.slash_usd.failed_challenge
#: A batch job that needs a few seconds to wrap up once asked to stop (as one that saves its state),
#: then exits as a SIGTERMed process does: a drain waits for that, within its 10 s grace.
WRAPS_UP_S = 6
WRAPPING_JOB = [
    "sh",
    "-c",
    f"trap 'echo wrapping up; sleep {WRAPS_UP_S}; echo wrapped up; exit 143' TERM; "
    "echo working; while :; do sleep 1; done",
]


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    root = Path(tempfile.mkdtemp(prefix="runner-mh-life-"))
    with Network(root, list(HOSTS), registry_port=free_ports()[0]) as network:
        yield network


def network_config(folder: Path) -> Path:
    """The shipped network rules with two checker settings for a shared test machine: a challenge
    tolerance of 5% (an honest CPU node measured 20% of its join benchmark here while other test
    sessions loaded both cores; the 25% rule itself is tested in CPU mode, and a host held to 0.5%
    of a CPU is far below either), and no timed challenge round of its own during the module, so that
    every challenge here is one a test asked for."""
    import yaml

    from runner.core.network import default_network_path

    rules = yaml.safe_load(default_network_path().read_text())
    rules["checker"].update(challenge_tolerance=CHALLENGE_TOLERANCE, challenge_minutes=24 * 60)
    path = folder / "network.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture(scope="module")
def head(net: Network) -> Iterator[Head]:
    """One head for the module (`runner up --advertise`, the smoke image pushed), both hosts joined;
    its `runner server` reads this module's network rules."""
    env = {"RUNNER_NETWORK_CONFIG": str(network_config(Path(tempfile.mkdtemp(prefix="runner-rules-"))))}
    with running_head(net, HOSTS, ports=free_ports(), images=["smoke"], env=env, memory_gb=2) as h:
        yield h


# -- what the hosts themselves show ----------------------------------------------------------------------
def agent_pid(host: Host) -> int:
    """The node agent's process on ``host``: the Ray actor worker titled ``ray::NodeAgent``."""
    found = [pid for pid, cmd in host_processes(host).items() if cmd.startswith("ray::NodeAgent")]
    assert len(found) == 1, (host.name, host_processes(host))
    return found[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    """An engine event in short: when, what, which container and replica."""
    attrs = event["Actor"]["Attributes"]
    return (
        event.get("timeNano", 0) / 1e9,
        event["Action"],
        attrs.get("name"),
        attrs.get("runner.key"),
        attrs.get("signal") or attrs.get("exitCode"),
    )


def runner_containers(host: Host) -> list[Any]:
    return host.docker().containers.list(all=True, filters={"label": "runner.managed=true"})


@contextlib.contextmanager
def cpu_limited(pid: int, share: float) -> Iterator[None]:
    """Hold every thread of ``pid`` to ``share`` of one CPU (a cgroup CPU quota): a machine that
    computes slower than it claimed. Put back in its own cgroup on the way out."""
    period = 1_000_000  # the longest period a quota may have: small shares are kept precisely
    quota = max(1000, int(share * period))
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    own = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    if unified:
        base = Path("/sys/fs/cgroup")
        home = next(line.split(":", 2)[2] for line in own if line.startswith("0::"))
    else:
        base = Path("/sys/fs/cgroup/cpu")
        home = next(line.split(":", 2)[2] for line in own if "cpu" in line.split(":", 2)[1].split(","))
    group = base / f"runner-test-slow-{os.getpid()}-{pid}"
    group.mkdir()
    try:
        if unified:
            (group / "cpu.max").write_text(f"{quota} {period}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
        try:
            yield
        finally:
            (base / home.lstrip("/") / "cgroup.procs").write_text(str(pid))
    finally:
        group.rmdir()


# -- what the head's API says -----------------------------------------------------------------------------
def node(head: Head, name: str) -> dict[str, Any]:
    return next(n for n in head.operator.nodes() if n["name"] == name)


def uptime(head: Head, name: str) -> tuple[float, float]:
    """(observed, online) seconds of ``name`` over every day the checker has counted."""
    days = head.operator.admin("GET", f"/nodes/{name}/uptime")["days"]
    return sum(d["observed_s"] for d in days), sum(d["online_s"] for d in days)


def offline(head: Head, name: str) -> float:
    observed, online = uptime(head, name)
    return observed - online


def checks_since(head: Head, name: str, kind: str, since: float) -> list[dict[str, Any]]:
    rows = head.operator.admin("GET", f"/nodes/{name}/checks", params={"limit": 200})
    return sorted((c for c in rows if c["kind"] == kind and c["ts"] >= since), key=lambda c: c["ts"])


def earnings(head: Head, provider: str) -> dict[str, Any]:
    return head.operator.admin("GET", "/earnings", params={"provider": provider})[0]


def node_moves(head: Head, name: str) -> list[tuple[str, str, str]]:
    entries = head.operator.admin("GET", "/audit", params={"kind": "node.state", "limit": 10_000})
    return [
        (e["payload"]["from"], e["payload"]["to"], e["payload"]["by"]) for e in entries if e["payload"]["node"] == name
    ]


def cli(head: Head, *args: str) -> str:
    """One `runner` command as the operator types it on the head."""
    return runner_cli(
        list(args), head.settings.home, server_port=head.settings.server_port, ray_port=head.settings.ray_port
    ).stdout


# -- heartbeats ---------------------------------------------------------------------------------------------
def test_heartbeats_come_from_each_hosts_agent_and_stop_counting_when_it_stops_answering(
    head: Head, net: Network
) -> None:
    start = {name: uptime(head, name) for name in HOSTS}

    def advanced(seconds: float) -> bool:
        return all(uptime(head, name)[1] - start[name][1] >= seconds for name in HOSTS)

    wait_for(lambda: advanced(2 * HEARTBEAT_S), timeout_s=60, what="two heartbeat rounds from both hosts")
    for name in HOSTS:  # while its host is connected, every second observed is a second online
        observed, online = uptime(head, name)
        assert observed - start[name][0] == online - start[name][1] > 0, (name, start[name], observed, online)

    # The heartbeat is an answer from the agent's process on the host itself: stop that process (the
    # kernel's SIGSTOP, inside host-a's namespace) and the rounds count host-a offline, while Ray,
    # whose raylet there still answers, keeps the node, and host-b's rounds go on.
    frozen = net.hosts["host-a"]
    pid = agent_pid(frozen)
    offline_a, online_b = offline(head, "host-a"), uptime(head, "host-b")[1]
    stopped_at = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        missed = wait_for(
            lambda: [c for c in checks_since(head, "host-a", "heartbeat", stopped_at) if not c["ok"]],
            timeout_s=30,
            what="a missed heartbeat from the stopped agent",
        )
        assert missed[0]["message"] == "no heartbeat"
        wait_for(
            lambda: offline(head, "host-a") - offline_a >= HEARTBEAT_S,
            timeout_s=30,
            what="host-a's offline seconds to grow",
        )
        assert uptime(head, "host-b")[1] > online_b  # the other host's heartbeats went on
        assert node(head, "host-a")["alive"] and node(head, "host-a")["state"] == "active"
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = time.time()
    back = wait_for(
        lambda: [c for c in checks_since(head, "host-a", "heartbeat", resumed_at - 1) if c["ok"]],
        timeout_s=30,
        what="the agent to answer heartbeats again",
    )
    assert back[-1]["message"] == "answering"
    online_again = uptime(head, "host-a")[1]
    wait_for(lambda: uptime(head, "host-a")[1] > online_again, timeout_s=30, what="host-a counted online again")


# -- challenges ---------------------------------------------------------------------------------------------
def test_a_challenge_is_computed_by_the_remote_hosts_agent_and_recorded(head: Head, net: Network) -> None:
    pids = {name: agent_pid(net.hosts[name]) for name in HOSTS}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    asked_at = time.time()
    result = json.loads(cli(head, "node", "challenge", "host-b", "--json"))
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    assert result["ok"], result
    assert result["node"] == "host-b" and result["failures"] == 0 and result["measured_tflops"] > 0
    # The work was done by the agent process inside host-b's namespace (the kernel's accounting of
    # its CPU time), not on the head and not on host-a, whose agent only answered heartbeats.
    assert used["host-b"] >= 0.05 and used["host-b"] > 5 * used["host-a"], used
    [check] = checks_since(head, "host-b", "challenge", asked_at)
    assert check["ok"] and check["measured"] == pytest.approx(result["measured_tflops"])
    assert check["expected"] == pytest.approx(result["expected_tflops"]) and check["expected"] > 0
    assert node(head, "host-b")["challenge_failures"] == 0


def test_a_host_slower_than_it_claimed_fails_its_challenges_and_is_suspended_and_slashed(
    head: Head, net: Network
) -> None:
    from runner.client import Client

    # A slow host's answer takes a while (the checker waits up to 120 s): longer than a client's 30 s.
    patient = Client(
        head.settings.server_url,
        head.settings.admin_key_path.read_text().strip(),
        ca=head.settings.server_ca,
        timeout_s=150,
    )
    money = earnings(head, "barn-b")["totals"]
    asked_at = time.time()
    try:
        # The same machine with its agent held to 0.5% of a CPU: it computes far below the
        # benchmark it joined with (a bare 2% measured 5% of it, timing slack included).
        with cpu_limited(agent_pid(net.hosts["host-b"]), share=0.005):
            first = patient.admin("POST", "/nodes/host-b/challenge")
            assert not first["ok"] and first["failures"] == 1, first
            assert f"expected at least {CHALLENGE_TOLERANCE:.0%} of" in first["message"], first
            assert node(head, "host-b")["state"] == "active"  # one slow answer is not yet a verdict
            second = patient.admin("POST", "/nodes/host-b/challenge")
            assert not second["ok"] and second["failures"] == 2, second
        suspended = node(head, "host-b")
        assert suspended["state"] == "suspended" and suspended["message"].startswith("failed benchmark challenge")
        assert ("active", "suspended", "checker") in node_moves(head, "host-b")
        after = earnings(head, "barn-b")
        assert after["totals"]["slashed"] - money["slashed"] == FAILED_CHALLENGE_SLASH, after["totals"]
        assert money["stake"] - after["totals"]["stake"] == FAILED_CHALLENGE_SLASH, after["totals"]
        slashes = [line for line in after["lines"] if line["kind"] == "slash" and "host-b failed" in line["memo"]]
        assert len(slashes) == 1, after["lines"]
        assert [c["ok"] for c in checks_since(head, "host-b", "challenge", asked_at)] == [False, False]
    finally:
        head.operator.admin("POST", "/nodes/host-b/activate")
    # Back at its own speed (and brought back by the operator) the same host passes again.
    assert node(head, "host-b")["state"] == "active" and node(head, "host-b")["challenge_failures"] == 0
    again = head.operator.admin("POST", "/nodes/host-b/challenge")
    assert again["ok"], again


# -- drain and offboard -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drained(head: Head, net: Network) -> Iterator[dict[str, Any]]:
    """A batch job running on one host, that host drained with `runner node drain`, and a job for
    that host's region submitted while it drains; what each step saw."""
    stakes = {provider: earnings(head, provider)["totals"] for provider, _, _ in HOSTS.values()}
    job = head.tenant.submit(smoke(name="drained-job", command=WRAPPING_JOB, resources={"cpu": 0.5, "memory": "512MB"}))
    late = None
    try:
        running = head.tenant.wait(job["id"], until="running", timeout_s=240)
        assert running["state"] == "RUNNING", running["message"]
        first = running["node"]
        other = next(name for name in HOSTS if name != first)
        host = net.hosts[first]
        wait_for(
            lambda: any("working" in line["line"] for line in head.tenant.logs(job["id"])),
            timeout_s=60,
            what="the job to be at work",
        )
        drained_at = time.time()
        said = cli(head, "node", "drain", first)
        assert f"{first}: draining" in said, said
        # The job is being asked to stop on the host (its engine's SIGTERM), and is wrapping up: the
        # host is draining. Work for the host's region, submitted now, has no other host to go to.
        label = f"runner.workload={job['id']}"
        wait_for(
            lambda: any(e["Action"] == "kill" for e in engine_events(host, drained_at, label=label)),
            timeout_s=30,
            what="the host's engine to signal the job",
        )
        assert node(head, first)["state"] == "draining"
        late = head.tenant.submit(
            smoke(
                name="after-drain", placement={"regions": [HOSTS[first][1]]}, resources={"cpu": 0.5, "memory": "512MB"}
            )
        )
        waiting = wait_job(
            head,
            late["id"],
            lambda g: g["message"].startswith("no node fits"),
            timeout_s=30,
            what="the late job's placement",
        )
        state_then = node(head, first)["state"]
        moved = wait_job(
            head,
            job["id"],
            lambda g: g["state"] == "RUNNING" and g["node"] == other,
            timeout_s=240,
            what="the job to run on the other host",
        )
        yield {
            "job": job["id"],
            "late": late["id"],
            "first": first,
            "other": other,
            "drained_at": drained_at,
            "waiting": waiting,
            "state_then": state_then,
            "moved": moved,
            "stakes": stakes,
        }
    finally:
        for w in (job, late):
            if w is not None:
                head.tenant.cancel(w["id"])
        for w in (job, late):
            if w is not None:
                wait_job(head, w["id"], lambda g: g["state"] == "CANCELLED", timeout_s=60, what="the end")


def test_a_drained_host_hands_its_batch_job_on_after_sigterm_and_takes_no_new_work(
    head: Head, net: Network, drained: dict[str, Any]
) -> None:
    first, other, job = drained["first"], drained["other"], drained["job"]
    moved = drained["moved"]
    # Moved, not failed: a relocation, the second attempt on the other host.
    assert moved["relocations"] == 1 and moved["attempts"] == 2, moved
    assert any(f"move off draining node {first}" in e["message"] for e in moved["events"]), moved["events"]
    attempts = {r["attempt"]: r for r in moved["replicas"]}
    assert attempts[1]["node"] == first and attempts[2]["node"] == other, moved["replicas"]
    lines = [item["line"] for item in head.tenant.logs(job)]  # it was given its time to wrap up:
    assert any("wrapping up" in line for line in lines) and any("wrapped up" in line for line in lines), lines

    # The drained host's own engine: SIGTERM (15) first, then the job's own exit (143) once it had
    # wrapped up; never SIGKILL. And nothing started there since.
    events = engine_events(net.hosts[first], drained["drained_at"], label=f"runner.workload={job}")
    kills = [e["Actor"]["Attributes"].get("signal") for e in events if e["Action"] == "kill"]
    dies = [e for e in events if e["Action"] == "die"]
    assert kills and kills[0] == "15" and "9" not in kills, kills
    assert [d["Actor"]["Attributes"]["exitCode"] for d in dies] == ["143"], dies
    assert dies[0]["time"] - drained["drained_at"] >= WRAPS_UP_S - 2, (dies[0]["time"], drained["drained_at"])
    born = [
        brief(e)
        for e in engine_events(net.hosts[first], drained["drained_at"])
        if e["Action"] in ("create", "start") and e["timeNano"] / 1e9 >= drained["drained_at"]
    ]
    assert not born, (born, drained["drained_at"])
    # The other host's engine started the second attempt (pulled from the head's registry if new there).
    started = engine_events(net.hosts[other], drained["drained_at"], label=f"runner.workload={job}")
    assert {e["Actor"]["Attributes"]["runner.attempt"] for e in started if e["Action"] == "start"} == {"2"}, started

    # Work for the drained host's region was placed nowhere while it drained: the one host there is
    # draining, the other is in another region. Its engine never saw that work.
    waiting = drained["waiting"]
    assert drained["state_then"] == "draining"
    assert waiting["state"] == "PENDING" and f"{first}: node is draining" in waiting["message"], waiting["message"]
    late = head.tenant.get(drained["late"])
    assert late["state"] == "PENDING" and not late["replicas"], late
    for name in HOSTS:
        assert not engine_events(net.hosts[name], drained["drained_at"], label=f"runner.workload={late['id']}")
    placements = head.operator.admin("GET", "/audit", params={"kind": "placement", "limit": 10_000})
    assert not any(e["payload"]["workload"] == late["id"] and e["payload"]["placed"] for e in placements)

    # Its state says it drained: draining on the operator's word, offboarded once no work was left.
    wait_for(lambda: node(head, first)["state"] == "offboarded", timeout_s=60, what="the drained host offboarded")
    assert node(head, first)["message"] == "drained: no work left"
    moves = node_moves(head, first)
    assert moves[-2:] == [("active", "draining", "operator"), ("draining", "offboarded", "network")], moves


def test_a_drained_host_is_offboarded_leaves_the_cluster_and_keeps_its_stake(
    head: Head, net: Network, drained: dict[str, Any]
) -> None:
    first, other = drained["first"], drained["other"]
    host = net.hosts[first]
    wait_for(lambda: node(head, first)["state"] == "offboarded", timeout_s=60, what="the drained host offboarded")
    # Out of the Ray cluster: Ray no longer has the node alive, and the control plane cannot reach
    # its agent any more.
    wait_for(lambda: not node(head, first)["alive"], timeout_s=60, what="Ray to drop the offboarded node")
    unreachable = head.operator.admin("POST", f"/nodes/{first}/challenge")
    assert not unreachable["ok"] and unreachable["message"] == "node is not reachable", unreachable
    # On the host itself: `runner node join` noticed, left and said so; no Ray process (the agent
    # among them) is left in its namespace; its engine holds no runner container.
    proc = head.joined[first]
    wait_for(lambda: proc.poll() is not None, timeout_s=60, what="runner node join on the host to end")
    said = (host.root / "join.log").read_text()
    assert "out of the cluster" in said and "left the network" in said, said[-2000:]
    wait_for(
        lambda: not [cmd for cmd in host_processes(host).values() if is_ray(cmd)],
        timeout_s=30,
        what="every Ray process on the host to end",
    )
    assert runner_containers(host) == []

    # A drained offboard costs no stake (leaving without draining would).
    money = earnings(head, HOSTS[first][0])
    assert money["totals"]["stake"] == drained["stakes"][HOSTS[first][0]]["stake"], money["totals"]
    assert money["totals"]["slashed"] == drained["stakes"][HOSTS[first][0]]["slashed"], money["totals"]
    assert not [
        line
        for line in money["lines"]
        if line["kind"] == "slash" and first in line["memo"] and "offboard" in line["memo"]
    ], money["lines"]
    # The other host is untouched: active, in the cluster, running the job.
    assert node(head, other)["state"] == "active" and node(head, other)["alive"]
    assert head.tenant.get(drained["job"])["state"] == "RUNNING"


def test_a_host_claiming_another_country_than_its_token_approves_is_refused(
    head: Head, net: Network, drained: dict[str, Any]
) -> None:
    """The attack: the offboarded host comes back with a token the operator approved for it where
    it stands, and declares itself in the US (a geofence dodged, had it worked). `runner node join` on the host
    is refused, the refusal is audited with both sides, and the registry still says where it is."""
    first = drained["first"]
    provider, region, country = HOSTS[first]
    wait_for(lambda: head.joined[first].poll() is not None, timeout_s=60, what="the offboarded host to leave")
    token = head.operator.admin("POST", "/tokens", provider=provider, region=region, country=country)["token"]
    with pytest.raises(RuntimeError, match=f"its join token approves {country}") as refused:
        join(head, net.hosts[first], provider=provider, region=region, country="US", memory_gb=2, token=token)
    assert "refused" in str(refused.value)
    entries = head.operator.admin("GET", "/audit", params={"kind": "node.refused", "limit": 10_000})
    [entry] = [e["payload"] for e in entries if e["payload"]["node"] == first]
    assert (entry["claimed"]["country"], entry["approved"]["country"]) == ("US", country)
    assert node(head, first)["country"] == country
