"""The games a session can run, by the name ``RUNNER_GAME`` gives.

One explicit registry: an unknown name is an error that lists the known ones, never a
fallback. A game is its pure rules (new state, fixed step, snapshot) plus a renderer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from workloads.gaming import breakout
from workloads.gaming.inputs import Inputs
from workloads.gaming.settings import SettingsError


class Renderer(Protocol):
    def render(self, state: Any, time_s: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Game:
    name: str
    new_state: Callable[[int], Any]  # seed -> state
    step: Callable[[Any, Inputs, float], Any]  # (state, inputs, dt) -> state
    snapshot: Callable[[Any], dict[str, Any]]  # state -> JSON-able dict
    renderer: Callable[[int, int], Renderer]  # (width, height) -> renderer


def _breakout_renderer(width: int, height: int) -> Renderer:
    from workloads.gaming.render import BreakoutRenderer

    return BreakoutRenderer(width, height)


GAMES: dict[str, Game] = {
    "breakout": Game("breakout", breakout.new_game, breakout.step, breakout.snapshot, _breakout_renderer)
}


def get_game(name: str) -> Game:
    """The game called ``name``; ``SettingsError`` naming RUNNER_GAME when there is none."""
    try:
        return GAMES[name]
    except KeyError:
        raise SettingsError(f"RUNNER_GAME: no game named {name!r}; known games: {', '.join(sorted(GAMES))}") from None
