"""The messages between the control plane and a node's agent, and the keys that make them safe.

Ray lets any holder of the cluster token call any named actor, and a reply travelling through Ray
is unpickled by whoever reads it: an actor that answers with a crafted pickle runs its code in the
reader. So neither side takes the other's word through Ray:

- A **command** is made by the control plane for one node: its operation and arguments are
  sealed to the key that node made at join (HPKE, RFC 9180: X25519, HKDF-SHA256,
  ChaCha20-Poly1305), and the sealed bytes are signed with the control plane's Ed25519 key. An
  agent acts only on a command it can verify, that names its own node, that has not expired and
  whose nonce it has not seen. A command read by anyone else is ciphertext: a tenant's environment
  never reaches a machine that claims another node's name.
- A **reply** is JSON (never a pickle), signed with the node's own Ed25519 key over the command's
  nonce. The control plane reads it as raw bytes and believes it only if that node's key signed it
  for that command: an actor registered under another node's name cannot answer for it.

Pure: keys and bytes in, keys and bytes out. Where keys live, and how bytes travel, is the
callers' business (``runner.node_keys``, ``runner.agent``, ``runner.supervisor.agent_link``).
"""

from __future__ import annotations

import json
import pickle
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
SIGNATURE_BYTES = 64
#: How long a command may be acted on after it was made. Long enough for a busy actor's queue and
#: for clocks a few minutes apart; its nonce is remembered for as long.
COMMAND_TTL_S = 300.0
#: What an agent may be asked to do. Anything else is refused like a forged command.
OPS = frozenset({"info", "start", "status", "wait", "logs", "stop", "remove", "list", "prepare_challenge", "challenge"})


class WireError(Exception):
    """A command or reply that must not be believed; the message says why (for the audit log)."""


class Refused(WireError):
    """A genuine reply, signed by the node, saying it did not act on the command (and why)."""


def _raw(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_raw(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@dataclass(frozen=True)
class NodePublicKeys:
    """What the control plane keeps of a node's keys (hex): the one that signs its replies and
    the one commands are sealed to."""

    signing: str
    sealing: str

    def to_dict(self) -> dict[str, str]:
        return {"signing": self.signing, "sealing": self.sealing}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodePublicKeys:
        try:
            keys = cls(signing=str(data["signing"]), sealing=str(data["sealing"]))
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(keys.signing))
            X25519PublicKey.from_public_bytes(bytes.fromhex(keys.sealing))
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"node_keys: not a pair of 32-byte public keys in hex ({exc})") from None
        return keys


@dataclass(frozen=True)
class NodeKeys:
    """The keys a node makes on its own machine at join; their private halves never leave it."""

    signing: Ed25519PrivateKey
    sealing: X25519PrivateKey

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def public(self) -> NodePublicKeys:
        return NodePublicKeys(
            signing=_raw(self.signing.public_key()).hex(), sealing=_raw(self.sealing.public_key()).hex()
        )

    def to_json(self) -> str:
        return json.dumps({"signing": _private_raw(self.signing).hex(), "sealing": _private_raw(self.sealing).hex()})

    @classmethod
    def from_json(cls, text: str) -> NodeKeys:
        data = json.loads(text)
        return cls(
            Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["signing"])),
            X25519PrivateKey.from_private_bytes(bytes.fromhex(data["sealing"])),
        )


@dataclass(frozen=True)
class ControlKey:
    """The control plane's signing key: only the operator's machine holds it."""

    key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> ControlKey:
        return cls(Ed25519PrivateKey.generate())

    def public_hex(self) -> str:
        return _raw(self.key.public_key()).hex()

    def to_hex(self) -> str:
        return _private_raw(self.key).hex()

    @classmethod
    def from_hex(cls, text: str) -> ControlKey:
        return cls(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text.strip())))


@dataclass(frozen=True)
class Command:
    """A command an agent verified: for its node, in time, seen once."""

    node: str
    op: str
    args: tuple[Any, ...]
    nonce: str
    expires_at: float


def _context(kind: str, node: str) -> bytes:
    return f"runner-{kind}:{node}".encode()


def make_command(
    control: ControlKey, node: str, node_keys: NodePublicKeys, op: str, args: tuple[Any, ...], *, now: float
) -> tuple[bytes, str]:
    """Seal and sign one command for ``node``; returns its bytes and its nonce (which the reply
    must carry back)."""
    if op not in OPS:
        raise ValueError(f"no agent operation {op!r}")
    nonce = secrets.token_hex(16)
    body = pickle.dumps({"node": node, "op": op, "args": args, "nonce": nonce, "expires_at": now + COMMAND_TTL_S})
    sealing = X25519PublicKey.from_public_bytes(bytes.fromhex(node_keys.sealing))
    sealed = SUITE.encrypt(body, sealing, info=_context("command", node))
    return control.key.sign(sealed) + sealed, nonce


@dataclass
class NonceBook:
    """Nonces of commands already acted on, each kept until its command would have expired."""

    seen: dict[str, float] = field(default_factory=dict)

    def first_time(self, nonce: str, expires_at: float, now: float) -> bool:
        for old in [n for n, until in self.seen.items() if until < now]:
            del self.seen[old]
        if nonce in self.seen:
            return False
        self.seen[nonce] = expires_at
        return True


def open_command(
    data: bytes, *, node: str, control_public: str, keys: NodeKeys, nonces: NonceBook, now: float
) -> Command:
    """Verify a command before anything in it is read; raises ``WireError`` saying why not.

    The signature is checked over the sealed bytes first, so nothing unsigned is ever decrypted or
    unpickled: only the control plane's own bytes are."""
    if not isinstance(data, bytes) or len(data) <= SIGNATURE_BYTES:
        raise WireError("not a command")
    signature, sealed = data[:SIGNATURE_BYTES], data[SIGNATURE_BYTES:]
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(control_public)).verify(signature, sealed)
    except InvalidSignature:
        raise WireError("not signed by the control plane") from None
    try:
        body = pickle.loads(SUITE.decrypt(sealed, keys.sealing, info=_context("command", node)))
    except InvalidTag:
        raise WireError("sealed for another node") from None
    command = Command(
        node=body["node"], op=body["op"], args=tuple(body["args"]), nonce=body["nonce"], expires_at=body["expires_at"]
    )
    if command.node != node:
        raise WireError(f"for node {command.node}, not this one")
    if command.op not in OPS:
        raise WireError(f"no operation {command.op!r}")
    if command.expires_at < now:
        raise WireError("expired")
    if not nonces.first_time(command.nonce, command.expires_at, now):
        raise WireError("replayed")
    return command


def make_reply(keys: NodeKeys, *, node: str, nonce: str, result: Any = None, refused: str = "") -> bytes:
    """A signed JSON answer to the command ``nonce`` (``refused``: why it was not acted on)."""
    payload = json.dumps({"node": node, "nonce": nonce, "result": result, "refused": refused}).encode()
    return keys.signing.sign(payload) + payload


def open_reply(data: bytes, *, node: str, nonce: str, node_keys: NodePublicKeys) -> Any:
    """The result of a reply, if ``node``'s own key signed it for the command ``nonce``; raises
    ``WireError`` for anything else (``Refused`` when the node itself declined it)."""
    if not isinstance(data, bytes) or len(data) <= SIGNATURE_BYTES:
        raise WireError("not a reply")
    signature, payload = data[:SIGNATURE_BYTES], data[SIGNATURE_BYTES:]
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(node_keys.signing)).verify(signature, payload)
    except InvalidSignature:
        raise WireError(f"not signed by node {node}'s key") from None
    try:
        body = json.loads(payload)
    except ValueError:
        raise WireError("not JSON") from None
    if not isinstance(body, dict) or body.get("node") != node or body.get("nonce") != nonce:
        raise WireError("an answer to another command")
    if body.get("refused"):
        raise Refused(f"refused: {body['refused']}")
    return body.get("result")
