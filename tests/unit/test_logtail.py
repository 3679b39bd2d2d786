"""The incremental line reader under the runtimes' ``logs``: whatever the chunking of the output
and whenever the polls come, every line is served exactly once, whole, and counted as
``str.splitlines`` counts the whole text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.runtime.logtail import LineBuffer, StreamTail
from tests.conftest import wait_for

# Printable text with both line breaks and multi-byte characters (cut across chunks below).
TEXT = st.text(alphabet=st.sampled_from(list("ab é€\n\r")), max_size=200)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@given(TEXT, st.lists(st.integers(min_value=0, max_value=400), max_size=12), st.data())
def test_polling_while_fed_serves_each_line_once_and_whole(text: str, cuts: list[int], data: st.DataObject) -> None:
    buffer = LineBuffer()
    served: list[str] = []
    for chunk in chunked(text.encode(), cuts):
        buffer.feed(chunk)
        if data.draw(st.booleans()):  # a poll now, from the count the poller has stored
            got = buffer.read(len(served))
            assert got is not None
            served.extend(got)
    buffer.close()
    served.extend(buffer.read(len(served)) or [])
    assert served == text.splitlines()


def test_a_line_is_served_only_once_its_newline_came() -> None:
    buffer = LineBuffer()
    buffer.feed(b"first\nhalf a li")
    assert buffer.read(0) == ["first"]
    buffer.feed(b"ne\n")
    assert buffer.read(1) == ["half a line"]


def test_a_last_line_without_newline_counts_once_the_output_ended() -> None:
    buffer = LineBuffer()
    buffer.feed(b"one\ntwo")
    assert buffer.read(0) == ["one"]
    buffer.close()
    assert buffer.read(1) == ["two"]


def test_progress_bar_updates_separated_by_carriage_returns_are_lines() -> None:
    buffer = LineBuffer()
    buffer.feed(b"step 1\rstep 2\rstep 3\r\ndone\n")
    assert buffer.read(0) == ["step 1", "step 2", "step 3", "done"]


def test_lines_read_past_are_dropped_and_asking_for_them_again_says_so() -> None:
    buffer = LineBuffer()
    buffer.feed(b"a\nb\nc\n")
    assert buffer.read(2) == ["c"]
    assert buffer.base == 2
    assert buffer.read(2) == ["c"]  # the same poll again (its answer was not stored): served again
    assert buffer.read(1) is None  # dropped: the runtime reads the output from its start again


def test_skip_drops_the_lines_the_reader_already_has() -> None:
    buffer = LineBuffer(skip=2)
    buffer.feed(b"a\nb")
    assert buffer.read(2) == []
    buffer.feed(b"\nc\nd\n")
    assert buffer.read(2) == ["c", "d"]


def test_stream_tail_feeds_until_the_stream_ends_and_records_a_break() -> None:
    tail = StreamTail(lambda: iter([b"x\ny", b"\nz"]))
    wait_for(lambda: tail.buffer.closed, timeout_s=5, what="the stream to end")
    assert not tail.failed
    assert tail.buffer.read(0) == ["x", "y", "z"]

    def broken() -> object:
        yield b"partial\n"
        raise ConnectionError("engine restarted")

    tail = StreamTail(broken)  # type: ignore[arg-type]
    wait_for(lambda: tail.buffer.closed, timeout_s=5, what="the stream to end")
    assert tail.failed
    assert tail.buffer.read(0) == ["partial"]


# -- limits: what a replica's output can cost the agent and the control plane ----------------------
def test_a_line_without_end_is_kept_to_its_limit_and_says_how_much_was_cut() -> None:
    from runner.runtime.logtail import MAX_LINE_BYTES

    buffer = LineBuffer()
    for _ in range(64):  # 64 MiB of one line, never a newline: the attack on the agent's memory
        buffer.feed(b"x" * (1024 * 1024))
        assert len(buffer._partial) <= MAX_LINE_BYTES
    buffer.feed(b"\nnext\n")
    long, after = buffer.read(0) or []
    assert long.startswith("x" * MAX_LINE_BYTES) and after == "next"
    assert f"[runner: {64 * 1024 * 1024 - MAX_LINE_BYTES} more bytes of this line cut" in long


def test_output_past_the_log_limit_is_dropped_after_one_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.runtime.logtail as logtail

    monkeypatch.setattr(logtail, "MAX_LOG_BYTES", 100)
    buffer = LineBuffer()
    for i in range(50):
        buffer.feed(f"line {i:03d}\n".encode())
    lines = buffer.read(0) or []
    assert lines[:12] == [f"line {i:03d}" for i in range(12)]  # 12 lines of 8 bytes fit in 100
    assert lines[12] == logtail.CAPPED_MARKER and len(lines) == 13
    buffer.feed(b"more\n")
    buffer.close()
    assert buffer.read(13) == []


@given(st.lists(st.integers(min_value=0, max_value=70_000), max_size=8))
def test_the_same_output_gives_the_same_lines_however_it_is_chunked(cuts: list[int]) -> None:
    """A buffer that reads the output again from its start (after a broken stream, or the final
    read) must number its lines as the first one did, limits and markers included."""
    data = b"short\r\n" + b"y" * 40_000 + b"\r" + "é".encode() * 9000 + b"\nend"
    whole = LineBuffer()
    whole.feed(data)
    whole.close()
    pieces = LineBuffer()
    for chunk in chunked(data, cuts):
        pieces.feed(chunk)
    pieces.close()
    assert pieces.read(0) == whole.read(0)
    assert len(whole.read(0) or []) == 4
