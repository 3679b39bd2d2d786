"""Each player's bitrate, resolution and frame rate, from what its frames' receipts measure. Pure.

The player's page answers every frame with a receipt (``{"t": "got", "id": ...}``), so the
server knows, per frame, when it left and when the page had it: a round trip per frame (not
one a second as pings give) and the bytes the link delivered. The controller reads the link
the way delay-based congestion control does (WebRTC's GCC, LEDBAT): a link that carries the
stream shows the round trip it shows when idle; one that does not shows it growing, because the
bytes queue in front of its bottleneck (the player's last mile, TCP's send buffer). So:

Nothing is judged in a page's first ``WARMUP_S`` or on fewer than ``MIN_SAMPLES`` recent receipts.

- **overuse**: the recent round trip (median of the last ``RECENT_S``) exceeds the *baseline* by
  more than ``OVERUSE_MS`` at ``OVERUSE_UPDATES`` updates in a row. The baseline is the lowest of those medians over the last
  ``MIN_RTT_WINDOW_S``, not the lowest single receipt: a receipt's round trip also holds the
  page's main thread and the server's event loop, which on a busy machine (here: browser and
  session on two cores) add tens of milliseconds that are not the link's, and one lucky 1 ms
  sample would make all of that look like queueing. Then the target drops to ``BACKOFF`` of
  what the link delivered in the last second (never of the target alone: after a drop from
  25 to 5 Mbit/s the target must land near 5 at once, not in ten 15% steps), and may not grow
  for ``HOLD_AFTER_BACKOFF_S``;
- **underuse**: no queueing (under ``CLEAR_MS``) while the encoder spends at least
  ``USED_SHARE`` of the target: the target grows by ``GROWTH`` each update up to the rung's
  ceiling. An encoder that spends less than that (flat game graphics need a fraction of a
  Mbit/s) is not probing anything, so the target holds: it grows only where growth is proven;
- otherwise it holds.

When the target falls below what the current rung needs (``Rung.min_kbps``, bits per pixel per
frame) the player steps down the ladder: a smaller picture, then half the frame rate; it steps
back up when the target has stayed well above the next rung's need for ``STEP_UP_AFTER_S``.

``window_frames`` bounds the frames in flight (sent, not yet receipted) to a baseline round
trip's worth plus ``WINDOW_SLACK_MS``: the only queue between encoder and player. A link slower than the stream then
makes the server skip frames (the player gets fewer, never older ones), and the round trip the
receipts see stays within a couple of frames of the idle one.

``Decision`` is data: the number, the rung and why (``reason`` a code, ``detail`` for people).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

UPDATE_S = 0.2
RECENT_S = 0.5
RTT_KEPT_S = 3.0  # receipts older than this say nothing about the link now
MIN_RTT_WINDOW_S = 10.0
DELIVERY_WINDOW_S = 1.0
OVERUSE_MS = 40.0
OVERUSE_UPDATES = 2  # in a row: one slow update is the machine, two are a queue
CLEAR_MS = 10.0
BACKOFF = 0.85
GROWTH = 1.05  # per update: about +28% a second
USED_SHARE = 0.6
HOLD_AFTER_BACKOFF_S = 1.0
STEP_UP_AFTER_S = 3.0
STEP_UP_MARGIN = 1.5
MIN_SAMPLES = 10  # receipts in the recent window before queueing is judged at all
WARMUP_S = 1.0  # a new page's first receipts time its decoder starting, not the link
MIN_BITS_PER_PIXEL = 0.015  # per frame: below this a rung's picture turns to mush
WINDOW_SLACK_MS = 50.0
FLOOR_KBPS = 100.0


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: what the encoder is given."""

    width: int
    height: int
    fps: int

    @property
    def min_kbps(self) -> float:
        return MIN_BITS_PER_PIXEL * self.width * self.height * self.fps / 1000


def ladder(width: int, height: int, fps: int) -> tuple[Rung, ...]:
    """Full size, two thirds, half, then half at half the frame rate (sizes kept even)."""

    def scaled(num: int, den: int) -> tuple[int, int]:
        return (width * num // den) & ~1, (height * num // den) & ~1

    rungs = [Rung(width, height, fps)]
    for num, den in ((2, 3), (1, 2)):
        w, h = scaled(num, den)
        if w >= 160 and h >= 90:
            rungs.append(Rung(w, h, fps))
    if fps >= 20:
        rungs.append(Rung(rungs[-1].width, rungs[-1].height, fps // 2))
    return tuple(rungs)


@dataclass(frozen=True)
class Decision:
    kbps: float
    rung: int  # index into the ladder; 0 is the full picture
    reason: str  # "start", "overuse", "probe", "hold", "app_limited", "step_down", "step_up"
    detail: str  # the measurements behind it, for people


class RateController:
    """One player's controller. Feed it ``sent`` and ``receipt``; ask ``update`` before a frame."""

    def __init__(self, rungs: tuple[Rung, ...], *, start_kbps: float, max_kbps: float, now: float) -> None:
        if not rungs:
            raise ValueError("the ladder needs at least one rung")
        self.rungs = rungs
        self.max_kbps = max_kbps
        self.kbps = max(FLOOR_KBPS, min(start_kbps, max_kbps))
        self.rung = 0
        self.decision = Decision(self.kbps, 0, "start", f"starting at {self.kbps:.0f} kbps")
        self._rtts: deque[tuple[float, float]] = deque()  # (time, ms), the last RTT_KEPT_S
        self._medians: deque[tuple[float, float]] = deque()  # (time, recent median), MIN_RTT_WINDOW_S
        self._delivered: deque[tuple[float, int]] = deque()  # (time, bytes) receipted
        self._sent: deque[tuple[float, int]] = deque()
        self._next_update = now + UPDATE_S
        self._hold_until = now
        self._judge_from = now + WARMUP_S
        self._overused = 0  # updates in a row that saw queueing
        self._up_since: float | None = None

    # -- measurements --------------------------------------------------------------------------
    def sent(self, now: float, nbytes: int) -> None:
        self._sent.append((now, nbytes))

    def receipt(self, now: float, rtt_ms: float, nbytes: int) -> None:
        self._rtts.append((now, rtt_ms))
        self._delivered.append((now, nbytes))

    def min_rtt_ms(self) -> float | None:
        """The baseline round trip: the lowest recent median of the last ``MIN_RTT_WINDOW_S``."""
        return min((r for _, r in self._medians), default=None)

    def recent_rtt_ms(self, now: float, min_samples: int = 1) -> float | None:
        """Median round trip of the last ``RECENT_S``, or of the last ``min_samples`` receipts when
        fewer came in that time (a collapsing link slows the receipts down: it must not blind the
        controller just when it matters); None with fewer receipts than that at all."""
        recent = [r for t, r in self._rtts if t >= now - RECENT_S]
        if len(recent) < min_samples:
            recent = [r for _, r in list(self._rtts)[-min_samples:]]
        return statistics.median(recent) if len(recent) >= max(1, min_samples) else None

    def delivered_kbps(self, now: float) -> float:
        return sum(n for t, n in self._delivered if t >= now - DELIVERY_WINDOW_S) * 8 / 1000 / DELIVERY_WINDOW_S

    def sent_kbps(self, now: float) -> float:
        return sum(n for t, n in self._sent if t >= now - DELIVERY_WINDOW_S) * 8 / 1000 / DELIVERY_WINDOW_S

    def window_frames(self, fps: int) -> int:
        """Frames allowed in flight: the baseline round trip's worth plus ``WINDOW_SLACK_MS``."""
        best = self.min_rtt_ms() or 0.0
        return max(2, math.ceil((best + WINDOW_SLACK_MS) / 1000 * fps))

    # -- decisions -----------------------------------------------------------------------------
    def update(self, now: float) -> Decision | None:
        """A new decision every ``UPDATE_S`` (None in between, and when nothing changed)."""
        if now < self._next_update:
            return None
        self._next_update = now + UPDATE_S
        self._forget(now)
        if (recent := self.recent_rtt_ms(now, MIN_SAMPLES)) is not None:
            self._medians.append((now, recent))
        decision = self._decide(now)
        changed = (decision.kbps, decision.rung, decision.reason) != (
            self.decision.kbps,
            self.decision.rung,
            self.decision.reason,
        )
        self.kbps, self.rung, self.decision = decision.kbps, decision.rung, decision
        return decision if changed else None

    def _decide(self, now: float) -> Decision:
        best, recent = self.min_rtt_ms(), self.recent_rtt_ms(now, MIN_SAMPLES)
        delivered, sent = self.delivered_kbps(now), self.sent_kbps(now)
        ceiling = self.max_kbps
        if best is None or recent is None or now < self._judge_from:
            return Decision(self.kbps, self.rung, self.decision.reason, self.decision.detail)
        queue = recent - best
        seen = f"round trip {recent:.0f} ms (best {best:.0f}), delivered {delivered:.0f} kbps, sent {sent:.0f}"
        self._overused = self._overused + 1 if queue > OVERUSE_MS else 0
        if self._overused >= OVERUSE_UPDATES:
            kbps = max(FLOOR_KBPS, BACKOFF * min(self.kbps, max(delivered, FLOOR_KBPS)))
            self._hold_until = now + HOLD_AFTER_BACKOFF_S
            return self._with_rung(now, kbps, "overuse", f"queueing {queue:.0f} ms: {seen}")
        if queue < CLEAR_MS and now >= self._hold_until:
            if sent < USED_SHARE * self.kbps:
                return self._with_rung(now, self.kbps, "app_limited", f"the encoder needs less: {seen}")
            kbps = min(ceiling, self.kbps * GROWTH)
            return self._with_rung(now, kbps, "probe", f"no queueing: {seen}")
        return self._with_rung(now, self.kbps, "hold", seen)

    def _with_rung(self, now: float, kbps: float, reason: str, detail: str) -> Decision:
        rung = self.rung
        if kbps < self.rungs[rung].min_kbps and rung + 1 < len(self.rungs):
            self._up_since = None
            need = self.rungs[rung]
            return Decision(
                kbps,
                rung + 1,
                "step_down",
                f"{kbps:.0f} kbps is under the {need.min_kbps:.0f} that {need.width}x{need.height}"
                f"@{need.fps} needs ({detail})",
            )
        if rung > 0 and kbps >= STEP_UP_MARGIN * self.rungs[rung - 1].min_kbps:
            self._up_since = now if self._up_since is None else self._up_since
            if now - self._up_since >= STEP_UP_AFTER_S:
                self._up_since = None
                up = self.rungs[rung - 1]
                return Decision(
                    kbps, rung - 1, "step_up", f"{kbps:.0f} kbps carries {up.width}x{up.height}@{up.fps} ({detail})"
                )
        else:
            self._up_since = None
        return Decision(kbps, rung, reason, detail)

    def _forget(self, now: float) -> None:
        for samples, keep_s in (
            (self._rtts, RTT_KEPT_S),
            (self._medians, MIN_RTT_WINDOW_S),
            (self._delivered, DELIVERY_WINDOW_S),
            (self._sent, DELIVERY_WINDOW_S),
        ):
            while samples and samples[0][0] < now - keep_s:
                samples.popleft()
