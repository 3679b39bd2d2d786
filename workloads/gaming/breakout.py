"""Breakout: the rules, with no I/O, no clock and no randomness outside the state.

``step(state, inputs, dt)`` advances one fixed time step and is deterministic: the same seed
and the same input sequence give the same states, so the rules are unit-testable and a
replay reproduces a session. It mutates ``state`` in place (the game loop owns the only copy;
copying 84 bricks 60 times a second buys nothing) and returns it, or a new state when *fire*
restarts a finished game: always use the returned state.

The world is 1280x720 units whatever the session's resolution: the renderer scales, so the
game plays the same at every resolution.

Phases: ``serve`` (the ball rides on the paddle until *fire*), ``play``, ``over`` (no lives
left; *fire* starts a new game). Clearing every brick starts the next level: bricks back,
ball faster, serve again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from workloads.gaming.inputs import Inputs

WORLD_W, WORLD_H = 1280.0, 720.0
HUD_H = 56.0  # the top band the HUD is drawn in; the ball bounces off its lower edge

PADDLE_W, PADDLE_H, PADDLE_Y = 168.0, 16.0, 664.0  # PADDLE_Y is the paddle's top edge
PADDLE_SPEED = 960.0  # units/s with keys; the pointer places the paddle directly
BALL_R = 9.0
BALL_SPEED = 520.0  # units/s at level 1
LEVEL_SPEEDUP = 1.12  # ball speed factor per cleared level
MAX_BOUNCE_DEG = 60.0  # the paddle's edge sends the ball off at this angle from vertical

ROWS, COLS = 6, 14
BRICK_TOP, BRICK_H, BRICK_GAP, BRICK_MARGIN = 88.0, 28.0, 6.0, 32.0
BRICK_PITCH_X = (WORLD_W - 2 * BRICK_MARGIN) / COLS
BRICK_PITCH_Y = BRICK_H + BRICK_GAP
ROW_POINTS = (7, 7, 5, 5, 3, 1)  # top rows are worth more, as in the arcade original
START_LIVES = 3


@dataclass
class State:
    """Everything that determines the game; ``bricks[row][col]`` is True while a brick stands."""

    seed: int = 0
    phase: str = "serve"  # serve | play | over
    score: int = 0
    lives: int = START_LIVES
    level: int = 1
    tick: int = 0
    paddle_x: float = (WORLD_W - PADDLE_W) / 2  # left edge
    ball_x: float = WORLD_W / 2
    ball_y: float = PADDLE_Y - BALL_R
    ball_vx: float = 0.0
    ball_vy: float = 0.0
    bricks: list[list[bool]] = field(default_factory=lambda: full_wall())
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    @property
    def bricks_left(self) -> int:
        return sum(row.count(True) for row in self.bricks)


def full_wall() -> list[list[bool]]:
    return [[True] * COLS for _ in range(ROWS)]


def new_game(seed: int = 0) -> State:
    """A fresh game: level 1, three lives, the ball on the paddle."""
    return State(seed=seed)


def brick_rect(row: int, col: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of one brick in world units (the renderer uses the same numbers)."""
    x0 = BRICK_MARGIN + col * BRICK_PITCH_X + BRICK_GAP / 2
    y0 = BRICK_TOP + row * BRICK_PITCH_Y
    return x0, y0, x0 + BRICK_PITCH_X - BRICK_GAP, y0 + BRICK_H


def ball_speed(level: int) -> float:
    return BALL_SPEED * LEVEL_SPEEDUP ** (level - 1)


def step(state: State, inputs: Inputs, dt: float) -> State:
    """Advance the game by ``dt`` seconds under ``inputs``; mutates and returns ``state``."""
    state.tick += 1
    if state.phase == "over":
        if inputs.fire:  # a new game, with the next seed so that serves differ
            fresh = new_game(seed=state.seed + 1)
            fresh.tick = state.tick
            return fresh
        return state
    _move_paddle(state, inputs, dt)
    if state.phase == "serve":
        _ride_paddle(state)
        if inputs.fire:
            _launch(state)
        return state
    _move_ball(state, dt)
    return state


def _move_paddle(state: State, inputs: Inputs, dt: float) -> None:
    if inputs.pointer_x is not None:  # the pointer is the paddle's centre
        state.paddle_x = inputs.pointer_x * WORLD_W - PADDLE_W / 2
    direction = int(inputs.right) - int(inputs.left)
    state.paddle_x += direction * PADDLE_SPEED * dt
    state.paddle_x = min(max(state.paddle_x, 0.0), WORLD_W - PADDLE_W)


def _ride_paddle(state: State) -> None:
    state.ball_x = state.paddle_x + PADDLE_W / 2
    state.ball_y = PADDLE_Y - BALL_R
    state.ball_vx = state.ball_vy = 0.0


def _launch(state: State) -> None:
    """Send the ball up at a random angle within 15-45 degrees of vertical, left or right."""
    angle = math.radians(state.rng.uniform(15.0, 45.0)) * state.rng.choice((-1, 1))
    speed = ball_speed(state.level)
    state.ball_vx, state.ball_vy = speed * math.sin(angle), -speed * math.cos(angle)
    state.phase = "play"


def _move_ball(state: State, dt: float) -> None:
    """Move in sub-steps of at most half a radius so that the ball never tunnels through a brick."""
    distance = math.hypot(state.ball_vx, state.ball_vy) * dt
    substeps = max(1, math.ceil(distance / (BALL_R / 2)))
    h = dt / substeps
    for _ in range(substeps):
        state.ball_x += state.ball_vx * h
        state.ball_y += state.ball_vy * h
        _bounce_walls(state)
        _hit_paddle(state)
        _hit_bricks(state)
        if state.ball_y - BALL_R > WORLD_H:
            _lose_life(state)
            return
        if state.phase != "play":  # a level was cleared: serve again
            return


def _bounce_walls(state: State) -> None:
    if state.ball_x < BALL_R:
        state.ball_x, state.ball_vx = BALL_R, abs(state.ball_vx)
    elif state.ball_x > WORLD_W - BALL_R:
        state.ball_x, state.ball_vx = WORLD_W - BALL_R, -abs(state.ball_vx)
    if state.ball_y < HUD_H + BALL_R:
        state.ball_y, state.ball_vy = HUD_H + BALL_R, abs(state.ball_vy)


def _hit_paddle(state: State) -> None:
    """A downward ball touching the paddle goes up; where it hits sets the angle (edge: steep)."""
    if state.ball_vy <= 0:
        return
    if not (PADDLE_Y - BALL_R <= state.ball_y <= PADDLE_Y + PADDLE_H):
        return
    if not (state.paddle_x - BALL_R <= state.ball_x <= state.paddle_x + PADDLE_W + BALL_R):
        return
    offset = (state.ball_x - (state.paddle_x + PADDLE_W / 2)) / (PADDLE_W / 2 + BALL_R)
    angle = math.radians(MAX_BOUNCE_DEG) * max(-1.0, min(1.0, offset))
    speed = math.hypot(state.ball_vx, state.ball_vy)
    state.ball_vx, state.ball_vy = speed * math.sin(angle), -speed * math.cos(angle)
    state.ball_y = PADDLE_Y - BALL_R


def _hit_bricks(state: State) -> None:
    """Break the first standing brick the ball overlaps and reflect off the side it came through
    (the axis of least penetration); one brick per sub-step, as in the original."""
    x, y = state.ball_x, state.ball_y
    row0 = max(0, int((y - BALL_R - BRICK_TOP) // BRICK_PITCH_Y))
    row1 = min(ROWS - 1, int((y + BALL_R - BRICK_TOP) // BRICK_PITCH_Y))
    col0 = max(0, int((x - BALL_R - BRICK_MARGIN) // BRICK_PITCH_X))
    col1 = min(COLS - 1, int((x + BALL_R - BRICK_MARGIN) // BRICK_PITCH_X))
    for row in range(row0, row1 + 1):
        for col in range(col0, col1 + 1):
            if not state.bricks[row][col]:
                continue
            x0, y0, x1, y1 = brick_rect(row, col)
            nearest_x, nearest_y = min(max(x, x0), x1), min(max(y, y0), y1)
            if (x - nearest_x) ** 2 + (y - nearest_y) ** 2 > BALL_R**2:
                continue
            state.bricks[row][col] = False
            state.score += ROW_POINTS[row]
            pen_x = min(x + BALL_R - x0, x1 - (x - BALL_R))
            pen_y = min(y + BALL_R - y0, y1 - (y - BALL_R))
            if pen_x < pen_y:
                state.ball_vx = -abs(state.ball_vx) if x < (x0 + x1) / 2 else abs(state.ball_vx)
            else:
                state.ball_vy = -abs(state.ball_vy) if y < (y0 + y1) / 2 else abs(state.ball_vy)
            if state.bricks_left == 0:
                state.level += 1
                state.bricks = full_wall()
                state.phase = "serve"
                _ride_paddle(state)
            return


def _lose_life(state: State) -> None:
    state.lives -= 1
    if state.lives <= 0:
        state.lives = 0
        state.phase = "over"
        state.ball_vx = state.ball_vy = 0.0
    else:
        state.phase = "serve"
        _ride_paddle(state)


def snapshot(state: State) -> dict[str, object]:
    """The state as plain JSON-able data (the server's ``GET /state``)."""
    return {
        "phase": state.phase,
        "score": state.score,
        "lives": state.lives,
        "level": state.level,
        "tick": state.tick,
        "paddle_x": round(state.paddle_x, 2),
        "ball": [round(state.ball_x, 2), round(state.ball_y, 2)],
        "ball_v": [round(state.ball_vx, 2), round(state.ball_vy, 2)],
        "bricks_left": state.bricks_left,
    }
