"""PostgreSQL persistence of the ledger schema: posting, holds, reversals, accounts and history.

Every write is one transaction that locks what it changes in one global order — a transfer row
(hold or reversal target) first, then accounts by id — so concurrent writers cannot deadlock, and
each appends hash-chained entries, updates the accounts' running totals and queues its events in
the outbox before it commits.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from payrecon.ledger.v1 import messages_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.money import Money
from services.kernel.telemetry import current_traceparent
from services.ledger.adapters.messages import (
    event_transfer_id,
    hold_created_event,
    hold_posted_event,
    hold_voided_event,
    posted_event,
    rejected_event,
    transfer_reversed_event,
)
from services.ledger.domain.chain import entry_hash, micros_since_epoch
from services.ledger.domain.model import (
    AUTO_CREATED_TYPE,
    POSTING_FAILED,
    TRANSFER_EXISTS,
    Account,
    AccountType,
    Held,
    Outcome,
    Posted,
    Rejected,
    TransferInstruction,
    TransferKind,
    TransferStatus,
    check_transfer,
    post_in_order,
    reversal_of,
    settle_hold,
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
class TransferRecord:
    """A transfer as the ledger recorded it: posted, rejected, or a hold in any state, or a reversal."""

    instruction: TransferInstruction
    kind: TransferKind
    status: TransferStatus
    reject_code: str | None
    reject_message: str | None
    created_at: datetime
    posted_amount_minor: int | None = None
    expires_at: datetime | None = None
    resolved_at: datetime | None = None
    reverses_transfer_id: str | None = None
    reversed_by: str | None = None
    reason: str | None = None
    debit_entry_id: int | None = None
    credit_entry_id: int | None = None

    @property
    def id(self) -> str:
        return self.instruction.transfer_id

    @property
    def posted_amount(self) -> Money:
        minor = self.posted_amount_minor or self.instruction.amount.minor_units
        return Money(minor, self.instruction.amount.currency)

    def event(self) -> messages_pb2.LedgerEvent:
        """The event that announced this record's current state."""
        if self.status is TransferStatus.REJECTED:
            return rejected_event(
                Rejected(self.instruction, self.reject_code or "", self.reject_message or ""), self.created_at
            )
        if self.status is TransferStatus.POSTED:
            assert self.debit_entry_id is not None and self.credit_entry_id is not None
            posted = replace(self.instruction, amount=self.posted_amount)
            return posted_event(
                Posted(posted), self.resolved_at or self.created_at, self.debit_entry_id, self.credit_entry_id
            )
        if self.status is TransferStatus.PENDING:
            return hold_created_event(Held(self.instruction), self.created_at)
        return hold_voided_event(
            self.id, self.instruction.amount, self.status is TransferStatus.EXPIRED, self.resolved_at or self.created_at
        )

    def repeat_event(self, again: TransferInstruction) -> messages_pb2.LedgerEvent:
        """The original outcome when `again` is the same movement; a TRANSFER_EXISTS rejection otherwise."""
        if self.instruction.same_movement(again):
            return self.event()
        return rejected_event(
            Rejected(
                again,
                TRANSFER_EXISTS,
                f"transfer id {again.transfer_id!r} was already used on "
                f"{self.created_at.date().isoformat()} for a different transfer",
            ),
            datetime.now(UTC),
        )


@dataclass(frozen=True)
class PostingResult:
    """Outcomes of the transfers this call applied (already-known ids are left out) and their events."""

    outcomes: list[Outcome]
    events: list[messages_pb2.LedgerEvent]
    duplicates: list[str]
    # The outcome told again for each id recorded before this call (see TransferRecord.repeat_event).
    repeats: dict[str, messages_pb2.LedgerEvent]


@dataclass(frozen=True)
class HoldSettlement:
    """What a post/void/expire call found and did: `record` is the hold afterwards."""

    record: TransferRecord
    changed: bool


@dataclass(frozen=True)
class Reversal:
    record: TransferRecord
    replayed: bool


@dataclass(frozen=True)
class ReversalRefused:
    """Why a reversal cannot be posted: the reversal id is taken by another transfer (`id_taken`), or
    the original is not a posted, unreversed, ordinary transfer."""

    message: str
    id_taken: bool = False


@dataclass(frozen=True)
class AccountDefinition:
    id: str
    currency: str
    type: AccountType
    allow_overdraft: bool
    overdraft_limit_minor: int
    metadata: dict[str, str]


def _event_group(account_id: str) -> str:
    return f"accounts-{zlib.crc32(account_id.encode()) % EVENT_GROUPS:04d}"


class LedgerStore:
    def __init__(self, engine: AsyncEngine, *, auto_create_accounts: bool) -> None:
        self._engine = engine
        self._auto_create = auto_create_accounts

    # -- posting -------------------------------------------------------------------------------

    async def post_batch(
        self, transfers: Sequence[TransferInstruction], *, message_id: str | None = None
    ) -> PostingResult | None:
        """Posts (or, for holds, reserves) `transfers` in ONE transaction, each id at most once ever.

        Returns None when `message_id` was already applied.
        """
        if message_id is None:
            async with self._engine.begin() as conn:
                return await self._post(conn, list(transfers))
        return await self.post_messages([(message_id, transfers)])

    async def post_messages(
        self, messages: Sequence[tuple[str, Sequence[TransferInstruction]]]
    ) -> PostingResult | None:
        """Posts the transfers of several queued messages in ONE transaction, in message order.
        Messages applied before are skipped (SQS redelivers); None when all of them were."""
        async with self._engine.begin() as conn:
            fresh = set(
                (
                    await conn.execute(
                        text(
                            "INSERT INTO processed_messages (id) SELECT unnest(CAST(:ids AS text[]))"
                            " ON CONFLICT DO NOTHING RETURNING id"
                        ),
                        {"ids": [message_id for message_id, _ in messages]},
                    )
                ).scalars()
            )
            if not fresh:
                return None
            transfers = [t for message_id, batch in messages if message_id in fresh for t in batch]
            return await self._post(conn, transfers)

    async def _post(self, conn: AsyncConnection, transfers: list[TransferInstruction]) -> PostingResult:
        known = await _transfer_records(conn, [t.transfer_id for t in transfers])
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
        repeated = _by_transfer_id(e for _, e in repeats)
        if not fresh:
            await _write_outbox(conn, repeats)
            return PostingResult([], [], duplicates, repeated)

        named = {a for t in fresh for a in (t.debit_account_id, t.credit_account_id)}
        ledger = await _LockedAccounts.lock(conn, named)
        missing = named - ledger.accounts.keys()
        if missing and self._auto_create:
            # Created in id order and only then locked: still one global lock order, no deadlocks.
            await _create_missing_accounts(conn, fresh, missing)
            ledger.merge(await _LockedAccounts.lock(conn, missing))
        outcomes = post_in_order(fresh, ledger.accounts)
        now = await _now(conn)
        await _insert_transfers(conn, outcomes, now)
        entry_ids = await ledger.append_entries(conn, [o.transfer for o in outcomes if isinstance(o, Posted)], now)
        await ledger.save(conn, now)

        events: list[messages_pb2.LedgerEvent] = []
        pairs = iter(entry_ids)
        for outcome in outcomes:
            if isinstance(outcome, Posted):
                debit_entry, credit_entry = next(pairs)
                events.append(posted_event(outcome, now, debit_entry, credit_entry))
            elif isinstance(outcome, Held):
                events.append(hold_created_event(outcome, now))
            else:
                events.append(rejected_event(outcome, now))
        await _write_outbox(
            conn, [*zip((o.transfer.debit_account_id for o in outcomes), events, strict=True), *repeats]
        )
        return PostingResult(outcomes, events, duplicates, repeated)

    async def reject_unpostable(self, transfers: Sequence[TransferInstruction], reason: str) -> list[str]:
        """Records transfers that could not be posted after every retry as REJECTED (POSTING_FAILED),
        so their senders get a final answer and a later redelivery cannot post them. Ids already
        recorded are left alone. Returns the ids rejected."""
        async with self._engine.begin() as conn:
            known = await _transfer_records(conn, [t.transfer_id for t in transfers])
            # Metadata is dropped: it may be the very thing the database refused.
            fresh = list(
                {t.transfer_id: replace(t, metadata={}) for t in transfers if t.transfer_id not in known}.values()
            )
            if not fresh:
                return []
            now = await _now(conn)
            outcomes: list[Outcome] = [Rejected(t, POSTING_FAILED, reason) for t in fresh]
            await _insert_transfers(conn, outcomes, now)
            await _write_outbox(
                conn,
                [
                    (t.debit_account_id, rejected_event(o, now))
                    for t, o in zip(fresh, outcomes, strict=True)
                    if isinstance(o, Rejected)
                ],
            )
            return [t.transfer_id for t in fresh]

    # -- holds ---------------------------------------------------------------------------------

    async def settle_hold(
        self, hold_id: str, *, post_minor: int | None, void: bool, expire_only: bool = False
    ) -> HoldSettlement | None:
        """Posts (`post_minor`, or the whole hold when None), voids, or — past its expiry — expires a
        pending hold. The hold row is locked first, so of racing calls exactly one changes it; the
        others find it final. None when there is no such hold. With `expire_only`, nothing happens
        unless the hold is due."""
        async with self._engine.begin() as conn:
            records = await _transfer_records(conn, [hold_id], lock=True)
            record = records.get(hold_id)
            if record is None or record.kind is not TransferKind.HOLD:
                return None
            if record.status is not TransferStatus.PENDING:
                return HoldSettlement(record, changed=False)
            now = await _now(conn)
            expired = record.expires_at is not None and record.expires_at <= now
            if expire_only and not expired:
                return HoldSettlement(record, changed=False)
            held = record.instruction.amount
            if expired:
                status, posted_minor = TransferStatus.EXPIRED, 0
            elif void:
                status, posted_minor = TransferStatus.VOIDED, 0
            else:
                status, posted_minor = TransferStatus.POSTED, held.minor_units if post_minor is None else post_minor
            t = record.instruction
            ledger = await _LockedAccounts.lock(conn, {t.debit_account_id, t.credit_account_id})
            settle_hold(
                ledger.accounts[t.debit_account_id],
                ledger.accounts[t.credit_account_id],
                held.minor_units,
                posted_minor,
            )
            posted = Money(posted_minor, held.currency)
            entry_ids = await ledger.append_entries(conn, [replace(t, amount=posted)] if posted_minor else [], now)
            await conn.execute(
                text(
                    "UPDATE transfers SET status = :status, posted_amount_minor = :posted, resolved_at = :now"
                    " WHERE id = :id"
                ),
                {"status": status.value, "posted": posted_minor or None, "now": now, "id": hold_id},
            )
            await ledger.save(conn, now)
            if posted_minor:
                debit_entry, credit_entry = entry_ids[0]
                events = [
                    hold_posted_event(hold_id, held, posted, now),
                    posted_event(Posted(replace(t, amount=posted)), now, debit_entry, credit_entry),
                ]
                updated = replace(
                    record,
                    status=status,
                    posted_amount_minor=posted_minor,
                    resolved_at=now,
                    debit_entry_id=debit_entry,
                    credit_entry_id=credit_entry,
                )
            else:
                events = [hold_voided_event(hold_id, held, status is TransferStatus.EXPIRED, now)]
                updated = replace(record, status=status, resolved_at=now)
            await _write_outbox(conn, [(t.debit_account_id, e) for e in events])
            return HoldSettlement(updated, changed=True)

    async def due_holds(self, limit: int) -> list[str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT id FROM transfers WHERE status = 'PENDING' AND expires_at <= now()"
                    " ORDER BY expires_at LIMIT :limit"
                ),
                {"limit": limit},
            )
            return [r.id for r in rows]

    # -- reversals -----------------------------------------------------------------------------

    async def reverse(
        self, transfer_id: str, reversal_id: str, reason: str
    ) -> Reversal | Rejected | ReversalRefused | None:
        """Posts the reversal of a posted transfer, linked both ways. Returns None (no such transfer),
        a Reversal (new or replayed), a Rejected (funds, nothing stored) or a ReversalRefused."""
        async with self._engine.begin() as conn:
            original = (await _transfer_records(conn, [transfer_id], lock=True)).get(transfer_id)
            if original is None:
                return None
            existing = (await _transfer_records(conn, [reversal_id])).get(reversal_id)
            if existing is not None:
                if existing.reverses_transfer_id == transfer_id:
                    return Reversal(existing, replayed=True)
                return ReversalRefused(
                    f"transfer id {reversal_id!r} is already used by another transfer", id_taken=True
                )
            if original.kind is TransferKind.REVERSAL:
                return ReversalRefused(f"transfer {transfer_id!r} is itself a reversal")
            if original.status is not TransferStatus.POSTED:
                return ReversalRefused(
                    f"transfer {transfer_id!r} is {original.status.value}; only posted transfers can be reversed"
                )
            if original.reversed_by:
                return ReversalRefused(f"transfer {transfer_id!r} was already reversed by {original.reversed_by!r}")
            instruction = reversal_of(replace(original.instruction, amount=original.posted_amount), reversal_id, reason)
            ledger = await _LockedAccounts.lock(conn, {instruction.debit_account_id, instruction.credit_account_id})
            rejection = check_transfer(instruction, ledger.accounts)
            if rejection is not None:
                return rejection
            post_in_order([instruction], ledger.accounts)
            now = await _now(conn)
            await _insert_transfers(
                conn, [Posted(instruction)], now, kind=TransferKind.REVERSAL, reverses=transfer_id, reason=reason
            )
            ((debit_entry, credit_entry),) = await ledger.append_entries(conn, [instruction], now)
            await conn.execute(
                text("UPDATE transfers SET reversed_by = :rid WHERE id = :id"), {"rid": reversal_id, "id": transfer_id}
            )
            await ledger.save(conn, now)
            await _write_outbox(
                conn,
                [
                    (instruction.debit_account_id, posted_event(Posted(instruction), now, debit_entry, credit_entry)),
                    (instruction.debit_account_id, transfer_reversed_event(transfer_id, reversal_id, reason, now)),
                ],
            )
            record = TransferRecord(
                instruction,
                TransferKind.REVERSAL,
                TransferStatus.POSTED,
                None,
                None,
                now,
                reverses_transfer_id=transfer_id,
                reason=reason,
                debit_entry_id=debit_entry,
                credit_entry_id=credit_entry,
            )
            return Reversal(record, replayed=False)

    # -- accounts ------------------------------------------------------------------------------

    async def create_account(self, definition: AccountDefinition) -> tuple[Account, bool]:
        """(the account, created?) — an existing id is returned as it is, for the caller to compare."""
        async with self._engine.begin() as conn:
            inserted = (
                await conn.execute(
                    text(
                        "INSERT INTO accounts (id, currency, type, allow_overdraft, overdraft_limit_minor, metadata)"
                        " VALUES (:id, :cur, :type, :od, :limit, CAST(:meta AS jsonb)) ON CONFLICT (id) DO NOTHING"
                        " RETURNING id"
                    ),
                    {
                        "id": definition.id,
                        "cur": definition.currency,
                        "type": definition.type.value,
                        "od": definition.allow_overdraft,
                        "limit": definition.overdraft_limit_minor,
                        "meta": json.dumps(definition.metadata),
                    },
                )
            ).first()
        account = await self.account(definition.id)
        assert account is not None
        return account, inserted is not None

    async def account(self, account_id: str) -> Account | None:
        accounts = await self._accounts("WHERE id = :id", {"id": account_id})
        return accounts[0] if accounts else None

    async def accounts_after(self, after_id: str | None, limit: int) -> list[Account]:
        return await self._accounts(
            "WHERE CAST(:after AS text) IS NULL OR id > :after ORDER BY id LIMIT :limit",
            {"after": after_id, "limit": limit},
        )

    async def _accounts(self, where: str, params: dict[str, object]) -> list[Account]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT {_ACCOUNT_COLUMNS}, metadata, created_at FROM accounts {where}"), params
            )
            return [_account(r, dict(r.metadata), r.created_at) for r in rows]

    # -- reads ---------------------------------------------------------------------------------

    async def transfer(self, transfer_id: str) -> TransferRecord | None:
        async with self._engine.connect() as conn:
            return (await _transfer_records(conn, [transfer_id])).get(transfer_id)

    async def transfer_events(self, transfer_ids: Sequence[str]) -> dict[str, messages_pb2.LedgerEvent]:
        """The outcome event of each already-known transfer (for answering repeated requests)."""
        async with self._engine.connect() as conn:
            return {tid: record.event() for tid, record in (await _transfer_records(conn, transfer_ids)).items()}

    async def totals_as_of(self, account_id: str, as_of: datetime) -> tuple[int, int]:
        """(Σ debits, Σ credits) of the account's entries posted at or before `as_of`."""
        async with self._engine.connect() as conn:
            r = (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
                        " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c"
                        " FROM entries WHERE account_id = :id AND created_at <= :as_of"
                    ),
                    {"id": account_id, "as_of": as_of},
                )
            ).one()
            return int(r.d), int(r.c)

    async def entries(
        self,
        account_id: str,
        *,
        limit: int,
        before_id: int | None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[EntryRow]:
        """The account's entries, newest first, strictly older than `before_id` when given, posted in
        [since, until) when given."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT e.id, e.transfer_id, e.account_id, e.direction, e.amount_minor, e.currency,"
                    " t.debit_account_id, t.credit_account_id, t.status, t.metadata, e.created_at"
                    " FROM entries e JOIN transfers t ON t.id = e.transfer_id"
                    " WHERE e.account_id = :id AND (CAST(:before AS bigint) IS NULL OR e.id < :before)"
                    " AND (CAST(:since AS timestamptz) IS NULL OR e.created_at >= :since)"
                    " AND (CAST(:until AS timestamptz) IS NULL OR e.created_at < :until)"
                    " ORDER BY e.id DESC LIMIT :limit"
                ),
                {"id": account_id, "before": before_id, "limit": limit, "since": since, "until": until},
            )
            return [
                EntryRow(
                    r.id,
                    r.transfer_id,
                    r.account_id,
                    r.direction,
                    r.amount_minor,
                    r.currency,
                    r.debit_account_id,
                    r.credit_account_id,
                    r.status,
                    dict(r.metadata),
                    r.created_at,
                )
                for r in rows
            ]

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


# -- helpers shared by the write paths ---------------------------------------------------------

_ACCOUNT_COLUMNS = (
    "id, currency, type, allow_overdraft, overdraft_limit_minor, debits_posted, credits_posted,"
    " debits_pending, credits_pending"
)


def _account(r: object, metadata: dict[str, str] | None = None, created_at: datetime | None = None) -> Account:
    m = r._mapping  # type: ignore[attr-defined]
    return Account(
        m["id"],
        m["currency"],
        AccountType(m["type"]),
        m["allow_overdraft"],
        m["overdraft_limit_minor"],
        m["debits_posted"],
        m["credits_posted"],
        m["debits_pending"],
        m["credits_pending"],
        metadata or {},
        created_at,
    )


async def _now(conn: AsyncConnection) -> datetime:
    return (await conn.execute(text("SELECT now()"))).scalar_one()


@dataclass
class _LockedAccounts:
    """Accounts locked FOR UPDATE (in id order) for one transaction, with their chain heads."""

    accounts: dict[str, Account]
    heads: dict[str, bytes]
    before: dict[str, tuple[int, int, int, int]]

    @classmethod
    async def lock(cls, conn: AsyncConnection, account_ids: Iterable[str]) -> _LockedAccounts:
        rows = await conn.execute(
            text(
                f"SELECT {_ACCOUNT_COLUMNS}, chain_head FROM unnest(CAST(:ids AS text[])) AS k(id)"
                " JOIN accounts USING (id) ORDER BY id FOR UPDATE OF accounts"
            ),
            {"ids": sorted(set(account_ids))},
        )
        accounts: dict[str, Account] = {}
        heads: dict[str, bytes] = {}
        for r in rows:
            accounts[r.id] = _account(r)
            heads[r.id] = bytes(r.chain_head)
        before = {a.id: _totals(a) for a in accounts.values()}
        return cls(accounts, heads, before)

    def merge(self, other: _LockedAccounts) -> None:
        self.accounts.update(other.accounts)
        self.heads.update(other.heads)
        self.before.update(other.before)

    async def append_entries(
        self, conn: AsyncConnection, transfers: Sequence[TransferInstruction], now: datetime
    ) -> list[tuple[int, int]]:
        """Appends a debit and a credit entry per transfer, chained per account; their ids, in order."""
        if not transfers:
            return []
        # One row holding an array: decoding thousands of one-column rows costs more than the query.
        ids = (
            await conn.execute(
                text("SELECT array_agg(nextval('entries_id_seq')) FROM generate_series(1, :n)"),
                {"n": 2 * len(transfers)},
            )
        ).scalar_one()
        heads = self.heads
        micros = micros_since_epoch(now)
        rows: list[tuple[object, ...]] = []
        entry_ids = iter(ids)
        for t in transfers:
            minor, currency = t.amount.minor_units, t.amount.currency
            for account_id, direction in ((t.debit_account_id, "DEBIT"), (t.credit_account_id, "CREDIT")):
                entry_id = next(entry_ids)
                head = heads[account_id] = entry_hash(
                    heads[account_id], entry_id, t.transfer_id, account_id, direction, minor, currency, micros
                )
                rows.append((entry_id, t.transfer_id, account_id, direction, minor, currency, now, head))
        await _copy_rows(
            conn,
            "entries",
            ("id", "transfer_id", "account_id", "direction", "amount_minor", "currency", "created_at", "hash"),
            rows,
        )
        return [(ids[2 * i], ids[2 * i + 1]) for i in range(len(transfers))]

    async def save(self, conn: AsyncConnection, now: datetime) -> None:
        """Writes back the totals and chain heads of the accounts this transaction changed."""
        changed = [a for a in self.accounts.values() if self.before[a.id] != _totals(a)]
        if not changed:
            return
        await conn.execute(
            text(
                "UPDATE accounts AS a SET debits_posted = u.dp, credits_posted = u.cp, debits_pending = u.dq,"
                " credits_pending = u.cq, chain_head = u.head, updated_at = :now"
                " FROM unnest(CAST(:ids AS text[]), CAST(:dp AS bigint[]), CAST(:cp AS bigint[]),"
                "             CAST(:dq AS bigint[]), CAST(:cq AS bigint[]), CAST(:heads AS bytea[]))"
                "      AS u(id, dp, cp, dq, cq, head)"
                " WHERE a.id = u.id"
            ),
            {
                "now": now,
                "ids": [a.id for a in changed],
                "dp": [a.debits_posted for a in changed],
                "cp": [a.credits_posted for a in changed],
                "dq": [a.debits_pending for a in changed],
                "cq": [a.credits_pending for a in changed],
                "heads": [self.heads[a.id] for a in changed],
            },
        )


def _totals(account: Account) -> tuple[int, int, int, int]:
    return (account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending)


async def _create_missing_accounts(
    conn: AsyncConnection, transfers: Sequence[TransferInstruction], missing: set[str]
) -> None:
    """Opens the `missing` accounts the transfers name, in the currency of the first that names each."""
    pairs: dict[str, str] = {}
    for t in transfers:
        for account_id in (t.debit_account_id, t.credit_account_id):
            if account_id in missing:
                pairs.setdefault(account_id, t.amount.currency)
    await conn.execute(
        text(
            "INSERT INTO accounts (id, currency, type, allow_overdraft)"
            " SELECT id, cur, :type, true"
            " FROM unnest(CAST(:ids AS text[]), CAST(:curs AS text[])) AS a(id, cur)"
            " ORDER BY id ON CONFLICT (id) DO NOTHING"
        ),
        {"ids": list(pairs), "curs": list(pairs.values()), "type": AUTO_CREATED_TYPE.value},
    )


async def _insert_transfers(
    conn: AsyncConnection,
    outcomes: Sequence[Outcome],
    now: datetime,
    *,
    kind: TransferKind | None = None,
    reverses: str | None = None,
    reason: str | None = None,
) -> None:
    def status(o: Outcome) -> str:
        if isinstance(o, Posted):
            return TransferStatus.POSTED.value
        if isinstance(o, Held):
            return TransferStatus.PENDING.value
        return TransferStatus.REJECTED.value

    await _copy_rows(
        conn,
        "transfers",
        (
            "id",
            "debit_account_id",
            "credit_account_id",
            "amount_minor",
            "currency",
            "status",
            "reject_code",
            "reject_message",
            "metadata",
            "accepted_at",
            "created_at",
            "kind",
            "expires_at",
            "reverses_transfer_id",
            "reason",
        ),
        [
            (
                o.transfer.transfer_id,
                o.transfer.debit_account_id,
                o.transfer.credit_account_id,
                o.transfer.amount.minor_units,
                o.transfer.amount.currency,
                status(o),
                o.code if isinstance(o, Rejected) else None,
                o.message if isinstance(o, Rejected) else None,
                json.dumps(o.transfer.metadata) if o.transfer.metadata else "{}",
                o.transfer.accepted_at,
                now,
                (kind or o.transfer.kind).value,
                o.transfer.expires_at,
                reverses,
                reason,
            )
            for o in outcomes
        ],
    )


async def _copy_rows(
    conn: AsyncConnection, table: str, columns: Sequence[str], records: list[tuple[object, ...]]
) -> None:
    """Bulk insert with binary COPY on this transaction's own connection: for thousands of rows it
    costs the database about half of INSERT … SELECT FROM unnest(…)."""
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(table, records=records, columns=list(columns))


def _by_transfer_id(events: Iterable[messages_pb2.LedgerEvent]) -> dict[str, messages_pb2.LedgerEvent]:
    return {event_transfer_id(e): e for e in events}


async def _transfer_records(
    conn: AsyncConnection, transfer_ids: Sequence[str], *, lock: bool = False
) -> dict[str, TransferRecord]:
    rows = await conn.execute(
        text(
            "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount_minor, t.currency, t.status, t.kind,"
            " t.reject_code, t.reject_message, t.metadata, t.created_at, t.accepted_at, t.posted_amount_minor,"
            " t.expires_at, t.resolved_at, t.reverses_transfer_id, t.reversed_by, t.reason,"
            " (SELECT id FROM entries WHERE transfer_id = t.id AND direction = 'DEBIT') AS debit_entry,"
            " (SELECT id FROM entries WHERE transfer_id = t.id AND direction = 'CREDIT') AS credit_entry"
            # A join on unnest (not `= ANY`) keeps this an index probe per id however large the table.
            " FROM unnest(CAST(:ids AS text[])) AS k(id) JOIN transfers t ON t.id = k.id"
            + (" ORDER BY t.id FOR UPDATE OF t" if lock else "")
        ),
        {"ids": list(transfer_ids)},
    )
    return {
        r.id: TransferRecord(
            TransferInstruction(
                r.id,
                r.debit_account_id,
                r.credit_account_id,
                Money(r.amount_minor, r.currency),
                dict(r.metadata),
                r.accepted_at,
                pending=r.kind == TransferKind.HOLD.value,
                expires_at=r.expires_at,
            ),
            TransferKind(r.kind),
            TransferStatus(r.status),
            r.reject_code,
            r.reject_message,
            r.created_at,
            r.posted_amount_minor,
            r.expires_at,
            r.resolved_at,
            r.reverses_transfer_id,
            r.reversed_by,
            r.reason,
            r.debit_entry,
            r.credit_entry,
        )
        for r in rows
    }


# Events per outbox row: a row's payload is a serialized LedgerEventBatch, and serialized batches
# concatenate into one (protobuf merges repeated fields), so the relay packs rows by joining bytes.
EVENTS_PER_ROW = 500


async def _write_outbox(conn: AsyncConnection, events: Sequence[tuple[str, messages_pb2.LedgerEvent]]) -> None:
    """Queues events for the relay, grouped by the debit account so each account's events stay
    ordered: one row per message group (and per EVENTS_PER_ROW events) for the whole transaction."""
    if not events:
        return
    by_group: dict[str, list[messages_pb2.LedgerEvent]] = {}
    for account_id, event in events:
        by_group.setdefault(_event_group(account_id), []).append(event)
    groups, payloads = [], []
    for group, group_events in by_group.items():
        for start in range(0, len(group_events), EVENTS_PER_ROW):
            groups.append(group)
            payloads.append(
                messages_pb2.LedgerEventBatch(events=group_events[start : start + EVENTS_PER_ROW]).SerializeToString()
            )
    await conn.execute(
        text(
            "INSERT INTO outbox (message_group, payload, traceparent)"
            " SELECT grp, payload, :tp FROM unnest(CAST(:grps AS text[]), CAST(:payloads AS bytea[]))"
            "      AS o(grp, payload)"
        ),
        {"tp": current_traceparent(), "grps": groups, "payloads": payloads},
    )
