"""Reads the whole ledger back and checks it: every account's hash chain and totals, pending
amounts against open holds, two entries per posted transfer, and Σ debits = Σ credits per currency.
Used by `payrecon ledger verify`; stops at the first record that does not add up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import driver_connection
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
        currency_rows = (
            await conn.execute(
                text(
                    "SELECT currency, coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
                    " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c"
                    " FROM entries GROUP BY currency ORDER BY currency"
                )
            )
        ).all()
        breaches = unbalanced_currencies((r.currency, int(r.d), int(r.c)) for r in currency_rows)
        if breaches:
            return AuditReport(0, 0, len(currency_rows), breaches[0])

        malformed = (
            await conn.execute(
                text(
                    "SELECT t.id, t.status, count(e.id) AS n,"
                    " count(e.id) FILTER (WHERE e.amount_minor <> coalesce(t.posted_amount_minor, t.amount_minor)) AS off"
                    " FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id"
                    " GROUP BY t.id, t.status"
                    " HAVING (t.status = 'POSTED' AND (count(e.id) <> 2 OR count(DISTINCT e.direction) <> 2))"
                    "     OR (t.status <> 'POSTED' AND count(e.id) <> 0)"
                    "     OR count(e.id) FILTER (WHERE e.amount_minor <> coalesce(t.posted_amount_minor, t.amount_minor)) > 0"
                    " ORDER BY t.id LIMIT 1"
                )
            )
        ).first()
        if malformed is not None:
            return AuditReport(
                0,
                0,
                len(currency_rows),
                Breach(
                    f"transfer {malformed.id!r}",
                    f"{malformed.status} with {malformed.n} entries ({malformed.off} of them for a different amount)",
                ),
            )

        orphan = (
            await conn.execute(
                text(
                    "SELECT e.id, e.transfer_id FROM entries e WHERE NOT EXISTS"
                    " (SELECT 1 FROM transfers t WHERE t.id = e.transfer_id) ORDER BY e.id LIMIT 1"
                )
            )
        ).first()
        if orphan is not None:
            return AuditReport(
                0,
                0,
                len(currency_rows),
                Breach(f"entry {orphan.id}", f"names transfer {orphan.transfer_id!r}, which does not exist"),
            )

        # One pass over the open holds, grouped per account (a correlated sum per account would scan
        # the transfers table once per account).
        pending = (
            await conn.execute(
                text(
                    "WITH held AS ("
                    "  SELECT account_id, sum(held_out) AS held_out, sum(held_in) AS held_in FROM ("
                    "    SELECT debit_account_id AS account_id, amount_minor AS held_out, 0 AS held_in"
                    "    FROM transfers WHERE status = 'PENDING'"
                    "    UNION ALL"
                    "    SELECT credit_account_id, 0, amount_minor FROM transfers WHERE status = 'PENDING') AS sides"
                    "  GROUP BY account_id)"
                    " SELECT a.id, a.debits_pending, a.credits_pending,"
                    "        coalesce(h.held_out, 0) AS held_out, coalesce(h.held_in, 0) AS held_in"
                    " FROM accounts a LEFT JOIN held h ON h.account_id = a.id"
                    " WHERE a.debits_pending <> coalesce(h.held_out, 0) OR a.credits_pending <> coalesce(h.held_in, 0)"
                    " ORDER BY a.id LIMIT 1"
                )
            )
        ).first()
        if pending is not None:
            return AuditReport(
                0,
                0,
                len(currency_rows),
                Breach(
                    f"account {pending.id!r}",
                    f"pending debits={pending.debits_pending} credits={pending.credits_pending}"
                    f" but open holds sum to debits={pending.held_out}"
                    f" credits={pending.held_in}",
                ),
            )

        audits = {
            r.id: AccountAudit(
                AccountTotals(
                    r.id,
                    r.currency,
                    r.debits_posted,
                    r.credits_posted,
                    r.debits_pending,
                    r.credits_pending,
                    bytes(r.chain_head),
                )
            )
            for r in await conn.execute(
                text(
                    "SELECT id, currency, debits_posted, credits_posted, debits_pending, credits_pending, chain_head"
                    " FROM accounts ORDER BY id"
                )
            )
        }
        # The driver's own cursor, in this transaction's snapshot: a million entries stream in seconds.
        driver = await driver_connection(conn)
        rows = driver.cursor(
            f"SELECT {', '.join(ChainedEntry._fields)} FROM entries ORDER BY account_id, id",
            prefetch=10_000,
        )
        async for r in rows:
            entries += 1
            audit = audits.get(r["account_id"])
            if audit is None:
                return AuditReport(
                    accounts,
                    entries,
                    len(currency_rows),
                    Breach(f"entry {r['id']}", f"names unknown account {r['account_id']!r}"),
                )
            breach = audit.add(ChainedEntry(*r.values()))
            if breach is not None:
                return AuditReport(accounts, entries, len(currency_rows), breach)
        for audit in audits.values():
            accounts += 1
            breach = audit.finish()
            if breach is not None:
                return AuditReport(accounts, entries, len(currency_rows), breach)
    return AuditReport(accounts, entries, len(currency_rows), None)
