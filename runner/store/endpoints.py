"""The endpoints inside a network that the operator lets the control plane open for tenants.

Each change is written with its audit entry in one transaction: which internal address the
control plane may reach on a tenant's behalf is a decision the operator can be asked about.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from runner.core.egress import canonical_endpoint
from runner.core.errors import NotFoundError, UserError
from runner.store.auditlog import AuditStore
from runner.store.models import AllowedEndpoint


def _canonical(url: str) -> str:
    try:
        return canonical_endpoint(url)
    except ValueError as exc:
        raise UserError(f"endpoint: {exc}. To fix: give scheme://host:port, e.g. http://10.0.0.5:9000") from None


class EndpointStore(AuditStore):
    def allow_endpoint(self, url: str, *, note: str = "", by: str = "operator") -> AllowedEndpoint:
        """Let the control plane open ``url``'s endpoint for tenants (idempotent; audited)."""
        endpoint = _canonical(url)
        with self.session() as s:
            row = s.get(AllowedEndpoint, endpoint)
            if row is None:
                row = AllowedEndpoint(endpoint=endpoint, note=note, allowed_at=time.time())
                s.add(row)
                self.append_audit(s, "endpoint.allow", {"endpoint": endpoint, "note": note, "by": by})
            return row

    def remove_endpoint(self, url: str, *, by: str = "operator") -> AllowedEndpoint:
        endpoint = _canonical(url)
        with self.session() as s:
            row = s.get(AllowedEndpoint, endpoint)
            if row is None:
                raise NotFoundError(f"{endpoint} is not allowed. To fix: runner admin endpoint ls")
            s.delete(row)
            self.append_audit(s, "endpoint.remove", {"endpoint": endpoint, "by": by})
            return row

    def allowed_endpoints(self) -> list[AllowedEndpoint]:
        with self.session() as s:
            return list(s.scalars(select(AllowedEndpoint).order_by(AllowedEndpoint.endpoint)))
