"""Gaming sessions, the pure part: the spec a ``runner session start`` makes, the player's URL,
the SLA judge, and the view ``runner session ls`` and ``runner status`` show. No I/O.

A session is a ``kind: gaming`` workload bound to one player. ``session_spec`` fills in what a
studio should not have to write: the shipped game server image, its port, 1 CPU (the server
uses about 0.2 of a core at 720p60) and a consumer-class GPU of the kind cloud-gaming fleets
rent out. Whatever is given is validated by the same spec models as a YAML file, so a bad value
is a ``SpecError`` naming the field.

The SLA: a session promises ``fps`` frames per second and an input-to-frame latency within
``latency_budget_ms``. ``SlaWatch`` reads the session's own metrics reports and calls a
*breach* only when the promise is broken for ``SLA_SUSTAIN_S`` without a break (fps below 95%
of the target, or p95 latency above the budget, in every report over that span), and a
*recovery* only after as long without a problem: one slow sample, a garbage-collection pause,
is not a breach, and a flapping session does not flood its timeline.

Round trip: the view carries two. ``expected_rtt_ms`` is the region table's figure from the
player's region to the node's (what placement went by); ``measured_rtt_ms`` and
``measured_rtt_p95_ms`` are the p50 and p95 the session's page measured with pings over its
own WebSocket (so TCP and the server's event loop are in it; it is not ICMP), as the session's
latest metrics report carries them, None before a player's page has answered a ping.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.core.errors import SpecError
from runner.core.events import EventKind, of_kind, stopping
from runner.core.regions import RegionTable, default_regions

#: What ``runner session start`` runs when nothing else is asked for.
DEFAULT_IMAGE = "runner/gaming:latest"
DEFAULT_PORT = 8000
#: Consumer and entry data-centre parts, what cloud-gaming fleets use (RTX4090 and T4 in the
#: default CPU-mode fleet's catalog); a studio can ask for others with ``gpu``.
DEFAULT_GPU = "RTX4090|RTX3090|L40S|T4"
DEFAULT_CPU = 1.0
DEFAULT_MEMORY = "1GB"
#: Fields a session request may carry, besides ``game`` and ``near``.
OPTIONS = (
    "name",
    "fps",
    "resolution",
    "idle_timeout",
    "max_duration",
    "latency_budget_ms",
    "gpu",
    "cpu",
    "memory",
    "image",
    "max_price_per_gpu_hour",
    "env",
)

#: A breach (or a recovery) needs its condition to hold this long, in every report.
SLA_SUSTAIN_S = 10.0
#: Fps below this share of the target breaks the promise.
SLA_FPS_SHARE = 0.95
#: How the SLA's events read for people (the state itself is their kind: ``runner.core.events``).
BREACH = "SLA breach: "
RECOVERED = "SLA recovered: "
#: How the event written once per attempt when the session first serves begins, for people.
SERVING = "serving at "


# ----------------------------------------------------------------------------- the spec
def session_spec(request: Mapping[str, Any]) -> dict[str, Any]:
    """The gaming spec for a session request (``game``, ``near`` and any of ``OPTIONS``).

    Raises ``SpecError`` for an unknown field or an unknown region; everything else is checked
    when the caller parses the result (``parse_workload``), with the field named.
    """
    unknown = [k for k in request if k not in ("game", "near", *OPTIONS)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["game", "near", *OPTIONS], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; allowed: game, near, {', '.join(OPTIONS)}"
        raise SpecError("session", unknown[0], f"unknown field{hint}")
    for required in ("game", "near"):
        if not request.get(required):
            raise SpecError("session", required, "missing required field")
    check_region(str(request["near"]))
    game = str(request["game"])
    name = request.get("name") or _default_name(game)
    spec: dict[str, Any] = {
        "kind": "gaming",
        "name": name,
        "image": request.get("image") or DEFAULT_IMAGE,
        "game": game,
        "near": request["near"],
        "ports": [DEFAULT_PORT],
        "resources": {
            "gpu": request.get("gpu") or DEFAULT_GPU,
            "cpu": request.get("cpu") or DEFAULT_CPU,
            "memory": request.get("memory") or DEFAULT_MEMORY,
        },
    }
    for key in ("fps", "resolution", "idle_timeout", "max_duration", "latency_budget_ms", "env"):
        if request.get(key) is not None:
            spec[key] = request[key]
    if request.get("max_price_per_gpu_hour") is not None:
        spec["placement"] = {"max_price_per_gpu_hour": request["max_price_per_gpu_hour"]}
    return spec


def _default_name(game: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", game.lower()).strip("-")[:50]
    return f"{slug}-session" if slug and slug[0].isalpha() else "session"


def check_region(region: str, regions: RegionTable | None = None) -> str:
    """A player's region must be in the distance table, else no node could ever be near it."""
    table = regions or default_regions()
    if region not in table.names:
        raise SpecError("session", "near", f"unknown region {region!r}; known regions: {', '.join(table.names)}")
    return region


# ----------------------------------------------------------------------------- the URL
def player_url(ports: Mapping[str, str] | None, port: int = DEFAULT_PORT, *, node_address: str = "") -> str | None:
    """``http://host:port/`` of a session from its replica's published ports, or None before it
    has any. A port published on every interface is reached through the node's own address."""
    bound = (ports or {}).get(f"{port}/tcp")
    if not bound:
        return None
    host, _, host_port = bound.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = node_address or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{host_port}/"


# ----------------------------------------------------------------------------- the SLA
@dataclass(frozen=True)
class SlaChange:
    """A breach begins (``breach``) or ends (``recovered``); ``detail`` says what and how long."""

    kind: str
    detail: str

    @property
    def message(self) -> str:
        return (BREACH if self.kind == "breach" else RECOVERED) + self.detail

    @property
    def event_kind(self) -> EventKind:
        """The event that records this change (what a restart reads back)."""
        return EventKind.SLA_BREACH if self.kind == "breach" else EventKind.SLA_RECOVERED


def sla_problems(metrics: Mapping[str, Any], target_fps: float, budget_ms: float) -> list[str]:
    """What in one metrics report breaks the promise (empty: nothing)."""
    problems = []
    fps = metrics.get("fps")
    if isinstance(fps, (int, float)) and fps < SLA_FPS_SHARE * target_fps:
        problems.append(f"fps {fps:g} < {SLA_FPS_SHARE * target_fps:g} ({SLA_FPS_SHARE:.0%} of {target_fps:g})")
    latency = metrics.get("latency_p95_ms")  # None until a player has sent input
    if isinstance(latency, (int, float)) and latency > budget_ms:
        problems.append(f"latency p95 {latency:g} ms > budget {budget_ms:g} ms")
    return problems


@dataclass
class SlaWatch:
    """Judges one session attempt's metrics reports, in the order they come.

    ``observe`` takes each report with its time on the session's clock (``uptime_s``); a report
    seen twice is ignored. It returns a change when the state flips, else None.
    """

    target_fps: float
    budget_ms: float
    sustain_s: float = SLA_SUSTAIN_S
    breached: bool = False
    _bad_since: float | None = field(default=None, repr=False)
    _good_since: float | None = field(default=None, repr=False)
    _last_t: float | None = field(default=None, repr=False)

    def observe(self, t: float, metrics: Mapping[str, Any]) -> SlaChange | None:
        if self._last_t is not None and t <= self._last_t:
            return None
        self._last_t = t
        problems = sla_problems(metrics, self.target_fps, self.budget_ms)
        if problems:
            self._good_since = None
            self._bad_since = t if self._bad_since is None else self._bad_since
            if not self.breached and t - self._bad_since >= self.sustain_s:
                self.breached = True
                return SlaChange("breach", f"{'; '.join(problems)} for {t - self._bad_since:.0f}s")
            return None
        self._bad_since = None
        self._good_since = t if self._good_since is None else self._good_since
        if self.breached and t - self._good_since >= self.sustain_s:
            self.breached = False
            return SlaChange("recovered", f"fps and latency within the promise for {t - self._good_since:.0f}s")
        return None


def sla_state(events: Iterable[Any]) -> dict[str, Any]:
    """The SLA as a session's events record it (by kind): breached or not, how often, and the last
    change's words (for people)."""
    breaches, breached, last = 0, False, ""
    for event in of_kind(events, EventKind.SLA_BREACH, EventKind.SLA_RECOVERED):
        if event.kind == EventKind.SLA_BREACH.value:
            breaches, breached, last = breaches + 1, True, event.message
        else:
            breached, last = False, event.message
    return {"state": "breached" if breached else "ok", "breaches": breaches, "last": last}


# ----------------------------------------------------------------------------- the view
def phase(state: str, *, serving: bool, ending: bool, ended: bool) -> str:
    """Where a session stands for its player: waiting, starting, serving, ending or ended."""
    if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
        return "ended"
    if state in ("PENDING", "RETRYING"):
        return "waiting"
    if ending or ended:
        return "ending"
    return "serving" if serving and state == "RUNNING" else "starting"


def expected_rtt_ms(near: str | None, node_region: str | None, regions: RegionTable | None = None) -> float | None:
    """The table's round trip from the player's region to the node's; None where either is unknown
    or the table has no figure for the pair."""
    if not near or not node_region:
        return None
    rtt = (regions or default_regions()).rtt_ms(near, node_region)
    return None if math.isinf(rtt) else rtt


def _ms(value: Any) -> float | None:
    """A reported duration, or None: the report is the workload's own stdout, and a value that is
    not a finite number of milliseconds must read as "not measured", not break ``session ls``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _count(value: Any) -> int | None:
    """A reported sample count, or None where it is not a count (as ``_ms``, for the same reason)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def session_view(
    w: Any,
    replicas: Sequence[Any],
    events: Sequence[Any],
    *,
    node_region: str | None,
    node_address: str = "",
    regions: RegionTable | None = None,
) -> dict[str, Any]:
    """One session as ``runner session ls`` and ``runner status`` show it (rows in, dict out)."""
    spec = w.spec
    current = [r for r in replicas if r.attempt == w.attempts]
    rep = current[0] if current else None
    reports = (rep.reports or {}) if rep is not None else {}
    session_report = reports.get("session") or {}
    metrics = reports.get("metrics") or {}
    near = spec.get("near")
    live = rep is not None and rep.finished_at is None
    ended_reason = session_report.get("reason") if session_report.get("event") == "ended" else None
    port = next((p["container"] for p in spec.get("ports", []) if p.get("protocol", "tcp") == "tcp"), DEFAULT_PORT)
    return {
        "id": w.id,
        "name": w.name,
        "game": spec.get("game"),
        "state": w.state,
        "phase": phase(
            w.state,
            serving=session_report.get("event") == "ready" and live,
            ending=stopping(w),
            ended=ended_reason is not None,
        ),
        "node": rep.node if rep is not None else None,
        "region": node_region,
        "near": near,
        "expected_rtt_ms": expected_rtt_ms(near, node_region, regions),
        "measured_rtt_ms": _ms(metrics.get("rtt_p50_ms")),
        "measured_rtt_p95_ms": _ms(metrics.get("rtt_p95_ms")),
        "measured_rtt_samples": _count(metrics.get("rtt_samples")),
        "url": player_url(rep.ports, port, node_address=node_address) if live and rep is not None else None,
        "resolution": spec.get("resolution"),
        "target_fps": spec.get("fps"),
        "latency_budget_ms": spec.get("latency_budget_ms"),
        "fps": metrics.get("fps"),
        "frame_p95_ms": metrics.get("frame_p95_ms"),
        "latency_p50_ms": metrics.get("latency_p50_ms"),
        "latency_p95_ms": metrics.get("latency_p95_ms"),
        "players": metrics.get("players"),
        "metrics_at": metrics.get("ts"),
        "sla": sla_state(events),
        "ended_reason": ended_reason,
        "attempt": w.attempts,
        "message": w.message,
        "created_at": w.created_at,
        "started_at": w.started_at,
        "finished_at": w.finished_at,
    }
