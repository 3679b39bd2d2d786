"""Tenants' secrets as the database keeps them: sealed values, by tenant and name.

Setting and removing one is audited by name only; the value is sealed before it gets here
(``runner.secret_box``) and never logged.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from runner.core.errors import NotFoundError
from runner.store.auditlog import AuditStore
from runner.store.models import TenantSecret


class SecretStore(AuditStore):
    def put_secret(self, tenant_id: str, name: str, sealed: str, *, by: str = "tenant") -> TenantSecret:
        with self.session() as s:
            row = s.get(TenantSecret, (tenant_id, name))
            if row is None:
                row = TenantSecret(tenant_id=tenant_id, name=name)
                s.add(row)
            row.sealed, row.updated_at = sealed, time.time()
            self.append_audit(s, "secret.set", {"tenant": tenant_id, "name": name, "by": by})
            return row

    def delete_secret(self, tenant_id: str, name: str, *, by: str = "tenant") -> None:
        with self.session() as s:
            row = s.get(TenantSecret, (tenant_id, name))
            if row is None:
                raise NotFoundError(f"no secret {name!r}. To fix: runner secrets ls")
            s.delete(row)
            self.append_audit(s, "secret.delete", {"tenant": tenant_id, "name": name, "by": by})

    def secrets_of(self, tenant_id: str) -> list[TenantSecret]:
        with self.session() as s:
            return list(
                s.scalars(select(TenantSecret).where(TenantSecret.tenant_id == tenant_id).order_by(TenantSecret.name))
            )

    def sealed_secrets(self, tenant_id: str, names: set[str]) -> dict[str, str]:
        """Name -> sealed value of those of ``names`` the tenant has (a missing one is left out)."""
        return {row.name: row.sealed for row in self.secrets_of(tenant_id) if row.name in names}
