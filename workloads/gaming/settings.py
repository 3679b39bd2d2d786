"""The session's settings: one object read from the environment at start, passed down.

The runner sets the contract's variables from the spec (``PORT``, ``RUNNER_GAME``,
``RUNNER_FPS``, ``RUNNER_RESOLUTION``, ``RUNNER_IDLE_TIMEOUT_S``, ``RUNNER_MAX_DURATION_S``,
``RUNNER_LATENCY_BUDGET_MS``); each has a default so that ``python -m workloads.gaming`` runs
bare. ``HOST``, ``GAMING_CODECS`` (what the session streams, best first: ``h264,jpeg``; a
page gets the first it can decode), ``GAMING_MAX_KBPS`` and ``GAMING_START_KBPS`` (a player's
bitrate ceiling and starting point; defaults by picture size, ``default_kbps``),
``GAMING_JPEG_QUALITY`` and ``GAMING_REPORT_EVERY_S`` are local knobs outside the contract. A
bad value is a ``SettingsError`` naming the variable and what it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from workloads.gaming.encode import CODECS

#: Bits per pixel per frame for a player's ceiling: 0.1 gives 5.5 Mbit/s at 1280x720@60 and
#: 12.4 at 1920x1080@60, what services ask for H.264 at those sizes on game content (issue 17:
#: 15 and 25 Mbit/s for busier pictures than Breakout's); a player starts at half of it.
MAX_BITS_PER_PIXEL = 0.1


def default_kbps(width: int, height: int, fps: int) -> tuple[float, float]:
    """(start, max) kbps for a picture of this size and rate."""
    ceiling = MAX_BITS_PER_PIXEL * width * height * fps / 1000
    return ceiling / 2, ceiling


class SettingsError(ValueError):
    """An environment variable has a value the session cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    host: str = "0.0.0.0"  # in a container: the runner publishes the port on the node
    game: str = "breakout"
    fps: int = 60
    width: int = 1280
    height: int = 720
    idle_timeout_s: float = 300.0  # no input for this long ends the session; 0: never
    max_duration_s: float = 4 * 3600.0  # the session ends after this long; 0: never
    latency_budget_ms: float = 50.0  # reported with the metrics; the runner judges breaches
    jpeg_quality: int = 75
    codecs: tuple[str, ...] = CODECS
    max_kbps: float = 0.0  # 0: ``default_kbps`` for the picture
    start_kbps: float = 0.0  # 0: as above
    report_every_s: float = 5.0  # how often a {"runner": "metrics"} line is printed

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    def kbps(self) -> tuple[float, float]:
        """(start, max) kbps of a player's stream: the settings' own, or the picture's defaults."""
        start, ceiling = default_kbps(self.width, self.height, self.fps)
        ceiling = self.max_kbps or ceiling
        return min(self.start_kbps or start, ceiling), ceiling

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read the settings from ``env`` (``os.environ``); unset or empty means the default."""
        d = cls()

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        width, height = d.width, d.height
        if (res := get("RUNNER_RESOLUTION")) is not None:
            width, height = parse_resolution(res)
        return cls(
            port=_int(get("PORT"), "PORT", d.port, 1, 65535),
            host=get("HOST") or d.host,
            game=(get("RUNNER_GAME") or d.game).lower(),
            fps=_int(get("RUNNER_FPS"), "RUNNER_FPS", d.fps, 1, 240),
            width=width,
            height=height,
            idle_timeout_s=_float(get("RUNNER_IDLE_TIMEOUT_S"), "RUNNER_IDLE_TIMEOUT_S", d.idle_timeout_s),
            max_duration_s=_float(get("RUNNER_MAX_DURATION_S"), "RUNNER_MAX_DURATION_S", d.max_duration_s),
            latency_budget_ms=_float(get("RUNNER_LATENCY_BUDGET_MS"), "RUNNER_LATENCY_BUDGET_MS", d.latency_budget_ms),
            jpeg_quality=_int(get("GAMING_JPEG_QUALITY"), "GAMING_JPEG_QUALITY", d.jpeg_quality, 1, 100),
            codecs=parse_codecs(get("GAMING_CODECS")) if get("GAMING_CODECS") else d.codecs,
            max_kbps=_float(get("GAMING_MAX_KBPS"), "GAMING_MAX_KBPS", d.max_kbps, low=100),
            start_kbps=_float(get("GAMING_START_KBPS"), "GAMING_START_KBPS", d.start_kbps, low=100),
            report_every_s=_float(get("GAMING_REPORT_EVERY_S"), "GAMING_REPORT_EVERY_S", d.report_every_s, low=0.1),
        )


MIN_W, MIN_H, MAX_W, MAX_H = 320, 180, 3840, 2160


def parse_codecs(text: str) -> tuple[str, ...]:
    """``"h264,jpeg"`` -> ("h264", "jpeg"): known codecs, at least one, each once, order kept."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CODECS]
    if not names or unknown or len(set(names)) != len(names):
        raise SettingsError(f"GAMING_CODECS: must list {' and/or '.join(CODECS)}, each once, got {text!r}")
    return tuple(names)


def parse_resolution(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720); both even (4:2:0 chroma), within 320x180..3840x2160."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise SettingsError(f"RUNNER_RESOLUTION: must be WIDTHxHEIGHT such as 1280x720, got {text!r}")
    width, height = int(match[1]), int(match[2])
    if not (MIN_W <= width <= MAX_W and MIN_H <= height <= MAX_H) or width % 2 or height % 2:
        raise SettingsError(
            f"RUNNER_RESOLUTION: must be even numbers within {MIN_W}x{MIN_H}..{MAX_W}x{MAX_H}, got {text!r}"
        )
    return width, height


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}: must be an integer {low}..{high}, got {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{name}: must be an integer {low}..{high}, got {number}")
    return number


def _float(value: str | None, name: str, default: float, low: float = 0.0) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name}: must be a number of seconds/milliseconds, got {value!r}") from None
    if not number >= low or number == float("inf"):
        raise SettingsError(f"{name}: must be a finite number >= {low:g}, got {value!r}")
    return number
