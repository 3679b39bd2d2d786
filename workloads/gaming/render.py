"""Draw Breakout frames with numpy: RGB uint8 arrays at the session's resolution.

Cheap by construction, because at 60 fps a frame has 16 ms for everything:

- what never changes (the background gradient, the HUD band) is drawn once;
- the brick wall lives in a *layer* that is patched only where a brick broke or came back,
  and each frame starts as one ``np.copyto`` of that layer (a 2.7 MB memcpy at 1280x720);
- everything else is slice assignment: rectangles, a precomputed disc mask for the ball,
  cached text masks for the HUD, fancy indexing for the star field.

Something always moves (stars drift, a light sweeps the HUD border, the prompt blinks), so a
viewer, and a test, can tell a live stream from a frozen one even while nobody plays.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from workloads.gaming import breakout as bo
from workloads.gaming.font import text_mask, text_width

BG_TOP, BG_BOTTOM = (10, 12, 30), (34, 18, 56)
HUD_BG, HUD_LINE, HUD_SWEEP = (6, 6, 16), (55, 60, 110), (140, 220, 255)
TEXT, TEXT_DIM, ACCENT = (236, 240, 241), (150, 160, 190), (0, 200, 255)
BALL, PADDLE = (250, 250, 250), (236, 240, 241)
ROW_COLORS = ((231, 76, 60), (230, 126, 34), (241, 196, 15), (46, 204, 113), (52, 152, 219), (155, 89, 182))
N_STARS, TRAIL = 90, 4
SWEEP_PERIOD_S = 2.0


class BreakoutRenderer:
    """Renders ``breakout.State`` to a reused (height, width, 3) uint8 buffer.

    ``render`` returns that buffer: it is valid until the next ``render`` call, which is how
    the game loop uses it (encode, then render the next frame).
    """

    def __init__(self, width: int, height: int, seed: int = 0) -> None:
        self.width, self.height = width, height
        self.sx, self.sy = width / bo.WORLD_W, height / bo.WORLD_H
        self.hud_px = self._y(bo.HUD_H)
        self.scale = max(1, round(3 * min(self.sx, self.sy)))
        self._background = self._make_background()
        self._layer = self._background.copy()
        self._frame = np.empty_like(self._background)
        self._drawn = [[False] * bo.COLS for _ in range(bo.ROWS)]
        self._ball_mask = _disc(max(2, round(bo.BALL_R * min(self.sx, self.sy))))
        self._trail: deque[tuple[float, float]] = deque(maxlen=TRAIL)
        rng = np.random.default_rng(seed)
        self._star_x = rng.integers(0, max(1, width - 1), N_STARS)
        self._star_y0 = rng.uniform(0, height, N_STARS)
        self._star_speed = rng.uniform(15, 70, N_STARS) * self.sy
        self._star_top = self._y(bo.BRICK_TOP + bo.ROWS * bo.BRICK_PITCH_Y)
        shade = rng.uniform(0.35, 1.0, (N_STARS, 1))
        self._star_color = (shade * np.array([200, 210, 255])).astype(np.uint8)

    # -- coordinates ------------------------------------------------------------------------
    def _x(self, x: float) -> int:
        return int(round(x * self.sx))

    def _y(self, y: float) -> int:
        return int(round(y * self.sy))

    # -- static parts -------------------------------------------------------------------------
    def _make_background(self) -> np.ndarray:
        ramp = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None]
        top, bottom = np.array(BG_TOP, np.float32), np.array(BG_BOTTOM, np.float32)
        column = (top + (bottom - top) * ramp).astype(np.uint8)  # (h, 3)
        bg = np.ascontiguousarray(np.broadcast_to(column[:, None, :], (self.height, self.width, 3)))
        bg[: self.hud_px] = HUD_BG
        bg[max(0, self.hud_px - 2) : self.hud_px] = HUD_LINE
        return bg

    def _brick_px(self, row: int, col: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = bo.brick_rect(row, col)
        return self._x(x0), self._y(y0), self._x(x1), self._y(y1)

    def _update_layer(self, bricks: list[list[bool]]) -> None:
        """Patch the brick layer where the wall differs from what it shows."""
        for row in range(bo.ROWS):
            if bricks[row] == self._drawn[row]:
                continue
            for col in range(bo.COLS):
                standing = bricks[row][col]
                if standing == self._drawn[row][col]:
                    continue
                x0, y0, x1, y1 = self._brick_px(row, col)
                if standing:
                    _draw_brick(self._layer, x0, y0, x1, y1, ROW_COLORS[row])
                else:
                    self._layer[y0:y1, x0:x1] = self._background[y0:y1, x0:x1]
                self._drawn[row][col] = standing

    # -- per frame ------------------------------------------------------------------------------
    def render(self, state: bo.State, time_s: float) -> np.ndarray:
        """Draw ``state`` at game time ``time_s`` (drives the animations) and return the frame."""
        self._update_layer(state.bricks)
        frame = self._frame
        np.copyto(frame, self._layer)
        self._draw_stars(frame, time_s)
        self._draw_sweep(frame, time_s)
        self._draw_paddle(frame, state)
        self._draw_ball(frame, state)
        self._draw_hud(frame, state)
        self._draw_prompt(frame, state, time_s)
        return frame

    def _draw_stars(self, frame: np.ndarray, time_s: float) -> None:
        span = max(1, self.height - self._star_top - 1)
        ys = (self._star_top + (self._star_y0 + self._star_speed * time_s) % span).astype(np.intp)
        xs = self._star_x
        frame[ys, xs] = self._star_color
        frame[ys, xs + 1] = self._star_color

    def _draw_sweep(self, frame: np.ndarray, time_s: float) -> None:
        width = self._x(140)
        x0 = int((time_s / SWEEP_PERIOD_S) % 1.0 * (self.width + width)) - width
        _fill(frame, x0, self.hud_px - 2, x0 + width, self.hud_px, HUD_SWEEP)

    def _draw_paddle(self, frame: np.ndarray, state: bo.State) -> None:
        x0, y0 = self._x(state.paddle_x), self._y(bo.PADDLE_Y)
        x1, y1 = self._x(state.paddle_x + bo.PADDLE_W), self._y(bo.PADDLE_Y + bo.PADDLE_H)
        _fill(frame, x0, y0, x1, y1, PADDLE)
        _fill(frame, x0, y0, x1, y0 + max(1, (y1 - y0) // 4), ACCENT)

    def _draw_ball(self, frame: np.ndarray, state: bo.State) -> None:
        if state.phase == "over":
            self._trail.clear()
            return
        if state.phase == "play":
            for i, (tx, ty) in enumerate(self._trail):  # oldest first, dimmest
                level = 50 + 40 * i
                self._blit_ball(frame, tx, ty, (level, level, min(255, level + 60)))
            self._trail.append((state.ball_x, state.ball_y))
        else:
            self._trail.clear()
        self._blit_ball(frame, state.ball_x, state.ball_y, BALL)

    def _blit_ball(self, frame: np.ndarray, x: float, y: float, color: tuple[int, int, int]) -> None:
        r = self._ball_mask.shape[0] // 2
        _blit(frame, self._ball_mask, self._x(x) - r, self._y(y) - r, color)

    def _draw_hud(self, frame: np.ndarray, state: bo.State) -> None:
        s = self.scale
        y = max(0, (self.hud_px - 7 * s) // 2)
        margin = self._x(24)
        _blit(frame, text_mask(f"SCORE {state.score:05d}", s), margin, y, TEXT)
        title = "BREAKOUT"
        _blit(frame, text_mask(title, s), (self.width - text_width(title, s)) // 2, y, ACCENT)
        right = f"LEVEL {state.level}  LIVES {state.lives}"
        _blit(frame, text_mask(right, s), self.width - margin - text_width(right, s), y, TEXT)

    def _draw_prompt(self, frame: np.ndarray, state: bo.State, time_s: float) -> None:
        if state.phase == "play":
            return
        s = self.scale
        lines: list[tuple[str, int, tuple[int, int, int]]] = []
        if state.phase == "over":
            lines.append(("GAME OVER", 2 * s, ROW_COLORS[0]))
            lines.append((f"SCORE {state.score}", s, TEXT))
        if (time_s % 1.0) < 0.7:  # blink
            verb = "PLAY AGAIN" if state.phase == "over" else "LAUNCH"
            lines.append((f"PRESS SPACE OR CLICK TO {verb}", s, TEXT_DIM))
        y = self._y(bo.BRICK_TOP + bo.ROWS * bo.BRICK_PITCH_Y + 60)
        for text, scale, color in lines:
            _blit(frame, text_mask(text, scale), (self.width - text_width(text, scale)) // 2, y, color)
            y += 7 * scale + 4 * s


# -- drawing primitives (clipped to the frame) ----------------------------------------------
def _fill(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
    h, w = frame.shape[:2]
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x0 < x1 and y0 < y1:
        frame[y0:y1, x0:x1] = color


def _blit(frame: np.ndarray, mask: np.ndarray, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Set the pixels where ``mask`` is True, with its top-left corner at (x, y)."""
    h, w = frame.shape[:2]
    mh, mw = mask.shape
    fx0, fy0, fx1, fy1 = max(0, x), max(0, y), min(w, x + mw), min(h, y + mh)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sub = mask[fy0 - y : fy1 - y, fx0 - x : fx1 - x]
    frame[fy0:fy1, fx0:fx1][sub] = color


def _draw_brick(layer: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
    """A flat brick with a lighter top edge and a darker bottom edge (a cheap bevel)."""
    bevel = max(1, (y1 - y0) // 8)
    _fill(layer, x0, y0, x1, y1, color)
    _fill(layer, x0, y0, x1, y0 + bevel, _shade(color, 50))
    _fill(layer, x0, y1 - bevel, x1, y1, _shade(color, -60))


def _shade(color: tuple[int, int, int], delta: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + delta)) for c in color)
    return r, g, b


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    mask = xx * xx + yy * yy <= radius * radius + radius  # +r: rounder at small sizes
    mask.setflags(write=False)
    return mask
