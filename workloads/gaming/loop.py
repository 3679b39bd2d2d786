"""The fixed-step game loop: its own thread, paced by absolute deadlines.

Why a thread and not an asyncio task: pacing must not depend on how busy the event loop is
with sockets, and the heavy parts (numpy copies, swscale, the encoders) release the GIL, so a
frame is drawn while the previous one is encoded and sent.

Each tick is drawn in RGB and converted once to an NV12 ``Picture``; encoding is per player
(``server.Hub``), so the loop's cost does not depend on codecs or on how many watch.

Tick ``k`` is due at ``start + k / fps``: sleeping until an absolute deadline instead of
"one period from now" means per-tick jitter never adds up to drift. A tick that starts a
whole period or more late has missed frames: the game still steps through every missed
tick (game time stays real time, the ball does not slow down under load), only the frames
are not drawn; they count as *dropped*. After a long stall (say, the container was paused)
the game catches up at most ``MAX_CATCH_UP_S`` of game time; the rest is skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workloads.gaming.encode import Picture, to_picture
from workloads.gaming.games import Game
from workloads.gaming.inputs import InputMixer
from workloads.gaming.metrics import Metrics

MAX_CATCH_UP_S = 0.5


@dataclass(frozen=True)
class Frame:
    """One drawn frame, with the input ids (per client) it reflects."""

    id: int
    tick: int
    picture: Picture
    acks: dict[Hashable, int]


class GameLoop:
    """Steps, renders and converts ``game`` at ``fps``; hands each ``Frame`` to ``publish``
    (called on the loop's thread: it must be quick and thread-safe)."""

    def __init__(
        self,
        game: Game,
        *,
        fps: int,
        width: int,
        height: int,
        mixer: InputMixer,
        metrics: Metrics,
        publish: Callable[[Frame], None],
        convert: Callable[[np.ndarray], Picture] = to_picture,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.game = game
        self.period = 1.0 / fps
        self.convert = convert
        self.mixer = mixer
        self.metrics = metrics
        self.publish = publish
        self.clock = clock
        self.renderer = game.renderer(width, height)
        self.first_frame = threading.Event()  # set once a frame has been published: ready
        self._state_lock = threading.Lock()
        self._state: Any = game.new_state(seed)
        self._tick = 0
        self._frame_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="game-loop", daemon=True)
        self.error: BaseException | None = None  # what killed the loop, if anything did

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after the current frame; wait for that unless called from the loop itself."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def snapshot(self) -> dict[str, Any]:
        """The game state as JSON-able data (taken between two steps)."""
        with self._state_lock:
            return self.game.snapshot(self._state)

    def frame_once(self) -> Frame:
        """Step one tick, then draw, convert and publish one frame (the loop's body; the
        benchmark's bare loop calls it without a thread)."""
        self._step()
        return self._draw()

    def _step(self) -> None:
        inputs = self.mixer.take()
        with self._state_lock:
            self._state = self.game.step(self._state, inputs, self.period)
        self._tick += 1

    def _draw(self) -> Frame:
        t0 = time.perf_counter()
        pixels = self.renderer.render(self._state, self._tick * self.period)
        t1 = time.perf_counter()
        picture = self.convert(pixels)
        t2 = time.perf_counter()
        self._frame_id += 1
        frame = Frame(id=self._frame_id, tick=self._tick, picture=picture, acks=dict(self.mixer.acks))
        self.metrics.frame(render_ms=(t1 - t0) * 1000, convert_ms=(t2 - t1) * 1000)
        self.publish(frame)
        self.first_frame.set()
        return frame

    def _run(self) -> None:
        try:
            self._pace()
        except BaseException as exc:  # the server sees a dead loop and ends the session
            self.error = exc
            raise

    def _pace(self) -> None:
        start, k = self.clock(), 0
        max_catch_up = max(1, int(MAX_CATCH_UP_S / self.period))
        while not self._stop.is_set():
            deadline = start + k * self.period
            wait = deadline - self.clock()
            if wait > 0 and self._stop.wait(wait):
                return
            missed = int((self.clock() - deadline) / self.period)
            if missed > 0:
                self.metrics.dropped(missed)
                for _ in range(min(missed, max_catch_up)):  # beyond that: skipped, not replayed
                    self._step()
                k += missed
            self.frame_once()
            k += 1
