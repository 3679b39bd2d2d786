"""The ledger in the database: transactions posted exactly once, replicas metered exactly once.

A transaction's ``key`` is unique, so posting the same transaction twice inserts it once. A slash
is computed from the stake inside the transaction that posts it, with the provider's row locked
first (``slash``): slashes at once, from the checker, the supervisor and the operator's routes,
take turns and never take more than the stake holds. Metering
moves a replica's ``metered_s`` forward with a compare-and-set (``WHERE metered_s = <what we
read>``) in the same database transaction as the usage posting: two meters racing, or a meter
repeated after a crash, can never bill the same second twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runner.core import ledger
from runner.core.ledger import MarketConfig, Posting, SlashCause, Transaction, TxKind
from runner.store.models import LedgerPosting, LedgerTx, Provider, Replica, Workload
from runner.store.parties import PartiesStore


class _Raced(Exception):
    """Another meter moved the replica's billing forward first."""


class LedgerStore(PartiesStore):
    def post(self, tx: Transaction, s: Session | None = None) -> bool:
        """Write ``tx`` (audited); False when a transaction with its key is already there."""
        if s is None:
            try:
                with self.session() as own:
                    return self.post(tx, own)
            except IntegrityError:
                return False
        if s.scalar(select(LedgerTx.id).where(LedgerTx.key == tx.key)) is not None:
            return False
        row = LedgerTx(key=tx.key, kind=tx.kind.value, memo=tx.memo, refs=dict(tx.refs), ts=time.time())
        s.add(row)
        s.flush()
        s.add_all(LedgerPosting(tx_id=row.id, account=p.account, amount=p.amount) for p in tx.postings)
        if tx.kind is not TxKind.USAGE:  # usage is metered every few seconds: its trail is the ledger itself
            self.append_audit(
                s,
                f"ledger.{tx.kind.value}",
                {"key": tx.key, "memo": tx.memo, "postings": [[p.account, p.amount] for p in tx.postings]},
            )
        return True

    def slash(
        self,
        *,
        provider: str,
        cause: SlashCause,
        config: MarketConfig,
        key: str,
        node: str = "",
        tenant: str | None = None,
        memo: str = "",
    ) -> Transaction | None:
        """Slash ``provider``'s stake for ``cause`` once per ``key`` (``ledger.slash`` says how
        much), reading the stake in the same transaction that posts the slash, after locking the
        provider's row with a write: PostgreSQL holds the row lock, SQLite its one writer's lock, so
        a concurrent slash waits and then sees this one. None: nothing taken (posted before under
        this key, or the stake is empty)."""
        try:
            with self.session() as s:
                locked = s.execute(
                    update(Provider).where(Provider.id == provider).values(kyc=Provider.kyc)
                ).rowcount  # a write: it takes the lock
                if locked != 1 or s.scalar(select(LedgerTx.id).where(LedgerTx.key == key)) is not None:
                    return None
                stake = int(
                    s.scalar(
                        select(func.coalesce(func.sum(LedgerPosting.amount), 0)).where(
                            LedgerPosting.account == ledger.stake_account(provider)
                        )
                    )
                    or 0
                )
                tx = ledger.slash(
                    provider=provider,
                    stake_balance=stake,
                    cause=cause,
                    config=config,
                    key=key,
                    node=node,
                    tenant=tenant,
                    memo=memo,
                )
                if tx is None:
                    return None
                self.post(tx, s)
                return tx
        except IntegrityError:  # the same key, posted at the same moment by another process
            return None

    def meter(self, replica_key: str, now: float, *, fee_bps: int) -> Transaction | None:
        """Bill a running replica up to ``now``, or a finished one for every started second of its
        run, from where billing stopped."""
        try:
            return self._meter(replica_key, now, fee_bps)
        except _Raced:  # metered concurrently: that meter's posting stands, this one rolled back
            return None

    def _meter(self, replica_key: str, now: float, fee_bps: int) -> Transaction | None:
        with self.session() as s:
            rep = s.get(Replica, replica_key)
            if rep is None or rep.started_at is None or not rep.milli_units:
                return None
            if rep.finished_at is not None:  # every started second of the run: a 0.4 s job is billed 1 s
                to_s = max(math.ceil(rep.finished_at - rep.started_at - 1e-6), 0)
            else:  # while it runs, only the seconds that have passed
                to_s = max(int(now - rep.started_at), 0)
            tenant = s.scalar(select(Workload.tenant_id).where(Workload.id == rep.workload_id)) or ""
            tx = ledger.usage(
                replica_key=rep.key,
                tenant=tenant,
                provider=rep.provider_id,
                node=rep.node,
                workload_id=rep.workload_id,
                price_per_hour=rep.price_micros,
                milli_units=rep.milli_units,
                from_s=rep.metered_s,
                to_s=to_s,
                fee_bps=fee_bps,
            )
            if tx is None:
                return None
            moved = s.execute(
                update(Replica).where(Replica.key == rep.key, Replica.metered_s == rep.metered_s).values(metered_s=to_s)
            ).rowcount
            if moved != 1:
                raise _Raced
            self.post(tx, s)
            return tx

    def transactions(
        self, *, account: str | None = None, accounts: Iterable[str] | None = None, kind: TxKind | None = None
    ) -> list[Transaction]:
        """Transactions in the order they were posted, optionally only those touching ``account``
        (or any of ``accounts``) or of one ``kind``."""
        wanted = [account] if account is not None else (list(accounts) if accounts is not None else None)
        with self.session() as s:
            q = select(LedgerTx).order_by(LedgerTx.id)
            if kind is not None:
                q = q.where(LedgerTx.kind == kind.value)
            if wanted is not None:
                q = q.where(LedgerTx.id.in_(select(LedgerPosting.tx_id).where(LedgerPosting.account.in_(wanted))))
            txs = list(s.scalars(q))
            postings: dict[int, list[Posting]] = {}
            if txs:
                rows = s.scalars(
                    select(LedgerPosting).where(LedgerPosting.tx_id.in_([t.id for t in txs])).order_by(LedgerPosting.id)
                )
                for p in rows:
                    postings.setdefault(p.tx_id, []).append(Posting(p.account, p.amount))
            return [
                Transaction(
                    key=t.key,
                    kind=TxKind(t.kind),
                    postings=tuple(postings.get(t.id, ())),
                    memo=t.memo,
                    refs=t.refs or {},
                )
                for t in txs
            ]

    def balance(self, account: str) -> int:
        with self.session() as s:
            return int(
                s.scalar(
                    select(func.coalesce(func.sum(LedgerPosting.amount), 0)).where(LedgerPosting.account == account)
                )
                or 0
            )

    def balances(self, accounts: Iterable[str] | None = None) -> dict[str, int]:
        with self.session() as s:
            q = select(LedgerPosting.account, func.sum(LedgerPosting.amount)).group_by(LedgerPosting.account)
            if accounts is not None:
                q = q.where(LedgerPosting.account.in_(list(accounts)))
            return {account: int(total) for account, total in s.execute(q)}

    def tenant_spent(self, tenant_id: str) -> int:
        """What the tenant owes so far (charges less credits and refunds): its budget's consumption."""
        return -self.balance(ledger.tenant_account(tenant_id))
