"""The WebRTC baseline of the gaming bench: the same game loop streamed by aiortc, as it ships.

Issue 17 asks to choose between WebCodecs over the session's WebSocket and WebRTC by measurement
on the shaped links. This is the WebRTC side, used only by ``bench/gaming_links.py``: a process
that runs the session's ``GameLoop`` (same game, render and RGB->NV12) and hands each frame to an
aiortc ``VideoStreamTrack``, so aiortc does the rest (its libx264 encoder and rate control, RTP
and SRTP in Python, its congestion control from the browser's REMB), and a page that plays the
track in a ``<video>`` and sends keys over a data channel.

Input-to-frame latency needs to know which input a shown frame reflects; a WebRTC video frame
cannot carry a header, so the frame carries it in its pixels, as glass-to-glass testers do: the
highest applied input id is drawn as ``BITS`` black or white ``CELL``-pixel squares in the
picture's top-left corner before the RGB->NV12 conversion, and the page reads them back from
each frame ``requestVideoFrameCallback`` shows. The page keeps the same ``window.gaming``
numbers as the session's own page (``client.js``), so ``workloads/gaming/player.py`` reads both.

    python -m bench.gaming_webrtc --host 198.18.7.1 --port 9000 --resolution 1280x720 --fps 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from fractions import Fraction
from typing import Any

import numpy as np

BITS, CELL = 20, 16
PLAYER = "player"

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>runner · WebRTC baseline</title>
<style>body{margin:0;background:#05060d}video{display:block}</style></head><body>
<video id="v" autoplay muted playsinline></video><canvas id="screen" width="64" height="36" hidden></canvas>
<script>
"use strict";
(async () => {
  const BITS = %(bits)d, CELL = %(cell)d, WINDOW = 300;
  const g = window.gaming = { connected: false, frames: 0, lastFrameId: 0, lastAck: 0, skipped: 0, inputs: 0,
    fps: 0, firstFrameAt: null, errors: [], latencies: [], frameTimes: [], rtts: [], rtt: null, pings: 0,
    server: null, codec: "webrtc", stream: null, rate: null, kbps: 0, keyframes: 0, keyframeRequests: 0,
    decodeErrors: 0, decodeTimes: [], trace: null };
  const keep = (a, v) => { a.push(v); if (a.length > WINDOW) a.shift(); };
  const v = document.getElementById("v"), probe = document.createElement("canvas");
  probe.width = BITS * CELL; probe.height = CELL;
  const pctx = probe.getContext("2d", { willReadFrequently: true });
  const pc = new RTCPeerConnection();
  const dc = pc.createDataChannel("input", { ordered: true });
  const tr = pc.addTransceiver("video", { direction: "recvonly" });
  const h264 = RTCRtpReceiver.getCapabilities("video").codecs.filter(c => c.mimeType === "video/H264");
  if (h264.length) tr.setCodecPreferences(h264);
  pc.ontrack = (ev) => { v.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  const offer = await pc.createOffer(); await pc.setLocalDescription(offer);
  await new Promise(r => { if (pc.iceGatheringState === "complete") r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  const answer = await (await fetch("/offer", { method: "POST", body: JSON.stringify(pc.localDescription) })).json();
  await pc.setRemoteDescription(answer);
  dc.onopen = () => { g.connected = true; };
  let nextId = 1, last = null; const pending = new Map(), drawnAt = [];
  function onFrame(now, meta) {
    pctx.drawImage(v, 0, 0, BITS * CELL, CELL, 0, 0, BITS * CELL, CELL);
    const px = pctx.getImageData(0, 0, BITS * CELL, CELL).data;
    let ack = 0;
    for (let b = 0; b < BITS; b++) { const i = ((CELL >> 1) * BITS * CELL + b * CELL + (CELL >> 1)) * 4;
      if (px[i] > 128) ack |= (1 << b); }
    const t = performance.now();
    if (last !== null) { keep(g.frameTimes, t - last); if (g.trace) g.trace.frameTimes.push(t - last); }
    if (g.firstFrameAt === null) g.firstFrameAt = t;
    last = t; g.frames++; g.lastAck = ack; drawnAt.push(t);
    for (const [id, at] of pending) { if (id > ack) break; pending.delete(id);
      keep(g.latencies, t - at); if (g.trace) g.trace.latencies.push(t - at); }
    v.requestVideoFrameCallback(onFrame);
  }
  v.requestVideoFrameCallback(onFrame);
  let bytes0 = 0;
  setInterval(async () => {
    const now = performance.now();
    while (drawnAt.length && drawnAt[0] < now - 1000) drawnAt.shift();
    g.fps = drawnAt.length;
    (await pc.getStats()).forEach(s => { if (s.type === "inbound-rtp" && s.kind === "video") {
      g.kbps = (s.bytesReceived - bytes0) * 8 / 1000; bytes0 = s.bytesReceived;
      g.stream = { codec: "webrtc", width: s.frameWidth, height: s.frameHeight, fps: s.framesPerSecond };
      g.keyframes = s.keyFramesDecoded || 0;
      g.rate = { kbps: g.kbps, reason: "REMB", jitterBufferMs: s.jitterBufferEmittedCount ?
        1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount : null }; }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        g.rtt = s.currentRoundTripTime * 1000; keep(g.rtts, g.rtt); } });
  }, 1000);
  const KEYS = { ArrowLeft: "left", ArrowRight: "right", Space: "fire" };
  const send = (key, down, ts) => { if (dc.readyState !== "open") return; const id = nextId++;
    pending.set(id, ts); g.inputs++; dc.send(JSON.stringify({ t: "key", id, key, down, ts })); };
  window.addEventListener("keydown", e => { const k = KEYS[e.code]; if (k && !e.repeat) send(k, true, e.timeStamp); });
  window.addEventListener("keyup", e => { const k = KEYS[e.code]; if (k) send(k, false, e.timeStamp); });
})().catch(e => window.gaming && window.gaming.errors.push(String(e)));
</script></body></html>
""" % {"bits": BITS, "cell": CELL}


def stamp(rgb: np.ndarray, value: int) -> None:
    """Draw ``value``'s low ``BITS`` bits as white (1) or black (0) squares in the top-left corner."""
    for bit in range(BITS):
        rgb[0:CELL, bit * CELL : (bit + 1) * CELL] = 255 if value >> bit & 1 else 0


def make_app(width: int, height: int, fps: int) -> Any:
    from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    from workloads.gaming.encode import to_picture
    from workloads.gaming.games import get_game
    from workloads.gaming.inputs import InputMixer
    from workloads.gaming.loop import GameLoop
    from workloads.gaming.metrics import Metrics
    from workloads.gaming.protocol import ProtocolError, parse_client_message

    mixer = InputMixer()

    def convert(rgb: np.ndarray) -> Any:
        stamp(rgb, mixer.acks.get(PLAYER, 0))
        return to_picture(rgb)

    loop = GameLoop(
        get_game("breakout"),
        fps=fps,
        width=width,
        height=height,
        mixer=mixer,
        metrics=Metrics(fps),
        publish=lambda _f: None,
        convert=convert,
    )

    class GameTrack(VideoStreamTrack):
        """One frame per tick on absolute deadlines, drawn off the event loop."""

        def __init__(self) -> None:
            super().__init__()
            self._start: float | None = None
            self._k = 0

        async def recv(self) -> Any:
            if self._start is None:
                self._start = time.monotonic()
            self._k += 1
            deadline = self._start + self._k / fps
            if (wait := deadline - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            frame = await asyncio.to_thread(loop.frame_once)  # one player per process: one stepper
            video = frame.picture.frame
            video.pts = int(self._k * 90000 / fps)
            video.time_base = Fraction(1, 90000)
            return video

    peers: set[Any] = set()

    async def page(_: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def offer(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        for old in list(peers):  # one player per process: a new page replaces the last one
            await old.close()
            peers.discard(old)
        pc = RTCPeerConnection()
        peers.add(pc)

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            @channel.on("message")
            def on_message(text: str) -> None:
                try:
                    mixer.push(PLAYER, parse_client_message(text))
                except ProtocolError:
                    pass

        pc.addTrack(GameTrack())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    async def metrics(_: Request) -> JSONResponse:  # the fields the bench reads from a session
        return JSONResponse({"encode_cpu_ms": None, "convert_ms": None})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/offer", offer, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from workloads.gaming.settings import parse_resolution

    p = argparse.ArgumentParser(prog="python -m bench.gaming_webrtc", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--resolution", default="1280x720")
    p.add_argument("--fps", type=int, default=60)
    args = p.parse_args(argv)
    width, height = parse_resolution(args.resolution)
    uvicorn.run(make_app(width, height, args.fps), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
