"""Where the keys of ``runner.core.agent_wire`` live, and the nonces a node's agent acted on:
files only their owner reads.

A node's keys are made on its machine when it first joins and kept across re-joins (they are its
identity: the control plane refuses a re-join that brings other keys). The control plane's key is
made once per home, beside its database.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from runner.core.agent_wire import ControlKey, NodeKeys, NonceBook
from runner.store_credentials import write_private

#: The Ray node's environment (its workers inherit it) names the node's key file and gives the
#: control plane's public key, so the node's agent can open commands and sign replies.
NODE_KEYS_ENV = "RUNNER_NODE_KEYS"
CONTROL_PUBLIC_KEY_ENV = "RUNNER_CONTROL_PUBLIC_KEY"

#: A provider's machine keeps its keys here, in its runner home (``runner node join``).
NODE_KEYS_FILE = "node-keys.json"


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's text, written first from ``make`` if there is none. The whole file appears at
    once (written aside, then linked), and of two processes making it at once one wins and both
    read the winner's: a crash never leaves half a key, a race never two."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text()


def node_keys(path: Path) -> NodeKeys:
    """This node's keys, made (owner-only) on first use."""
    return NodeKeys.from_json(_read_or_create(path, lambda: NodeKeys.generate().to_json()))


def control_key(path: Path) -> ControlKey:
    """The control plane's signing key, made (owner-only) on first use."""
    return ControlKey.from_hex(_read_or_create(path, lambda: ControlKey.generate().to_hex()))


def nonce_book_path(keys_path: Path) -> Path:
    """Where a node's agent keeps the nonces it acted on, beside the node's keys."""
    return keys_path.with_name(f"{keys_path.stem}-nonces.json")


def load_nonce_book(path: Path) -> NonceBook:
    """The nonces an earlier agent process of this node acted on (none if it kept none): a
    restarted agent still refuses a command replayed from before it restarted."""
    try:
        seen = json.loads(path.read_text())
        return NonceBook({str(nonce): float(until) for nonce, until in seen.items()})
    except (OSError, ValueError, TypeError, AttributeError):  # none kept, or not a book: start one
        return NonceBook()


def save_nonce_book(path: Path, book: NonceBook) -> None:
    """Keep ``book`` owner-only, on disk before the agent acts, replaced in one step."""
    write_private(path, book.seen)
