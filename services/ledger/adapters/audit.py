"""Reads the whole ledger back and checks it: every account's hash chain and totals, pending
amounts against open holds, two entries per posted transfer, and Σ debits = Σ credits per currency.
Used by `payrecon ledger verify`; stops at the first record that does not add up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.domain.chain import AccountAudit, AccountTotals, Breach, ChainedEntry, unbalanced_currencies


@dataclass(frozen=True)
class AuditReport:
    accounts: int
    entries: int
    currencies: int
    breach: Breach | None

    @property
    def ok(self) -> bool:
        return self.breach is None


async def audit_ledger(engine: AsyncEngine) -> AuditReport:
    accounts = entries = 0
    async with engine.connect() as conn:
        # One snapshot for every read below, so concurrent posting cannot make it disagree with itself.
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        currency_rows = (await conn.execute(text(
            "SELECT currency, coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
            " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c"
            " FROM entries GROUP BY currency ORDER BY currency"))).all()
        breaches = unbalanced_currencies((r.currency, int(r.d), int(r.c)) for r in currency_rows)
        if breaches:
            return AuditReport(0, 0, len(currency_rows), breaches[0])

        malformed = (await conn.execute(text(
            "SELECT t.id, t.status, count(e.id) AS n,"
            " count(e.id) FILTER (WHERE e.amount_minor <> coalesce(t.posted_amount_minor, t.amount_minor)) AS off"
            " FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id"
            " GROUP BY t.id, t.status"
            " HAVING (t.status = 'POSTED' AND (count(e.id) <> 2 OR count(DISTINCT e.direction) <> 2))"
            "     OR (t.status <> 'POSTED' AND count(e.id) <> 0)"
            "     OR count(e.id) FILTER (WHERE e.amount_minor <> coalesce(t.posted_amount_minor, t.amount_minor)) > 0"
            " ORDER BY t.id LIMIT 1"))).first()
        if malformed is not None:
            return AuditReport(0, 0, len(currency_rows), Breach(
                f"transfer {malformed.id!r}", f"{malformed.status} with {malformed.n} entries"
                                              f" ({malformed.off} of them for a different amount)"))

        orphan = (await conn.execute(text(
            "SELECT e.id, e.transfer_id FROM entries e WHERE NOT EXISTS"
            " (SELECT 1 FROM transfers t WHERE t.id = e.transfer_id) ORDER BY e.id LIMIT 1"))).first()
        if orphan is not None:
            return AuditReport(0, 0, len(currency_rows), Breach(
                f"entry {orphan.id}", f"names transfer {orphan.transfer_id!r}, which does not exist"))

        pending = (await conn.execute(text(
            "SELECT a.id, a.debits_pending, a.credits_pending,"
            " coalesce((SELECT sum(amount_minor) FROM transfers h WHERE h.status = 'PENDING'"
            "           AND h.debit_account_id = a.id), 0) AS held_out,"
            " coalesce((SELECT sum(amount_minor) FROM transfers h WHERE h.status = 'PENDING'"
            "           AND h.credit_account_id = a.id), 0) AS held_in"
            " FROM accounts a ORDER BY a.id"))).all()
        for r in pending:
            if (r.debits_pending, r.credits_pending) != (r.held_out, r.held_in):
                return AuditReport(0, 0, len(currency_rows), Breach(
                    f"account {r.id!r}", f"pending debits={r.debits_pending} credits={r.credits_pending} but open"
                                         f" holds sum to debits={r.held_out} credits={r.held_in}"))

        audits = {
            r.id: AccountAudit(AccountTotals(r.id, r.currency, r.debits_posted, r.credits_posted, r.debits_pending,
                                             r.credits_pending, bytes(r.chain_head)))
            for r in await conn.execute(text(
                "SELECT id, currency, debits_posted, credits_posted, debits_pending, credits_pending, chain_head"
                " FROM accounts ORDER BY id"))
        }
        stream = await conn.stream(text(
            "SELECT id, transfer_id, account_id, direction, amount_minor, currency, created_at, hash"
            " FROM entries ORDER BY account_id, id"))
        async for r in stream:
            entries += 1
            audit = audits.get(r.account_id)
            if audit is None:
                return AuditReport(accounts, entries, len(currency_rows),
                                   Breach(f"entry {r.id}", f"names unknown account {r.account_id!r}"))
            breach = audit.add(ChainedEntry(r.id, r.transfer_id, r.account_id, r.direction, r.amount_minor,
                                            r.currency, r.created_at, bytes(r.hash)))
            if breach is not None:
                return AuditReport(accounts, entries, len(currency_rows), breach)
        for audit in audits.values():
            accounts += 1
            breach = audit.finish()
            if breach is not None:
                return AuditReport(accounts, entries, len(currency_rows), breach)
    return AuditReport(accounts, entries, len(currency_rows), None)
