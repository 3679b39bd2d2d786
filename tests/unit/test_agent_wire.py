"""The wire between the control plane and node agents, attacked on its own: every way to make an
agent act on a command the control plane did not make for it, and every way to answer for a node
without its key, is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from runner.core.agent_wire import (
    COMMAND_TTL_S,
    ControlKey,
    NodeKeys,
    NonceBook,
    Refused,
    WireError,
    make_command,
    make_reply,
    open_command,
    open_reply,
)

NOW = 1_000_000.0
CONTROL = ControlKey.generate()
VICTIM, OTHER = NodeKeys.generate(), NodeKeys.generate()


def opened(
    data: bytes, *, node: str = "vic", keys: NodeKeys = VICTIM, now: float = NOW, nonces: NonceBook | None = None
):
    return open_command(
        data, node=node, control_public=CONTROL.public_hex(), keys=keys, nonces=nonces or NonceBook(), now=now
    )


def test_a_command_made_for_the_node_is_opened_once() -> None:
    data, nonce = make_command(CONTROL, "vic", VICTIM.public(), "logs", ("w-1/0", 3, False), now=NOW)
    book = NonceBook()
    command = opened(data, nonces=book)
    assert (command.op, command.args, command.nonce) == ("logs", ("w-1/0", 3, False), nonce)
    with pytest.raises(WireError, match="replayed"):
        opened(data, nonces=book)


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (lambda: make_command(ControlKey.generate(), "vic", VICTIM.public(), "list", (), now=NOW)[0], "not signed"),
        (lambda: make_command(CONTROL, "vic", OTHER.public(), "list", (), now=NOW)[0], "sealed for another node"),
        (lambda: make_command(CONTROL, "vic", VICTIM.public(), "list", (), now=NOW - COMMAND_TTL_S - 1)[0], "expired"),
        (lambda: b"\0" * 64 + pickle.dumps({"op": "list"}), "not signed"),
        (lambda: b"short", "not a command"),
    ],
    ids=["own-key", "sealed-elsewhere", "stale", "unsigned-pickle", "garbage"],
)
def test_commands_the_control_plane_did_not_make_for_this_node_are_refused(attack, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        opened(attack())


def test_a_command_for_another_node_is_refused_even_with_that_nodes_keys_leaked() -> None:
    """A command made for node ``other`` and sealed to keys the victim also holds (as if the
    victim's keys were reused) still names ``other``: the victim does not act on it."""
    data, _ = make_command(CONTROL, "other", VICTIM.public(), "list", (), now=NOW)
    with pytest.raises(WireError):
        opened(data)


def test_the_nonce_book_forgets_only_what_has_expired() -> None:
    book = NonceBook()
    assert book.first_time("a", NOW + 10, NOW)
    assert not book.first_time("a", NOW + 10, NOW + 5)
    assert book.first_time("b", NOW + 100, NOW + 11) and "a" not in book.seen


def test_only_the_nodes_key_answers_for_it_and_only_for_that_command() -> None:
    reply = make_reply(VICTIM, node="vic", nonce="n1", result=[1, 2])
    assert open_reply(reply, node="vic", nonce="n1", node_keys=VICTIM.public()) == [1, 2]
    forged = make_reply(OTHER, node="vic", nonce="n1", result=[])
    with pytest.raises(WireError, match="not signed by node vic"):
        open_reply(forged, node="vic", nonce="n1", node_keys=VICTIM.public())
    with pytest.raises(WireError, match="another command"):  # a genuine answer, replayed for another call
        open_reply(reply, node="vic", nonce="n2", node_keys=VICTIM.public())
    tampered = reply[:-2] + b"9]"
    with pytest.raises(WireError):
        open_reply(tampered, node="vic", nonce="n1", node_keys=VICTIM.public())
    refusal = make_reply(VICTIM, node="vic", nonce="n1", refused="expired")
    with pytest.raises(Refused, match="expired"):
        open_reply(refusal, node="vic", nonce="n1", node_keys=VICTIM.public())


def test_a_nonce_book_kept_on_disk_refuses_a_replay_after_a_restart(tmp_path: Path) -> None:
    from runner.node_keys import load_nonce_book, nonce_book_path, save_nonce_book

    command, _nonce = make_command(CONTROL, "vic", VICTIM.public(), "list", (), now=NOW)
    path = nonce_book_path(tmp_path / "keys.json")
    book = load_nonce_book(path)  # nothing kept yet: an empty book
    opened(command, nonces=book)
    save_nonce_book(path, book)
    assert path.stat().st_mode & 0o077 == 0  # owner-only
    with pytest.raises(WireError, match="replayed"):  # the agent restarted: a new book, read from disk
        opened(command, nonces=load_nonce_book(path), now=NOW + 1)
    path.write_text("{not json")  # a damaged file costs the replay window, not the node
    assert load_nonce_book(path).seen == {}
