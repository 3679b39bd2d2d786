"""A replica's output read as it grows, not all of it again on every poll.

The supervisor asks each replica's agent for "the lines from N on" four times a second. Reading
the whole log to slice it cost a Docker inspect plus the full log per poll, so an agent's CPU grew
with every line a long-lived service had ever written (two idle inference replicas: ~2.5% of a
core per agent, and the engine's share on top). Instead each replica's output goes through a
``LineBuffer`` fed only with new bytes: by a thread that follows the container's log stream
(``DockerRuntime``) or from the byte offset last read of the output file (``ProcessRuntime``).

Lines are counted the way ``str.splitlines`` counts them in the whole text (``\\r`` separates
too, so a progress bar's updates are lines), but a line is only served once its newline has come:
a line half written when one poll came is never served cut short and then skipped by the next. A
last line without a newline is served once the output has ended (``close``).

Lines the caller has moved past are dropped: the supervisor asks from the count it has stored,
which only grows, so a buffer holds about one poll's worth. Asked for lines it no longer holds
(``read`` returns None), the runtime starts a new buffer and reads the output from the start once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

#: A line longer than this (in bytes) is kept to it, with a marker saying how much was cut: the
#: agent's buffer of a line still being written never grows past it (a tenant's process that
#: writes without a newline cannot fill the machine's memory).
MAX_LINE_BYTES = 16 * 1024
#: A replica's output past this many bytes (of kept lines) is dropped, after one marker line: what
#: a replica can put in the control plane's database and the agent's memory is bounded.
MAX_LOG_BYTES = 32 * 1024 * 1024

#: Where one segment ends: ``\n``, ``\r\n`` or a lone ``\r`` (``str.splitlines`` counts each as
#: one break; the others it knows are split inside a segment).
_BREAK = re.compile(rb"\r\n|\r|\n")


def _lines(segment: bytes) -> list[str]:
    """The lines of one segment (without its line break)."""
    text = segment.decode("utf-8", errors="replace")
    return text.splitlines() or [""]


def _cut_marker(cut: int) -> str:
    return f" [runner: {cut} more bytes of this line cut; lines are kept to {MAX_LINE_BYTES} bytes]"


CAPPED_MARKER = f"[runner: output past {MAX_LOG_BYTES // (1024 * 1024)} MiB dropped; the replica runs on]"


class LineBuffer:
    """Output lines from number ``base`` on, fed with bytes as they arrive. Thread-safe: one
    thread may feed while others read. The same bytes give the same lines however they are cut
    into chunks, so a buffer that reads the output again from its start numbers it the same."""

    def __init__(self, skip: int = 0) -> None:
        #: Number of the first line held; lines before it were dropped (or ``skip``ped).
        self.base = skip
        self._skip = skip  # lines still to drop as they arrive
        self._lines: list[str] = []
        self._partial = b""  # the segment being written, at most MAX_LINE_BYTES of it
        self._partial_cut = 0  # bytes of it past MAX_LINE_BYTES, dropped
        self._kept = 0  # bytes of output kept as lines so far
        self._capped = False  # MAX_LOG_BYTES reached: the rest is dropped
        self._lock = threading.Lock()
        self.closed = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            at = 0
            if self._partial.endswith(b"\r") and data.startswith(b"\n"):
                at = 1  # the second half of a \r\n cut across chunks: the \r already ended the segment
            for found in _BREAK.finditer(data, at):
                self._grow(data[at : found.start()])
                self._end_segment()
                at = found.end()
                if found.group() == b"\r" and at == len(data):
                    self._partial = b"\r"  # (a \n may follow in the next chunk)
                    return
            self._grow(data[at:])

    def _grow(self, piece: bytes) -> None:
        if self._partial == b"\r":
            self._partial = b""
        room = MAX_LINE_BYTES - len(self._partial)
        self._partial += piece[: max(room, 0)]
        self._partial_cut += max(len(piece) - max(room, 0), 0)

    def _end_segment(self) -> None:
        segment, cut = self._partial, self._partial_cut
        self._partial, self._partial_cut = b"", 0
        lines = _lines(segment)
        if cut:
            lines[-1] += _cut_marker(cut)
        self._add(lines, len(segment))

    def close(self) -> None:
        """The output has ended: a last line without a line break is a line too."""
        with self._lock:
            if self._partial not in (b"", b"\r") or self._partial_cut:
                self._end_segment()
            self._partial = b""
            self.closed = True

    def _add(self, lines: list[str], size: int) -> None:
        if self._capped:
            return
        if self._kept + size > MAX_LOG_BYTES:
            self._capped, lines = True, [CAPPED_MARKER]
        self._kept += size
        if self._skip:
            dropped = min(self._skip, len(lines))
            self._skip -= dropped
            lines = lines[dropped:]
        self._lines.extend(lines)

    def read(self, start: int) -> list[str] | None:
        """Complete lines from number ``start`` on, dropping those before it; None when lines
        before ``start`` that are wanted were dropped already (start < base)."""
        with self._lock:
            if start < self.base:
                return None
            drop = min(start - self.base, len(self._lines))
            if drop:
                del self._lines[:drop]
                self.base += drop
            return self._lines[start - self.base :]


class StreamTail:
    """A daemon thread feeding a ``LineBuffer`` from an iterator of byte chunks (a container's
    followed log stream) until the iterator ends, which is when the output has ended."""

    def __init__(self, chunks: Callable[[], Iterable[bytes]], *, skip: int = 0, name: str = "logs") -> None:
        self.buffer = LineBuffer(skip)
        self.error: BaseException | None = None
        self._chunks = chunks
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks():
                self.buffer.feed(chunk)
        except Exception as exc:  # noqa: BLE001 - e.g. the engine restarted: the reader starts over
            self.error = exc
        finally:
            self.buffer.close()

    @property
    def failed(self) -> bool:
        """The stream broke off before the output ended: what it holds may be incomplete."""
        return self.error is not None
