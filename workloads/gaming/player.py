"""A scripted player: Debian's headless Chromium, driven by Playwright, on a session's page.

Used by the tests, the benchmark and the screenshot in the docs; not by the session itself
(the image has no browser and no Playwright). The browser is the system's ``chromium``
(``npx playwright install`` cannot download one here) with flags that keep it quiet and
offline. Everything measured comes from the page's own ``window.gaming`` (client.js), i.e.
what a real player's browser saw.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # a page in a background tab or without focus must not be throttled mid-measurement
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
VIEWPORT = {"width": 1360, "height": 860}

_STATS_JS = """() => {
  const g = window.gaming;
  return { connected: g.connected, frames: g.frames, lastFrameId: g.lastFrameId,
           lastAck: g.lastAck, skipped: g.skipped, inputs: g.inputs, fps: g.fps,
           firstFrameAt: g.firstFrameAt, errors: g.errors.slice(-5),
           latencies: g.latencies.slice(), frameTimes: g.frameTimes.slice(),
           rtts: g.rtts.slice(), rtt: g.rtt, pings: g.pings,
           server: g.server, codec: g.codec, stream: g.stream, rate: g.rate, kbps: g.kbps,
           keyframes: g.keyframes, keyframeRequests: g.keyframeRequests, decodeErrors: g.decodeErrors,
           decodeTimes: g.decodeTimes.slice() };
}"""

# A digest of what the canvas shows: scaled down to 64x36, so it is cheap and stable.
_DIGEST_JS = """() => {
  const src = document.getElementById('screen');
  const c = document.createElement('canvas'); c.width = 64; c.height = 36;
  const x = c.getContext('2d'); x.drawImage(src, 0, 0, 64, 36);
  const d = x.getImageData(0, 0, 64, 36).data;
  let h = 2166136261 >>> 0, lit = 0;
  for (let i = 0; i < d.length; i++) { h = Math.imul(h ^ d[i], 16777619) >>> 0; if (d[i] > 40) lit++; }
  return { hash: h.toString(16), lit };
}"""


class BrowserMissingError(RuntimeError):
    """No Chromium to drive; the message says how to install one."""


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    raise BrowserMissingError("no chromium on PATH; install it with `apt-get install chromium` (scripts/setup.sh does)")


@contextmanager
def browser(headless: bool = True) -> Iterator[Any]:
    """A Playwright browser context on a fresh profile; closed (and the profile deleted) after."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with tempfile.TemporaryDirectory(prefix="gaming-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=headless, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        try:
            yield context
        finally:
            context.close()


def open_session(context: Any, url: str, timeout_s: float = 15.0) -> Any:
    """Open the session page and wait until it has drawn its first frame; returns the page."""
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
    page.wait_for_function("() => window.gaming && window.gaming.frames > 0", timeout=timeout_s * 1000, polling="raf")
    page.locator("#screen").focus()
    return page


def stats(page: Any) -> dict[str, Any]:
    """The client's live numbers (``window.gaming``): frames, fps, latency, frame and round-trip
    samples."""
    return page.evaluate(_STATS_JS)


def canvas_digest(page: Any) -> dict[str, Any]:
    """``{"hash", "lit"}`` of the canvas scaled to 64x36: frames that differ hash differently."""
    return page.evaluate(_DIGEST_JS)


def start_trace(page: Any) -> None:
    """From now on the page keeps every frame interval and latency sample (not just the last 300)."""
    page.evaluate(
        "() => { window.gaming.trace = { frameTimes: [], latencies: [], t0: performance.now(),"
        " frames0: window.gaming.frames }; }"
    )


def take_trace(page: Any) -> dict[str, Any]:
    """The samples since ``start_trace`` plus ``seconds`` and ``frames`` drawn in that time."""
    return page.evaluate(
        "() => { const t = window.gaming.trace; window.gaming.trace = null;"
        " return { frameTimes: t.frameTimes, latencies: t.latencies,"
        " seconds: (performance.now() - t.t0) / 1000,"
        " frames: window.gaming.frames - t.frames0 }; }"
    )
