// Browser client of a runner game session: shows the stream, sends inputs, measures.
//
// Frames arrive on one WebSocket as binary messages: a 20-byte header (see protocol.py)
// then an H.264 access unit or a JPEG, as the server's "stream" message said. The page asks
// for H.264 when WebCodecs' VideoDecoder takes it (a secure context: https, or localhost),
// else for JPEG (`?codecs=jpeg` in the page's URL forces it). Every frame is answered with a
// receipt {t: "got", id} the moment it arrives: the server paces the stream and sets its
// bitrate from those (rate.py). H.264 frames all go to the decoder, in order (a delta needs the
// frames before it; the server already sends fewer frames to a slow link, never a backlog);
// after an error or a new stream the page waits for a keyframe and asks for one. JPEG is
// decoded with createImageBitmap, only the newest kept while one decodes.
// Each input gets an id and its event time; the first drawn frame whose header `ack`
// reaches that id reflects it, and input-to-frame latency = draw time - event time.
// Everything is measured on this page's clock (performance.now), so no clock sync.
// Round trip: a ping {t: "ping", ts} goes up once on connect and then every second on the
// same socket; the server echoes ts in a pong ahead of its queued frames, so rtt = now - ts
// is the network both ways plus TCP, the server's event loop and this page's main thread.
// window.gaming exposes the live numbers (tests and the benchmark read them).
"use strict";
(() => {
  const HEADER_MIN = 20;
  const KEYS = { ArrowLeft: "left", KeyA: "left", ArrowRight: "right", KeyD: "right",
                 Space: "fire", ArrowUp: "fire", KeyW: "fire" };
  const STATS_EVERY_MS = 1000, SHOW_EVERY_MS = 250, PENDING_MAX_MS = 5000, WINDOW = 300;
  const PING_EVERY_MS = 1000, RTT_MAX_MS = 60000; // a pong later than this is not a sample
  const H264 = "avc1.42E02A";    // constrained baseline, level 4.2: up to 1920x1080 at 60 fps
  const DECODE_BACKLOG_MAX = 8;  // frames queued in the decoder past which it starts again

  const canvas = document.getElementById("screen");
  const ctx = canvas.getContext("2d", { alpha: false, desynchronized: true });
  const $ = (id) => document.getElementById(id);

  const g = window.gaming = {
    connected: false, hello: null, server: null, errors: [],
    frames: 0, lastFrameId: 0, lastAck: 0, lastTick: 0, skipped: 0, inputs: 0,
    firstFrameAt: null,          // performance.now() of the first frame drawn
    latencies: [], frameTimes: [], // recent samples (ms), for the page and for tests
    rtts: [], rtt: null, pings: 0, // round trips (ms): recent samples, the latest, pings sent
    trace: null,                 // set to {frameTimes: [], latencies: []} to keep every sample
    fps: 0, p: percentile,
    codec: null, stream: null, rate: null, // what the server streams to this page, and why
    kbps: 0, keyframes: 0, keyframeRequests: 0, decodeErrors: 0,
    decodeTimes: [],             // ms from arrival to drawn, H.264 (the decoder's own delay)
  };
  let ws = null, nextId = 1, nextPing = 1, decoding = false, queued = null, lastDrawn = null;
  let decoder = null, needKey = true, lastKeyAsk = -1e9;
  const meta = new Map();        // H.264 chunk timestamp (frame id) -> {ack, tick}
  const received = [];           // [arrival time, bytes] of the last second, for kbps
  const pending = new Map();     // input id -> event time (ms), in id order
  let outLatency = [], outFrames = [], outRtt = [], outSkipped = 0; // since the last stats message
  const drawnAt = [];            // draw times of the last second, for fps

  function percentile(values, q) {
    if (!values.length) return null;
    const s = [...values].sort((a, b) => a - b);
    const pos = (s.length - 1) * q / 100, lo = Math.floor(pos), hi = Math.ceil(pos);
    return s[lo] + (s[hi] - s[lo]) * (pos - lo);
  }
  const keep = (arr, v) => { arr.push(v); if (arr.length > WINDOW) arr.shift(); };

  async function decodable() {
    const asked = new URLSearchParams(location.search).get("codecs");
    if (asked) return asked;
    try {
      if (typeof VideoDecoder === "function" &&
          (await VideoDecoder.isConfigSupported({ codec: H264, optimizeForLatency: true })).supported) {
        return "h264,jpeg";
      }
    } catch (err) { g.errors.push("VideoDecoder: " + err); }
    return "jpeg";
  }

  async function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/ws?codecs=" + encodeURIComponent(await decodable()));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { g.connected = true; ping(); };
    ws.onclose = () => {
      g.connected = false; pending.clear(); resetDecoder(); setTimeout(connect, 1000);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") return onText(JSON.parse(ev.data));
      onFrame(ev.data);
    };
  }

  function onFrame(buf) {
    const view = new DataView(buf);
    if (buf.byteLength < HEADER_MIN) { g.errors.push("short frame"); return; }
    const flags = view.getUint8(1), headerLen = view.getUint16(2, true), id = view.getUint32(4, true);
    ws.send(JSON.stringify({ t: "got", id }));     // first: this is what the server measures
    const now = performance.now();
    received.push([now, buf.byteLength]);
    while (received.length && received[0][0] < now - 1000) received.shift();
    if (flags & 1) g.keyframes++;
    if (g.codec === "h264") return decodeH264(buf, view, headerLen, id, (flags & 1) !== 0);
    if (decoding) { if (queued) { g.skipped++; outSkipped++; } queued = buf; return; }
    show(buf);
  }

  // -- H.264 through WebCodecs --------------------------------------------------------------
  function resetDecoder() {
    if (decoder && decoder.state !== "closed") decoder.close();
    decoder = null; needKey = true; meta.clear();
  }

  function newDecoder() {
    decoder = new VideoDecoder({
      output: (frame) => {
        const m = meta.get(frame.timestamp);
        meta.delete(frame.timestamp);
        // Drawing a VideoFrame converts it to RGB on this thread (5-7 ms at 1280x720 without a
        // GPU): when a newer frame is already being decoded, this one would only be seen for an
        // instant, so it is skipped, and a slow page shows fewer frames instead of older ones.
        if (decoder && decoder.decodeQueueSize > 0) { frame.close(); g.skipped++; outSkipped++; return; }
        ctx.drawImage(frame, 0, 0, canvas.width, canvas.height);
        frame.close();
        if (m) { keep(g.decodeTimes, performance.now() - m.at); drawn(frame.timestamp, m.ack, m.tick); }
      },
      error: (err) => { g.decodeErrors++; g.errors.push(String(err)); resetDecoder(); askKeyframe("decoder error"); },
    });
    decoder.configure({ codec: H264, optimizeForLatency: true });
  }

  function askKeyframe(why) {
    const now = performance.now();
    if (now - lastKeyAsk < 500 || !ws || ws.readyState !== WebSocket.OPEN) return;
    lastKeyAsk = now; g.keyframeRequests++;
    ws.send(JSON.stringify({ t: "keyframe", why }));
  }

  function decodeH264(buf, view, headerLen, id, key) {
    if (decoder && decoder.decodeQueueSize > DECODE_BACKLOG_MAX) { resetDecoder(); askKeyframe("decoder behind"); }
    if (!decoder) newDecoder();
    if (needKey && !key) { g.skipped++; outSkipped++; askKeyframe("waiting for a keyframe"); return; }
    needKey = false;
    meta.set(id, { ack: view.getUint32(8, true), tick: view.getUint32(12, true), at: performance.now() });
    try {
      decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: id,
                                             data: new Uint8Array(buf, headerLen) }));
    } catch (err) {
      g.decodeErrors++; g.errors.push(String(err)); resetDecoder(); askKeyframe("decode refused");
    }
  }

  function onText(msg) {
    if (msg.t === "hello") {
      g.hello = msg; g.codec = msg.codec || "jpeg";
      if (canvas.width !== msg.width || canvas.height !== msg.height) {
        canvas.width = msg.width; canvas.height = msg.height;
      }
    } else if (msg.t === "stream") {
      g.stream = msg; g.codec = msg.codec;
      resetDecoder();              // a new encoder: its first frame is a keyframe
    } else if (msg.t === "rate") {
      g.rate = msg;
    } else if (msg.t === "pong") {
      pong(msg);
    } else if (msg.t === "server") {
      g.server = msg;
    } else if (msg.t === "error") {
      g.errors.push(msg.error); console.warn("session:", msg.error);
    }
  }

  // -- JPEG -------------------------------------------------------------------------------------
  async function show(buf) {
    decoding = true;
    try {
      const view = new DataView(buf);
      const headerLen = view.getUint16(2, true);
      if (buf.byteLength < HEADER_MIN || headerLen < HEADER_MIN) throw new Error("short frame");
      const id = view.getUint32(4, true), ack = view.getUint32(8, true), tick = view.getUint32(12, true);
      const bitmap = await createImageBitmap(new Blob([new Uint8Array(buf, headerLen)], { type: "image/jpeg" }));
      ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      drawn(id, ack, tick);
    } catch (err) {
      g.errors.push(String(err));
    }
    decoding = false;
    if (queued) { const next = queued; queued = null; show(next); }
  }

  function drawn(id, ack, tick) {
    const now = performance.now();
    if (lastDrawn !== null) {
      const dt = now - lastDrawn;
      keep(g.frameTimes, dt); outFrames.push(dt);
      if (g.trace) g.trace.frameTimes.push(dt);
    }
    if (g.firstFrameAt === null) g.firstFrameAt = now;
    lastDrawn = now;
    g.frames++; g.lastFrameId = id; g.lastAck = ack; g.lastTick = tick;
    drawnAt.push(now);
    while (drawnAt.length && drawnAt[0] < now - 1000) drawnAt.shift();
    for (const [inputId, sentAt] of pending) { // Map keeps insertion (= id) order
      if (inputId > ack && now - sentAt < PENDING_MAX_MS) break;
      pending.delete(inputId);
      if (inputId <= ack) {
        const lat = now - sentAt;
        keep(g.latencies, lat); outLatency.push(lat);
        if (g.trace) g.trace.latencies.push(lat);
      }
    }
  }

  // Pings have their own ids: an input id must stay in step with the server's acks.
  function ping() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ t: "ping", id: nextPing++, ts: performance.now() }));
    g.pings++;
  }

  function pong(msg) {
    if (typeof msg.ts !== "number") return;
    const rtt = performance.now() - msg.ts;
    if (!(rtt >= 0 && rtt < RTT_MAX_MS)) return; // not this page's clock, or far too late
    g.rtt = rtt; keep(g.rtts, rtt); outRtt.push(rtt);
  }
  setInterval(ping, PING_EVERY_MS);

  function send(msg, eventTime) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    msg.id = nextId++;
    msg.ts = eventTime || performance.now();
    pending.set(msg.id, msg.ts);
    g.inputs++;
    ws.send(JSON.stringify(msg));
  }

  function onKey(down) {
    return (e) => {
      const key = KEYS[e.code];
      if (!key) return;
      e.preventDefault();
      if (e.repeat) return; // held keys are state on the server; repeats add nothing
      send({ t: "key", key, down }, e.timeStamp);
    };
  }
  window.addEventListener("keydown", onKey(true));
  window.addEventListener("keyup", onKey(false));

  function pointerX(e) {
    const r = canvas.getBoundingClientRect();
    return Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
  }
  canvas.addEventListener("pointermove", (e) => send({ t: "pointer", x: pointerX(e), fire: false }, e.timeStamp));
  canvas.addEventListener("pointerdown", (e) => {
    canvas.focus();
    send({ t: "pointer", x: pointerX(e), fire: true }, e.timeStamp);
  });

  setInterval(() => { // report to the server
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ t: "stats", fps: g.fps, frame_ms: outFrames.slice(-1000),
                             latency_ms: outLatency.slice(-1000), rtt_ms: outRtt.slice(-1000),
                             skipped: outSkipped }));
    outFrames = []; outLatency = []; outRtt = []; outSkipped = 0;
  }, STATS_EVERY_MS);

  const fmt = (v, d = 1) => (v === null || v === undefined ? "-" : v.toFixed(d));
  setInterval(() => { // show
    const now = performance.now();
    while (drawnAt.length && drawnAt[0] < now - 1000) drawnAt.shift();
    g.fps = drawnAt.length;
    const target = g.hello ? g.hello.fps : 60, budget = g.hello ? g.hello.latency_budget_ms : 50;
    $("conn").textContent = g.connected ? "live" : "disconnected";
    $("conn").className = g.connected ? "up" : "down";
    $("fps").textContent = g.fps;
    $("fps").classList.toggle("warn", g.fps < 0.95 * target);
    $("rtt").textContent = fmt(g.rtt);
    const p95 = percentile(g.latencies, 95);
    $("lat50").textContent = fmt(percentile(g.latencies, 50));
    $("lat95").textContent = fmt(p95);
    $("lat95").classList.toggle("warn", p95 !== null && p95 > budget);
    $("frame95").textContent = fmt(percentile(g.frameTimes, 95));
    while (received.length && received[0][0] < now - 1000) received.shift();
    g.kbps = received.reduce((sum, r) => sum + r[1], 0) * 8 / 1000;
    const st = g.stream, r = g.rate;
    $("stream").textContent = st ? `${st.codec} ${st.width}x${st.height}@${st.fps}` : (g.codec || "-");
    $("kbps").textContent = fmt(g.kbps / 1000, 2);
    $("target").textContent = r && r.kbps !== null ? fmt(r.kbps / 1000, 2) : "-";
    $("reason").textContent = r ? r.reason : "-";
    $("reason").title = r ? r.detail : "";
    $("keys").textContent = `${g.keyframes} (asked ${g.keyframeRequests})`;
    const s = g.server;
    $("server").textContent = s ? `${fmt(s.fps)} fps · enc ${fmt(s.encode_ms)} ms · ` +
      `${fmt(s.bitrate_kbps / 1000)} Mbit/s · dropped ${s.dropped} · players ${s.players}` : "-";
  }, SHOW_EVERY_MS);

  connect();
  canvas.focus();
})();
