"""Tenants, providers, join tokens, the node registry, uptime and checks.

Every decision an operator or the network makes about a party or a node (KYC, a token redeemed,
a node admitted, suspended, drained, offboarded) is written with its audit entry in the same
transaction, so the audit log and the tables can never tell different stories.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from runner.core.approval import ApprovedMachine
from runner.core.errors import AuthError, ConflictError, NotFoundError, UserError
from runner.core.policy import KYC, NodeState
from runner.store.api_keys import hash_key
from runner.store.auditlog import AuditStore
from runner.store.models import Check, JoinToken, NodeRecord, Provider, Tenant, UptimeDay

#: Which node state may follow which (suspended nodes go back to active after review).
NODE_MOVES: dict[NodeState, frozenset[NodeState]] = {
    NodeState.PENDING: frozenset({NodeState.VERIFIED, NodeState.OFFBOARDED}),
    NodeState.VERIFIED: frozenset({NodeState.ACTIVE, NodeState.SUSPENDED, NodeState.DRAINING, NodeState.OFFBOARDED}),
    NodeState.ACTIVE: frozenset({NodeState.DRAINING, NodeState.SUSPENDED, NodeState.OFFBOARDED}),
    NodeState.DRAINING: frozenset({NodeState.OFFBOARDED, NodeState.ACTIVE, NodeState.SUSPENDED}),
    NodeState.SUSPENDED: frozenset({NodeState.ACTIVE, NodeState.DRAINING, NodeState.OFFBOARDED}),
    NodeState.OFFBOARDED: frozenset({NodeState.PENDING}),
}


def _kyc(value: str) -> KYC:
    try:
        return KYC(value)
    except ValueError:
        raise UserError(f"unknown KYC status {value!r}; use one of: {', '.join(k.value for k in KYC)}") from None


class PartiesStore(AuditStore):
    # -- tenants -------------------------------------------------------------------------------------
    def add_tenant(
        self,
        tenant_id: str,
        *,
        country: str,
        kyc: KYC = KYC.PENDING,
        budget_micros: int | None = None,
        by: str = "operator",
    ) -> Tenant:
        row = Tenant(id=tenant_id, country=country.upper(), kyc=kyc.value, budget_micros=budget_micros)
        try:
            with self.session() as s:
                s.add(row)
                s.flush()
                self.append_audit(
                    s,
                    "tenant.add",
                    {
                        "tenant": tenant_id,
                        "country": row.country,
                        "kyc": row.kyc,
                        "budget_micros": budget_micros,
                        "by": by,
                    },
                )
        except IntegrityError:
            raise ConflictError(
                f"tenant {tenant_id!r} already exists. To fix: runner admin tenant kyc/budget"
            ) from None
        return row

    def get_tenant(self, tenant_id: str) -> Tenant:
        with self.session() as s:
            row = s.get(Tenant, tenant_id)
            if row is None:
                raise NotFoundError(
                    f"no tenant {tenant_id!r}. To fix: runner admin tenant add {tenant_id} --country XX"
                )
            return row

    def list_tenants(self) -> list[Tenant]:
        with self.session() as s:
            return list(s.scalars(select(Tenant).order_by(Tenant.id)))

    def set_tenant(self, tenant_id: str, *, by: str = "operator", **fields: Any) -> Tenant:
        """Change KYC (``kyc``), ``country`` or ``budget_micros``; audited."""
        if "kyc" in fields:
            fields["kyc"] = _kyc(str(fields["kyc"])).value
        with self.session() as s:
            row = s.get(Tenant, tenant_id)
            if row is None:
                raise NotFoundError(f"no tenant {tenant_id!r}")
            for name, value in fields.items():
                setattr(row, name, value)
            self.append_audit(s, "tenant.update", {"tenant": tenant_id, **fields, "by": by})
            return row

    # -- providers -----------------------------------------------------------------------------------
    def add_provider(self, provider_id: str, *, country: str, kyc: KYC = KYC.PENDING, by: str = "operator") -> Provider:
        row = Provider(id=provider_id, country=country.upper(), kyc=kyc.value)
        try:
            with self.session() as s:
                s.add(row)
                s.flush()
                self.append_audit(
                    s, "provider.add", {"provider": provider_id, "country": row.country, "kyc": row.kyc, "by": by}
                )
        except IntegrityError:
            raise ConflictError(f"provider {provider_id!r} already exists") from None
        return row

    def get_provider(self, provider_id: str) -> Provider:
        with self.session() as s:
            row = s.get(Provider, provider_id)
            if row is None:
                raise NotFoundError(
                    f"no provider {provider_id!r}. To fix: runner admin provider add {provider_id} --country XX"
                )
            return row

    def list_providers(self) -> list[Provider]:
        with self.session() as s:
            return list(s.scalars(select(Provider).order_by(Provider.id)))

    def set_provider_kyc(self, provider_id: str, kyc: str, *, by: str = "operator") -> Provider:
        status = _kyc(kyc)
        with self.session() as s:
            row = s.get(Provider, provider_id)
            if row is None:
                raise NotFoundError(f"no provider {provider_id!r}")
            row.kyc = status.value
            self.append_audit(s, "provider.kyc", {"provider": provider_id, "kyc": status.value, "by": by})
            return row

    # -- join tokens -----------------------------------------------------------------------------------
    def issue_join_token(
        self, provider_id: str, *, ttl_s: float, approved: ApprovedMachine, by: str = "operator"
    ) -> str:
        """A single-use token that lets one machine of ``provider_id`` join within ``ttl_s``, as
        the machine ``approved`` describes and nothing more."""
        self.get_provider(provider_id)
        token = "jt_" + secrets.token_urlsafe(24)
        facts = approved.to_dict()
        with self.session() as s:
            s.add(
                JoinToken(
                    token_hash=hash_key(token), provider_id=provider_id, expires_at=time.time() + ttl_s, approved=facts
                )
            )
            self.append_audit(
                s,
                "token.issue",
                {"provider": provider_id, "ttl_s": ttl_s, "by": by, "token_sha256": hash_key(token), "approved": facts},
            )
        return token

    def redeem_join_token(self, token: str, *, provider_id: str, node: str) -> ApprovedMachine:
        """Use a token for ``node`` of ``provider_id``, once; what it approved for the machine.
        AuthError says which rule it broke."""
        digest = hash_key(token)
        now = time.time()
        with self.session() as s:
            row = s.get(JoinToken, digest)
            if row is None:
                raise AuthError(
                    "unknown join token. To fix: ask the operator for one (runner admin token issue PROVIDER)"
                )
            if row.provider_id != provider_id:
                raise AuthError(f"this join token belongs to another provider, not {provider_id!r}")
            if row.used_at is not None:
                raise AuthError(f"this join token was already used (by node {row.node}); tokens are single use")
            if row.expires_at < now:
                raise AuthError("this join token has expired. To fix: ask the operator for a new one")
            if row.approved is None:
                raise AuthError(
                    "this join token approves no machine (issued before tokens named one). To fix: ask the "
                    "operator for a new one"
                )
            taken = s.execute(
                update(JoinToken)
                .where(JoinToken.token_hash == digest, JoinToken.used_at.is_(None))
                .values(used_at=now, node=node)
            ).rowcount
            if taken != 1:  # a concurrent join took it between our read and our write
                raise AuthError("this join token was already used; tokens are single use")
            self.append_audit(s, "token.redeem", {"provider": provider_id, "node": node, "token_sha256": digest})
            return ApprovedMachine.from_dict(row.approved)

    # -- nodes ---------------------------------------------------------------------------------------
    def register_node(
        self, *, name: str, provider_id: str, state: NodeState, decision: dict[str, Any], **facts: Any
    ) -> NodeRecord:
        """Add a node, or register again one of the same provider (a machine that restarted and
        joins again). A suspended node cannot rejoin its way out of the suspension."""
        now = time.time()
        with self.session() as s:
            row = s.get(NodeRecord, name)
            if row is not None and row.provider_id != provider_id:
                raise ConflictError(
                    f"node name {name!r} is taken by another provider. To fix: join with another --name"
                )
            if row is not None and NodeState(row.state) is NodeState.SUSPENDED:
                raise ConflictError(
                    f"node {name!r} is suspended ({row.message}). To fix: the operator reviews it "
                    f"(runner node activate {name})"
                )
            keys = facts.get("node_keys")
            rekeyed = row is not None and row.node_keys and keys != row.node_keys
            if rekeyed and NodeState(row.state) is not NodeState.OFFBOARDED:
                raise ConflictError(
                    f"node {name!r} joined before with other keys: a node's keys are its identity. To fix: "
                    "join from the machine that holds them, or the operator offboards the node first"
                )
            previous = row.state if row is not None else None
            if row is None:
                row = NodeRecord(name=name, provider_id=provider_id, registered_at=now)
                s.add(row)
            # A machine joining again keeps its history: when it first registered, its challenge
            # failures (rejoining must not wipe a record of being slow), its uptime days and checks.
            for field_name, value in facts.items():
                setattr(row, field_name, value)
            row.state, row.state_changed_at, row.message = state.value, now, ""
            self.append_audit(
                s,
                "node.register",
                {"node": name, "provider": provider_id, "state": state.value, "previous_state": previous, **decision},
            )
            return row

    def get_node(self, name: str) -> NodeRecord:
        with self.session() as s:
            row = s.get(NodeRecord, name)
            if row is None:
                raise NotFoundError(f"no node {name!r} in the registry. To fix: runner nodes")
            return row

    def registry(self) -> list[NodeRecord]:
        with self.session() as s:
            return list(s.scalars(select(NodeRecord).order_by(NodeRecord.name)))

    def move_node(
        self, name: str, target: NodeState, message: str = "", *, by: str = "network", **fields: Any
    ) -> NodeRecord:
        """Change a node's lifecycle state (only moves ``NODE_MOVES`` allows), audited."""
        with self.session() as s:
            row = s.get(NodeRecord, name)
            if row is None:
                raise NotFoundError(f"no node {name!r}")
            current = NodeState(row.state)
            if target is current:
                return row
            if target not in NODE_MOVES[current]:
                raise UserError(f"node {name} is {current.value}; it cannot become {target.value}")
            row.state, row.state_changed_at, row.message = target.value, time.time(), message
            for field_name, value in fields.items():
                setattr(row, field_name, value)
            self.append_audit(
                s, "node.state", {"node": name, "from": current.value, "to": target.value, "message": message, "by": by}
            )
            return row

    def update_node(self, name: str, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(NodeRecord, name)
            if row is not None:
                for field_name, value in fields.items():
                    setattr(row, field_name, value)

    # -- uptime and checks -----------------------------------------------------------------------------
    def add_uptime(self, node: str, day: str, observed_s: float, online_s: float) -> UptimeDay:
        with self.session() as s:
            row = s.get(UptimeDay, (node, day))
            if row is None:
                row = UptimeDay(node=node, day=day, observed_s=0.0, online_s=0.0)
                s.add(row)
            row.observed_s += observed_s
            row.online_s += online_s
            return row

    def uptime_days(self, node: str | None = None, *, since_day: str = "") -> list[UptimeDay]:
        with self.session() as s:
            q = select(UptimeDay).where(UptimeDay.day >= since_day).order_by(UptimeDay.node, UptimeDay.day)
            if node:
                q = q.where(UptimeDay.node == node)
            return list(s.scalars(q))

    def mark_breach_recorded(self, node: str, day: str) -> bool:
        """True the first time only: a day's breach is penalised once."""
        with self.session() as s:
            return (
                s.execute(
                    update(UptimeDay)
                    .where(UptimeDay.node == node, UptimeDay.day == day, UptimeDay.breach_recorded.is_(False))
                    .values(breach_recorded=True)
                ).rowcount
                == 1
            )

    def add_check(
        self,
        *,
        node: str,
        kind: str,
        ok: bool,
        measured: float | None = None,
        expected: float | None = None,
        message: str = "",
    ) -> None:
        with self.session() as s:
            s.add(Check(node=node, kind=kind, ok=ok, measured=measured, expected=expected, message=message))

    def checks(self, node: str | None = None, *, kind: str | None = None, limit: int = 50) -> list[Check]:
        with self.session() as s:
            q = select(Check).order_by(Check.id.desc()).limit(limit)
            if node:
                q = q.where(Check.node == node)
            if kind:
                q = q.where(Check.kind == kind)
            return list(s.scalars(q))
