"""PostgreSQL persistence of the reconciliation schema: the ledger projection and stored runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from payrecon.ledger.v1 import messages_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reconciliation.domain.model import Report, TransferSides, Window


class ReconciliationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def project_events(self, events: Sequence[messages_pb2.LedgerEvent]) -> int:
        """Adds the entries of TransferPosted events; repeats are no-ops. Returns entries added."""
        rows = []
        for event in events:
            if event.WhichOneof("event") != "transfer_posted":
                continue
            p = event.transfer_posted
            at = p.posted_at.ToDatetime()
            rows.append(
                (
                    p.transfer_id,
                    p.debit_account_id,
                    "DEBIT",
                    p.amount.minor_units,
                    p.amount.currency,
                    p.debit_entry_id,
                    at,
                )
            )
            rows.append(
                (
                    p.transfer_id,
                    p.credit_account_id,
                    "CREDIT",
                    p.amount.minor_units,
                    p.amount.currency,
                    p.credit_entry_id,
                    at,
                )
            )
        if not rows:
            return 0
        columns = list(zip(*rows, strict=True))
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transfer_id, account_id, direction, amount_minor, currency,"
                    " entry_id, posted_at)"
                    " SELECT t, a, d, m, c, e, p AT TIME ZONE 'UTC'"
                    " FROM unnest(CAST(:t AS text[]), CAST(:a AS text[]), CAST(:d AS text[]), CAST(:m AS bigint[]),"
                    "             CAST(:c AS text[]), CAST(:e AS bigint[]), CAST(:p AS timestamp[]))"
                    "      AS r(t, a, d, m, c, e, p)"
                    " ON CONFLICT (transfer_id, direction) DO NOTHING"
                ),
                {
                    "t": list(columns[0]),
                    "a": list(columns[1]),
                    "d": list(columns[2]),
                    "m": list(columns[3]),
                    "c": list(columns[4]),
                    "e": list(columns[5]),
                    "p": list(columns[6]),
                },
            )
            return int(result.rowcount or 0)

    async def totals_until(self, account_id: str, until: datetime) -> tuple[int, int, str | None]:
        """(Σ debits, Σ credits, currency) of the account's projected entries posted until `until`."""
        async with self._engine.connect() as conn:
            r = (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
                        " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c, min(currency) AS cur"
                        " FROM ledger_entries WHERE account_id = :a AND posted_at <= :until"
                    ),
                    {"a": account_id, "until": until},
                )
            ).one()
            return int(r.d), int(r.c), r.cur

    async def transfers_in(self, account_id: str, window: Window) -> list[TransferSides]:
        """Each transfer touching the account in the window, with both of its projected sides."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT e.transfer_id,"
                    " coalesce(sum(e.amount_minor) FILTER (WHERE e.direction = 'DEBIT'), 0) AS d,"
                    " coalesce(sum(e.amount_minor) FILTER (WHERE e.direction = 'CREDIT'), 0) AS c"
                    " FROM ledger_entries e WHERE e.transfer_id IN ("
                    "   SELECT transfer_id FROM ledger_entries"
                    "   WHERE account_id = :a AND posted_at BETWEEN :s AND :e)"
                    " GROUP BY e.transfer_id ORDER BY min(e.entry_id)"
                ),
                {"a": account_id, "s": window.start, "e": window.end},
            )
            return [TransferSides(r.transfer_id, int(r.d), int(r.c)) for r in rows]

    async def save_run(self, report: Report, rendered: dict[str, object]) -> tuple[str, datetime]:
        run_id = str(uuid.uuid4())
        async with self._engine.begin() as conn:
            created = (
                await conn.execute(
                    text(
                        "INSERT INTO runs (id, account_id, period_start, period_end, transaction_count,"
                        " discrepancy_count, balanced, report) VALUES (CAST(:id AS uuid), :a, :s, :e, :tc, :dc, :b,"
                        " CAST(:r AS jsonb)) RETURNING created_at"
                    ),
                    {
                        "id": run_id,
                        "a": report.account_id,
                        "s": report.window.start,
                        "e": report.window.end,
                        "tc": report.transaction_count,
                        "dc": len(report.discrepancies),
                        "b": report.balanced,
                        "r": json.dumps(rendered, default=str),
                    },
                )
            ).scalar_one()
            return run_id, created
