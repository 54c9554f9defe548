"""PostgreSQL persistence of the ledger schema: posting batches, balances and history."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from payrecon.ledger.v1 import messages_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.money import Money
from services.kernel.telemetry import current_traceparent
from services.ledger.adapters.messages import posted_event, rejected_event
from services.ledger.domain.model import (
    AUTO_CREATED_TYPE,
    TRANSFER_EXISTS,
    Account,
    AccountType,
    Outcome,
    Posted,
    Rejected,
    TransferInstruction,
    post_in_order,
)

EVENT_GROUPS = 16


@dataclass(frozen=True)
class EntryRow:
    id: int
    transfer_id: str
    account_id: str
    direction: str
    amount_minor: int
    currency: str
    debit_account_id: str
    credit_account_id: str
    status: str
    metadata: dict[str, str]
    created_at: datetime


@dataclass(frozen=True)
class PostingResult:
    """Outcomes of the transfers this call applied (already-known ids are left out) and their events."""

    outcomes: list[Outcome]
    events: list[messages_pb2.LedgerEvent]
    duplicates: list[str]
    # The outcome told again for each id recorded before this call (see KnownTransfer.repeat_event).
    repeats: dict[str, messages_pb2.LedgerEvent]


def _event_group(account_id: str) -> str:
    return f"accounts-{zlib.crc32(account_id.encode()) % EVENT_GROUPS:04d}"


class LedgerStore:
    def __init__(self, engine: AsyncEngine, *, auto_create_accounts: bool) -> None:
        self._engine = engine
        self._auto_create = auto_create_accounts

    async def post_batch(self, transfers: Sequence[TransferInstruction], *, message_id: str | None = None
                         ) -> PostingResult | None:
        """Posts `transfers` in ONE transaction, each id at most once ever.

        Returns None when `message_id` was already applied. Accounts are locked in id order, so
        concurrent batches cannot deadlock.
        """
        async with self._engine.begin() as conn:
            if message_id is not None:
                fresh = await conn.execute(
                    text("INSERT INTO processed_messages (id) VALUES (:id) ON CONFLICT DO NOTHING RETURNING id"),
                    {"id": message_id},
                )
                if fresh.first() is None:
                    return None
            return await self._post(conn, list(transfers))

    async def _post(self, conn: AsyncConnection, transfers: list[TransferInstruction]) -> PostingResult:
        known = await _known_transfers(conn, [t.transfer_id for t in transfers])
        fresh: list[TransferInstruction] = []
        duplicates: list[str] = []
        repeats: list[tuple[str, messages_pb2.LedgerEvent]] = []
        seen: set[str] = set()
        for transfer in transfers:
            if transfer.transfer_id in known:
                # Its outcome is told again: whoever sent it again (a key reused after ingest forgot
                # it, a redelivery past SQS's deduplication window) is still waiting for one.
                duplicates.append(transfer.transfer_id)
                repeats.append((transfer.debit_account_id, known[transfer.transfer_id].repeat_event(transfer)))
            elif transfer.transfer_id in seen:
                duplicates.append(transfer.transfer_id)
            else:
                seen.add(transfer.transfer_id)
                fresh.append(transfer)
        if not fresh:
            await _write_outbox(conn, repeats)
            return PostingResult([], [], duplicates, _by_transfer_id(e for _, e in repeats))

        if self._auto_create:
            pairs: dict[str, str] = {}
            for t in fresh:
                pairs.setdefault(t.debit_account_id, t.amount.currency)
                pairs.setdefault(t.credit_account_id, t.amount.currency)
            await conn.execute(
                text(
                    "INSERT INTO accounts (id, currency, type, allow_overdraft)"
                    " SELECT id, cur, :type, true"
                    " FROM unnest(CAST(:ids AS text[]), CAST(:curs AS text[])) AS a(id, cur)"
                    " ORDER BY id ON CONFLICT (id) DO NOTHING"
                ),
                {"ids": list(pairs), "curs": list(pairs.values()), "type": AUTO_CREATED_TYPE.value},
            )
        account_ids = sorted({a for t in fresh for a in (t.debit_account_id, t.credit_account_id)})
        rows = await conn.execute(
            text(
                "SELECT id, currency, type, allow_overdraft, overdraft_limit_minor, debits_posted, credits_posted,"
                " debits_pending, credits_pending FROM accounts WHERE id = ANY(CAST(:ids AS text[]))"
                " ORDER BY id FOR UPDATE"
            ),
            {"ids": account_ids},
        )
        accounts = {
            r.id: Account(r.id, r.currency, AccountType(r.type), r.allow_overdraft, r.overdraft_limit_minor,
                          r.debits_posted, r.credits_posted, r.debits_pending, r.credits_pending)
            for r in rows
        }
        before = {a.id: (a.debits_posted, a.credits_posted) for a in accounts.values()}
        outcomes = post_in_order(fresh, accounts)
        now = (await conn.execute(text("SELECT now()"))).scalar_one()

        posted = [o for o in outcomes if isinstance(o, Posted)]
        entry_ids: list[int] = []
        if posted:
            entry_ids = list((await conn.execute(
                text("SELECT nextval('entries_id_seq') FROM generate_series(1, :n)"), {"n": 2 * len(posted)}
            )).scalars())
        await conn.execute(
            text(
                "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount_minor, currency, status,"
                " reject_code, reject_message, metadata, accepted_at, created_at)"
                " SELECT id, d, c, amt, cur, st, NULLIF(code, ''), NULLIF(msg, ''), CAST(meta AS jsonb), acc, :now"
                " FROM unnest(CAST(:ids AS text[]), CAST(:ds AS text[]), CAST(:cs AS text[]),"
                "             CAST(:amts AS bigint[]), CAST(:curs AS text[]), CAST(:sts AS text[]),"
                "             CAST(:codes AS text[]), CAST(:msgs AS text[]), CAST(:metas AS text[]),"
                "             CAST(:accs AS timestamptz[]))"
                "      AS t(id, d, c, amt, cur, st, code, msg, meta, acc)"
            ),
            {
                "now": now,
                "ids": [o.transfer.transfer_id for o in outcomes],
                "ds": [o.transfer.debit_account_id for o in outcomes],
                "cs": [o.transfer.credit_account_id for o in outcomes],
                "amts": [o.transfer.amount.minor_units for o in outcomes],
                "curs": [o.transfer.amount.currency for o in outcomes],
                "sts": ["POSTED" if isinstance(o, Posted) else "REJECTED" for o in outcomes],
                "codes": ["" if isinstance(o, Posted) else o.code for o in outcomes],
                "msgs": ["" if isinstance(o, Posted) else o.message for o in outcomes],
                "metas": [json.dumps(o.transfer.metadata) for o in outcomes],
                "accs": [o.transfer.accepted_at for o in outcomes],
            },
        )
        if posted:
            await conn.execute(
                text(
                    "INSERT INTO entries (id, transfer_id, account_id, direction, amount_minor, currency, created_at)"
                    " SELECT id, tid, acct, dir, amt, cur, :now"
                    " FROM unnest(CAST(:ids AS bigint[]), CAST(:tids AS text[]), CAST(:accts AS text[]),"
                    "             CAST(:dirs AS text[]), CAST(:amts AS bigint[]), CAST(:curs AS text[]))"
                    "      AS e(id, tid, acct, dir, amt, cur)"
                ),
                {
                    "now": now,
                    "ids": entry_ids,
                    "tids": [o.transfer.transfer_id for o in posted for _ in (0, 1)],
                    "accts": [a for o in posted for a in (o.transfer.debit_account_id, o.transfer.credit_account_id)],
                    "dirs": ["DEBIT", "CREDIT"] * len(posted),
                    "amts": [o.transfer.amount.minor_units for o in posted for _ in (0, 1)],
                    "curs": [o.transfer.amount.currency for o in posted for _ in (0, 1)],
                },
            )
            changed = [a for a in accounts.values() if before[a.id] != (a.debits_posted, a.credits_posted)]
            await conn.execute(
                text(
                    "UPDATE accounts AS a SET debits_posted = u.d, credits_posted = u.c, updated_at = :now"
                    " FROM unnest(CAST(:ids AS text[]), CAST(:ds AS bigint[]), CAST(:cs AS bigint[])) AS u(id, d, c)"
                    " WHERE a.id = u.id"
                ),
                {"now": now, "ids": [a.id for a in changed], "ds": [a.debits_posted for a in changed],
                 "cs": [a.credits_posted for a in changed]},
            )

        events: list[messages_pb2.LedgerEvent] = []
        entry_iter = iter(entry_ids)
        for outcome in outcomes:
            if isinstance(outcome, Posted):
                events.append(posted_event(outcome, now, next(entry_iter), next(entry_iter)))
            else:
                events.append(rejected_event(outcome, now))
        await _write_outbox(conn, [*zip((o.transfer.debit_account_id for o in outcomes), events, strict=True),
                                   *repeats])
        return PostingResult(outcomes, events, duplicates, _by_transfer_id(e for _, e in repeats))

    async def transfer_events(self, transfer_ids: Sequence[str]) -> dict[str, messages_pb2.LedgerEvent]:
        """The outcome event of each already-known transfer (for answering repeated requests)."""
        async with self._engine.connect() as conn:
            return {tid: known.event() for tid, known in (await _known_transfers(conn, transfer_ids)).items()}

    async def account(self, account_id: str) -> Account | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(
                text(
                    "SELECT id, currency, type, allow_overdraft, overdraft_limit_minor, debits_posted,"
                    " credits_posted, debits_pending, credits_pending, metadata FROM accounts WHERE id = :id"
                ),
                {"id": account_id},
            )).first()
            if r is None:
                return None
            return Account(r.id, r.currency, AccountType(r.type), r.allow_overdraft, r.overdraft_limit_minor,
                           r.debits_posted, r.credits_posted, r.debits_pending, r.credits_pending, dict(r.metadata))

    async def totals_as_of(self, account_id: str, as_of: datetime) -> tuple[int, int]:
        """(Σ debits, Σ credits) of the account's entries posted at or before `as_of`."""
        async with self._engine.connect() as conn:
            r = (await conn.execute(
                text(
                    "SELECT coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
                    " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c"
                    " FROM entries WHERE account_id = :id AND created_at <= :as_of"
                ),
                {"id": account_id, "as_of": as_of},
            )).one()
            return int(r.d), int(r.c)

    async def entries(self, account_id: str, *, limit: int, before_id: int | None) -> list[EntryRow]:
        """The account's entries, newest first, strictly older than `before_id` when given."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT e.id, e.transfer_id, e.account_id, e.direction, e.amount_minor, e.currency,"
                    " t.debit_account_id, t.credit_account_id, t.status, t.metadata, e.created_at"
                    " FROM entries e JOIN transfers t ON t.id = e.transfer_id"
                    " WHERE e.account_id = :id AND (CAST(:before AS bigint) IS NULL OR e.id < :before)"
                    " ORDER BY e.id DESC LIMIT :limit"
                ),
                {"id": account_id, "before": before_id, "limit": limit},
            )
            return [EntryRow(r.id, r.transfer_id, r.account_id, r.direction, r.amount_minor, r.currency,
                             r.debit_account_id, r.credit_account_id, r.status, dict(r.metadata), r.created_at)
                    for r in rows]

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


@dataclass(frozen=True)
class KnownTransfer:
    """A transfer already recorded, posted or rejected, as the ledger decided it."""

    instruction: TransferInstruction
    status: str
    reject_code: str | None
    reject_message: str | None
    created_at: datetime
    debit_entry_id: int | None
    credit_entry_id: int | None

    def event(self) -> messages_pb2.LedgerEvent:
        if self.status == "POSTED":
            assert self.debit_entry_id is not None and self.credit_entry_id is not None
            return posted_event(Posted(self.instruction), self.created_at, self.debit_entry_id, self.credit_entry_id)
        return rejected_event(Rejected(self.instruction, self.reject_code or "", self.reject_message or ""),
                              self.created_at)

    def repeat_event(self, again: TransferInstruction) -> messages_pb2.LedgerEvent:
        """The original outcome when `again` is the same transfer; a TRANSFER_EXISTS rejection otherwise."""
        mine = self.instruction
        same = (again.debit_account_id, again.credit_account_id, again.amount) == (
            mine.debit_account_id, mine.credit_account_id, mine.amount)
        if same:
            return self.event()
        return rejected_event(Rejected(again, TRANSFER_EXISTS,
                                       f"transfer id {again.transfer_id!r} was already used on "
                                       f"{self.created_at.date().isoformat()} for a different transfer"),
                              datetime.now(UTC))


def _by_transfer_id(events: Iterable[messages_pb2.LedgerEvent]) -> dict[str, messages_pb2.LedgerEvent]:
    return {e.transfer_posted.transfer_id or e.transfer_rejected.transfer_id: e for e in events}


async def _known_transfers(conn: AsyncConnection, transfer_ids: Sequence[str]) -> dict[str, KnownTransfer]:
    rows = await conn.execute(
        text(
            "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount_minor, t.currency, t.status,"
            " t.reject_code, t.reject_message, t.metadata, t.created_at,"
            " (SELECT id FROM entries WHERE transfer_id = t.id AND direction = 'DEBIT') AS debit_entry,"
            " (SELECT id FROM entries WHERE transfer_id = t.id AND direction = 'CREDIT') AS credit_entry"
            " FROM transfers t WHERE t.id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": list(transfer_ids)},
    )
    return {
        r.id: KnownTransfer(
            TransferInstruction(r.id, r.debit_account_id, r.credit_account_id, Money(r.amount_minor, r.currency),
                                dict(r.metadata)),
            r.status, r.reject_code, r.reject_message, r.created_at, r.debit_entry, r.credit_entry)
        for r in rows
    }


async def _write_outbox(conn: AsyncConnection, events: Sequence[tuple[str, messages_pb2.LedgerEvent]]) -> None:
    """Queues events for the relay, grouped by the debit account so each account's events stay ordered."""
    if not events:
        return
    await conn.execute(
        text(
            "INSERT INTO outbox (message_group, payload, traceparent)"
            " SELECT grp, payload, :tp FROM unnest(CAST(:grps AS text[]), CAST(:payloads AS bytea[]))"
            "      AS o(grp, payload)"
        ),
        {
            "tp": current_traceparent(),
            "grps": [_event_group(account_id) for account_id, _ in events],
            "payloads": [event.SerializeToString() for _, event in events],
        },
    )
