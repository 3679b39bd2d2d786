"""Player inputs: what a game step sees (``Inputs``) and how client messages become it.

The server's event loop pushes validated messages into an ``InputMixer`` as they arrive;
the game loop thread takes one ``Inputs`` per tick. Only the game thread ever mutates the
mixer's state (pushes go through a deque, whose append/popleft are atomic), so there is no
lock on the 60 Hz path. Pure logic: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from workloads.gaming.protocol import KeyInput, PointerInput


@dataclass
class Inputs:
    """What the players asked for during one step: held keys, pointer position, a fire press."""

    left: bool = False
    right: bool = False
    pointer_x: float | None = None  # 0..1 of the width; set when a pointer moved this step
    fire: bool = False  # space / click: launch, or restart after game over


_FORGET = object()  # queue marker: a client left, release its keys


class InputMixer:
    """Merges every connected client's inputs into one ``Inputs`` per tick, and remembers,
    per client, the highest input id applied so far (the ``ack`` its frames carry back)."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Hashable, object]] = deque()
        self._held: dict[Hashable, set[str]] = {}
        self.acks: dict[Hashable, int] = {}
        self.applied = 0  # inputs applied since start

    def push(self, client: Hashable, message: KeyInput | PointerInput) -> None:
        """Queue a client's input for the next tick (any thread)."""
        self._queue.append((client, message))

    def forget(self, client: Hashable) -> None:
        """Queue a client's departure: its held keys are released at the next tick (any thread)."""
        self._queue.append((client, _FORGET))

    def take(self) -> Inputs:
        """Drain what arrived since the last tick into one ``Inputs`` (the game thread only).

        A key pressed and released within one tick still counts as held for that tick, so a
        quick tap always moves the paddle a step.
        """
        pressed: set[str] = set()
        inputs = Inputs()
        while self._queue:
            client, message = self._queue.popleft()
            if message is _FORGET:
                self._held.pop(client, None)
                self.acks.pop(client, None)
                continue
            held = self._held.setdefault(client, set())
            if isinstance(message, KeyInput):
                if message.down:
                    held.add(message.key)
                    pressed.add(message.key)
                else:
                    held.discard(message.key)
            elif isinstance(message, PointerInput):
                inputs.pointer_x = message.x
                inputs.fire = inputs.fire or message.fire
            else:
                continue
            self.acks[client] = max(self.acks.get(client, 0), message.id)
            self.applied += 1
        down = pressed.union(*self._held.values())
        inputs.left = "left" in down
        inputs.right = "right" in down
        inputs.fire = inputs.fire or "fire" in pressed
        return inputs
