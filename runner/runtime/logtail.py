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

import threading
from collections.abc import Callable, Iterable


def _lines(segment: bytes) -> list[str]:
    """The lines of one newline-terminated segment (without its newline)."""
    text = segment.decode("utf-8", errors="replace")
    return text.splitlines() or [""]


class LineBuffer:
    """Output lines from number ``base`` on, fed with bytes as they arrive. Thread-safe: one
    thread may feed while others read."""

    def __init__(self, skip: int = 0) -> None:
        #: Number of the first line held; lines before it were dropped (or ``skip``ped).
        self.base = skip
        self._skip = skip  # lines still to drop as they arrive
        self._lines: list[str] = []
        self._partial = b""
        self._lock = threading.Lock()
        self.closed = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            *complete, self._partial = (self._partial + data).split(b"\n")
            for segment in complete:
                self._add(_lines(segment))

    def close(self) -> None:
        """The output has ended: a last line without a newline is a line too."""
        with self._lock:
            if self._partial:
                self._add(_lines(self._partial))
                self._partial = b""
            self.closed = True

    def _add(self, lines: list[str]) -> None:
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
