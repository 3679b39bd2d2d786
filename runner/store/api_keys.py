"""API keys: made, looked up, listed, revoked and rotated. Only a key's hash is ever kept.

A key is named in listings by the start of its hash (``ApiKey.key_id``), never by the key. A
revoked key is refused by ``principal_for_key``; the control plane's and the gateway's caches
of keys are dropped when an access decision is audited (``access_epoch``: the sequence number
of the newest such entry, which the gateway reads with its routes every half second), so a
revocation, a rotation or a tenant's KYC change takes hold everywhere within a second.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runner.core.errors import AuthError, NotFoundError
from runner.store.auditlog import AuditStore
from runner.store.models import KEY_ID_CHARS, ApiKey, AuditRow, Tenant

#: Audited decisions after which a cached answer about a key may be wrong: a key revoked or
#: rotated away, a tenant's KYC or country changed (``tenant.update``).
ACCESS_KINDS = ("tenant.key.revoke", "tenant.key.rotate", "tenant.update")


def hash_key(secret: str) -> str:
    """Keys and tokens are stored only as their SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id(api_key: str) -> str:
    """The name a key is listed and revoked by: the start of its hash (``ApiKey.key_id``)."""
    return hash_key(api_key)[:KEY_ID_CHARS]


@dataclass(frozen=True)
class Principal:
    """Who an API key speaks for: a tenant, or the operator."""

    tenant_id: str | None
    operator: bool = False


class ApiKeyStore(AuditStore):
    def create_api_key(self, tenant_id: str) -> str:
        """A new key for the tenant (created, KYC pending, if new); only its hash is stored."""
        api_key = "rk_" + secrets.token_urlsafe(32)
        with self.session() as s:
            if s.get(Tenant, tenant_id) is None:
                s.add(Tenant(id=tenant_id))
                s.flush()
            s.add(ApiKey(key_hash=hash_key(api_key), tenant_id=tenant_id))
        return api_key

    def create_operator_key(self) -> str:
        """A key for the network's operator: admin routes only, no tenant."""
        api_key = "rk_op_" + secrets.token_urlsafe(32)
        with self.session() as s:
            s.add(ApiKey(key_hash=hash_key(api_key), tenant_id=None, operator=True))
        return api_key

    def principal_for_key(self, api_key: str) -> Principal:
        with self.session() as s:
            row = s.get(ApiKey, hash_key(api_key))
            if row is None:
                raise AuthError("invalid API key. To fix: use the key in $RUNNER_HOME/api-key")
            if row.revoked_at is not None:
                raise AuthError(
                    f"API key {row.key_id} was revoked. To fix: use a current key (runner keys ls; the operator: "
                    "runner admin tenant key NAME)"
                )
            return Principal(tenant_id=row.tenant_id, operator=row.operator)

    def tenant_for_key(self, api_key: str) -> str:
        principal = self.principal_for_key(api_key)
        if principal.tenant_id is None:
            raise AuthError("this is the operator's key; tenant routes need a tenant's key ($RUNNER_HOME/api-key)")
        return principal.tenant_id

    def api_keys(self, tenant_id: str) -> list[ApiKey]:
        """The tenant's keys, oldest first, revoked ones included (with when)."""
        with self.session() as s:
            return list(s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)))

    def revoke_api_key(self, tenant_id: str, key_id: str, *, by: str) -> ApiKey:
        """Revoke the tenant's key named ``key_id`` (idempotent; audited the first time)."""
        with self.session() as s:
            row = self._tenant_key(s, tenant_id, key_id)
            if row.revoked_at is None:
                row.revoked_at = time.time()
                self.append_audit(s, "tenant.key.revoke", {"tenant": tenant_id, "key": row.key_id, "by": by})
            return row

    def rotate_api_key(self, tenant_id: str, key_id: str, *, by: str) -> tuple[str, ApiKey]:
        """A new key for the tenant and the one named ``key_id`` revoked, in one transaction:
        there is never a moment with both or neither. Returns the new key and its row."""
        api_key = "rk_" + secrets.token_urlsafe(32)
        with self.session() as s:
            old = self._tenant_key(s, tenant_id, key_id)
            if old.revoked_at is not None:
                raise AuthError(f"API key {old.key_id} is already revoked: nothing to rotate. To fix: runner keys ls")
            old.revoked_at = time.time()
            new = ApiKey(key_hash=hash_key(api_key), tenant_id=tenant_id)
            s.add(new)
            self.append_audit(
                s, "tenant.key.rotate", {"tenant": tenant_id, "key": old.key_id, "new_key": new.key_id, "by": by}
            )
            return api_key, new

    def access_epoch(self) -> int:
        """The sequence number of the newest audited access decision (``ACCESS_KINDS``); 0 if none.
        A cache of keys taken before it changed may hold a key or a tenant that is refused now."""
        with self.session() as s:
            return int(s.scalar(select(func.max(AuditRow.seq)).where(AuditRow.kind.in_(ACCESS_KINDS))) or 0)

    @staticmethod
    def _tenant_key(s: Session, tenant_id: str, key_id: str) -> ApiKey:
        """The tenant's key whose hash starts with ``key_id`` (another tenant's is not found)."""
        if len(key_id) != KEY_ID_CHARS or not all(c in "0123456789abcdef" for c in key_id):
            raise NotFoundError(f"no API key {key_id!r}: a key is named by {KEY_ID_CHARS} hex digits (runner keys ls)")
        row = s.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.key_hash.startswith(key_id)))
        if row is None:
            raise NotFoundError(f"no API key {key_id} of tenant {tenant_id}. To fix: runner keys ls")
        return row
