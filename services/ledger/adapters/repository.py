"""PostgreSQL implementation of the ledger's unit of work and repository (SQLAlchemy async + asyncpg).

Only reads and writes: every decision is the domain's. Bulk writes use binary COPY or one statement
over unnest(…) arrays, so a batch of thousands of transfers costs a handful of round trips.
"""

from __future__ import annotations

import contextlib
import functools
import json
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence, Set
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.db import driver_connection, outages_as_unavailable
from services.kernel.money import Money
from services.kernel.telemetry import current_traceparent
from services.ledger.codecs import event_batch
from services.ledger.domain.chain import ChainedEntry, chain_entries
from services.ledger.domain.events import LedgerEvent
from services.ledger.domain.model import (
    AUTO_CREATED_TYPE,
    Account,
    AccountDefinition,
    AccountType,
    Held,
    LedgerEntry,
    Outcome,
    Posted,
    Rejected,
    TransferInstruction,
    TransferKind,
    TransferStatus,
)
from services.ledger.domain.schema import INDEXED_FIELD_SHAPE, AppliedSchema, ExistingAccount
from services.ledger.domain.transfers import HoldDecision, TransferRecord
from services.ledger.service.unit_of_work import ConcurrentWrite

# Message groups of the ledger's events. Every group a posting transaction touches is one more
# outbox row, and every group with rows at a relay poll one more SQS message on each of the two event
# queues (sent, received, deleted by ingest and by reconciliation): with 16 (as many as the
# transfers' groups) a poll of each relay could send twice as many event messages as transfer
# messages. Their consumers run one receiver per process, so more groups bought no parallelism.
# Fewer groups keep every account's events in order (an account still has one group); a message
# that keeps failing holds back a quarter of the accounts' events until it reaches the dead-letter
# queue.
EVENT_GROUPS = 4
# Events per outbox row: a row's payload is a serialized LedgerEventBatch, and serialized batches
# concatenate into one (protobuf merges repeated fields), so the relay packs rows by joining bytes.
EVENTS_PER_ROW = 500

_ACCOUNT_COLUMNS = (
    "id, currency, type, allow_overdraft, overdraft_limit_minor, debits_posted, credits_posted,"
    " debits_pending, credits_pending, account_class"
)

_TRANSFER_COLUMNS = (
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
    "kind",
    "expires_at",
    "reverses_transfer_id",
    "reason",
    "transfer_type",
    "schema_version",
    "created_at",  # last: left to the column's default when it is the transaction's now()
)


class SqlLedgerUnitOfWork:
    """A database that cannot be reached raises Unavailable from every method (see
    services.kernel.db.outages_as_unavailable); a unique key refusing a row raises ConcurrentWrite."""

    def __init__(self, engine: AsyncEngine, *, on_posted: Callable[[int], object] | None = None) -> None:
        self._engine = engine
        # Told how many transfers each committed transaction posted (entries written): the postings
        # metric, counted where the commit is known to have happened.
        self._on_posted = on_posted

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlLedgerRepository]:
        try:
            async with outages_as_unavailable(), self._engine.begin() as conn:
                repo = SqlLedgerRepository(conn)
                yield repo
            if self._on_posted is not None and repo.transfers_posted:
                self._on_posted(repo.transfers_posted)
        except Exception as error:
            if _is_unique_violation(error):
                raise ConcurrentWrite(str(error)) from error
            raise

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[SqlLedgerRepository]:
        async with outages_as_unavailable(), self._engine.connect() as conn:
            yield SqlLedgerRepository(conn)

    async def ping(self) -> None:
        async with outages_as_unavailable(), self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def index_metadata(self, *, accounts: Set[str], transfers: Set[str]) -> None:
        """One btree expression index per field, `(metadata ->> 'field')`, which is what the listings'
        equality filters use: it costs writes only for the fields a schema declares, unlike a GIN
        index over every key of every transfer. Built CONCURRENTLY (postings go on), one builder at a
        time across ledger processes; an index a failed build left INVALID is dropped and built again."""
        wanted = [("accounts", f) for f in sorted(accounts)] + [("transfers", f) for f in sorted(transfers)]
        if not wanted:
            return
        async with outages_as_unavailable(), self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _INDEX_LOCK})
            try:
                for table, name in wanted:
                    index = _metadata_index(table, name)
                    valid = (
                        await conn.execute(
                            text(
                                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                                " WHERE c.relname = :n AND c.relnamespace = CAST(current_schema() AS regnamespace)"
                            ),
                            {"n": index},
                        )
                    ).scalar_one_or_none()
                    if valid:
                        continue
                    if valid is False:
                        await conn.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"'))
                    await conn.execute(
                        text(
                            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS \"{index}\" ON {table} ((metadata ->> '{name}'))"
                        )
                    )
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _INDEX_LOCK})


_INDEX_LOCK = int.from_bytes(b"payrecon:metadata-index"[:8], "big", signed=True)


def _indexable(name: str) -> str:
    """`name`, checked again here because it is written into SQL: the schema's strict shape only."""
    if not INDEXED_FIELD_SHAPE.fullmatch(name):
        raise ValueError(f"not an indexable metadata field: {name!r}")
    return name


def _metadata_index(table: str, name: str) -> str:
    return f"{table}_metadata_{_indexable(name)}"


def metadata_conditions(alias: str, metadata: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
    """` AND alias.metadata ->> 'field' = :mN` per filter: the field is written as a literal, so the
    expression matches the index's (a bound key would not)."""
    sql, params = "", {}
    for n, (name, value) in enumerate(sorted((metadata or {}).items())):
        sql += f" AND {alias}.metadata ->> '{_indexable(name)}' = :m{n}"
        params[f"m{n}"] = value
    return sql, params


def _is_unique_violation(error: BaseException | None) -> bool:
    """SQLSTATE 23505, from asyncpg directly (COPY on the raw connection) or wrapped by SQLAlchemy."""
    seen = 0
    while error is not None and seen < 5:
        if getattr(error, "sqlstate", None) == "23505":
            return True
        error = getattr(error, "orig", None) or error.__cause__
        seen += 1
    return False


@functools.lru_cache(maxsize=1 << 16)
def _event_group(account_id: str) -> str:
    return f"accounts-{zlib.crc32(account_id.encode()) % EVENT_GROUPS:04d}"


def _account(r: Any, metadata: dict[str, str] | None = None, created_at: datetime | None = None) -> Account:
    m = r._mapping
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
        m["account_class"],
    )


def _totals(account: Account) -> tuple[int, int, int, int]:
    return (account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending)


def _status_of(outcome: Outcome) -> str:
    if isinstance(outcome, Posted):
        return TransferStatus.POSTED.value
    if isinstance(outcome, Held):
        return TransferStatus.PENDING.value
    return TransferStatus.REJECTED.value


class SqlLedgerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._now: datetime | None = None
        self._accounts: dict[str, Account] = {}
        self._heads: dict[str, bytes] = {}
        self._before: dict[str, tuple[int, int, int, int]] = {}
        self.transfers_posted = 0  # transfers given entries in this transaction

    async def now(self) -> datetime:
        now: datetime = (await self._conn.execute(text("SELECT now()"))).scalar_one()
        self._now = now
        return now

    def _is_now(self, at: datetime) -> bool:
        """Whether `at` is this transaction's now(), which is what a created_at column left out of a
        COPY defaults to. Leaving it out is a third of COPY's client-side cost (encoding a timestamp
        is ~0.6 us a row; a posting writes three rows per transfer)."""
        return self._now is not None and at == self._now

    async def claim_messages(self, message_ids: Sequence[str]) -> set[str]:
        rows = await self._conn.execute(
            text(
                "INSERT INTO processed_messages (id) SELECT unnest(CAST(:ids AS text[]))"
                " ON CONFLICT DO NOTHING RETURNING id"
            ),
            {"ids": list(message_ids)},
        )
        return set(rows.scalars())

    async def transfer_records(self, transfer_ids: Sequence[str], *, lock: bool = False) -> dict[str, TransferRecord]:
        rows = await self._conn.execute(
            text(
                "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount_minor, t.currency, t.status, t.kind,"
                " t.reject_code, t.reject_message, t.metadata, t.created_at, t.accepted_at, t.posted_amount_minor,"
                " t.expires_at, t.resolved_at, t.reverses_transfer_id, t.reversed_by, t.reason, t.transfer_type,"
                " (SELECT id FROM entries WHERE transfer_id = t.id AND direction = 'DEBIT') AS debit_entry,"
                " (SELECT id FROM entries WHERE transfer_id = t.id AND direction = 'CREDIT') AS credit_entry"
                # One primary-key probe per id, whatever the table's size. A plain join on unnest lets
                # the planner hash the whole table instead once a batch is a few thousand ids against a
                # few hundred thousand transfers: every posting batch then read every transfer ever made
                # (95 ms a batch at 300k, growing with the ledger). The lateral LIMIT 1 cannot be
                # flattened into such a join.
                " FROM unnest(CAST(:ids AS text[])) AS k(id)"
                " CROSS JOIN LATERAL (SELECT * FROM transfers WHERE id = k.id LIMIT 1) AS t"
                # Locked per probe, so in the order of the ids: sorted, one global lock order.
                + (" ORDER BY t.id FOR UPDATE OF t" if lock else "")
            ),
            {"ids": sorted(transfer_ids) if lock else list(transfer_ids)},
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
                    code=r.transfer_type or "",
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

    async def lock_accounts(self, account_ids: set[str]) -> dict[str, Account]:
        wanted = sorted(set(account_ids) - self._accounts.keys())
        if wanted:
            rows = await self._conn.execute(
                text(
                    # A key probe per id (see transfer_records), each locking its row: in id order.
                    f"SELECT {_ACCOUNT_COLUMNS}, chain_head FROM unnest(CAST(:ids AS text[])) AS k(wanted)"
                    " CROSS JOIN LATERAL (SELECT * FROM accounts WHERE id = k.wanted LIMIT 1 FOR UPDATE) AS a"
                    " ORDER BY id"
                ),
                {"ids": wanted},
            )
            for r in rows:
                account = self._accounts[r.id] = _account(r)
                self._heads[r.id] = bytes(r.chain_head)
                self._before[r.id] = _totals(account)
        return self._accounts

    async def accounts_by_id(self, account_ids: set[str]) -> dict[str, Account]:
        if not account_ids:
            return {}
        rows = await self._conn.execute(
            text(
                f"SELECT {_ACCOUNT_COLUMNS} FROM unnest(CAST(:ids AS text[])) AS k(wanted)"
                " CROSS JOIN LATERAL (SELECT * FROM accounts WHERE id = k.wanted LIMIT 1) AS a"
            ),
            {"ids": sorted(account_ids)},
        )
        return {r.id: _account(r) for r in rows}

    async def open_accounts(self, currencies: dict[str, str]) -> None:
        # Inserted in id order and only then locked: still one global lock order, no deadlocks.
        await self._conn.execute(
            text(
                "INSERT INTO accounts (id, currency, type, allow_overdraft)"
                " SELECT id, cur, :type, true"
                " FROM unnest(CAST(:ids AS text[]), CAST(:curs AS text[])) AS a(id, cur)"
                " ORDER BY id ON CONFLICT (id) DO NOTHING"
            ),
            {"ids": list(currencies), "curs": list(currencies.values()), "type": AUTO_CREATED_TYPE.value},
        )

    async def open_classified_accounts(self, definitions: Sequence[AccountDefinition]) -> None:
        if not definitions:
            return
        await self._conn.execute(
            text(
                "INSERT INTO accounts (id, currency, type, allow_overdraft, overdraft_limit_minor, account_class)"
                " SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:curs AS text[]), CAST(:types AS text[]),"
                "   CAST(:ods AS boolean[]), CAST(:limits AS bigint[]), CAST(:classes AS text[]))"
                " ORDER BY 1 ON CONFLICT (id) DO NOTHING"
            ),
            {
                "ids": [d.id for d in definitions],
                "curs": [d.currency for d in definitions],
                "types": [d.type.value for d in definitions],
                "ods": [d.allow_overdraft for d in definitions],
                "limits": [d.overdraft_limit_minor for d in definitions],
                "classes": [d.account_class for d in definitions],
            },
        )

    async def insert_transfers(
        self,
        outcomes: Sequence[Outcome],
        at: datetime,
        *,
        reverses: str | None = None,
        reason: str | None = None,
        schema_version: int | None = None,
    ) -> None:
        kind = TransferKind.REVERSAL.value if reverses else None
        rows = []
        for o in outcomes:
            t = o.transfer
            rejected = o if type(o) is Rejected else None
            rows.append(
                (
                    t.transfer_id,
                    t.debit_account_id,
                    t.credit_account_id,
                    t.amount.minor_units,
                    t.amount.currency,
                    _status_of(o),
                    rejected.code if rejected else None,
                    rejected.message if rejected else None,
                    json.dumps(t.metadata) if t.metadata else "{}",
                    t.accepted_at,
                    kind or t.kind.value,
                    t.expires_at,
                    reverses,
                    reason,
                    t.code or None,
                    schema_version,
                    at,
                )
            )
        columns = _TRANSFER_COLUMNS[:-1] if self._is_now(at) else _TRANSFER_COLUMNS
        await self._copy_rows("transfers", columns, rows)

    async def append_entries(self, transfers: Sequence[TransferInstruction], at: datetime) -> list[tuple[int, int]]:
        if not transfers:
            return []
        self.transfers_posted += len(transfers)
        # One row holding an array: decoding thousands of one-column rows costs more than the query.
        ids = (
            await self._conn.execute(
                text("SELECT array_agg(nextval('entries_id_seq')) FROM generate_series(1, :n)"),
                {"n": 2 * len(transfers)},
            )
        ).scalar_one()
        entries = chain_entries(self._heads, transfers, ids, at)
        columns = ChainedEntry._fields[:-1] if self._is_now(at) else ChainedEntry._fields
        await self._copy_rows("entries", columns, entries)
        return [(ids[2 * i], ids[2 * i + 1]) for i in range(len(transfers))]

    async def save_accounts(self, at: datetime) -> None:
        changed = [a for a in self._accounts.values() if self._before[a.id] != _totals(a)]
        if not changed:
            return
        await self._conn.execute(
            text(
                "UPDATE accounts AS a SET debits_posted = u.dp, credits_posted = u.cp, debits_pending = u.dq,"
                " credits_pending = u.cq, chain_head = u.head, updated_at = :now"
                " FROM unnest(CAST(:ids AS text[]), CAST(:dp AS bigint[]), CAST(:cp AS bigint[]),"
                "             CAST(:dq AS bigint[]), CAST(:cq AS bigint[]), CAST(:heads AS bytea[]))"
                "      AS u(id, dp, cp, dq, cq, head)"
                # Each row found by a key probe (see transfer_records) and updated where that probe
                # found it: a join on the row's address is a TID scan, never a read of the table. The
                # rows are locked by this transaction, so the address is the current version's.
                " CROSS JOIN LATERAL (SELECT ctid AS found FROM accounts WHERE id = u.id LIMIT 1) AS k"
                " WHERE a.ctid = k.found"
            ),
            {
                "now": at,
                "ids": [a.id for a in changed],
                "dp": [a.debits_posted for a in changed],
                "cp": [a.credits_posted for a in changed],
                "dq": [a.debits_pending for a in changed],
                "cq": [a.credits_pending for a in changed],
                "heads": [self._heads[a.id] for a in changed],
            },
        )
        for account in changed:
            self._before[account.id] = _totals(account)

    async def settle_hold(self, hold_id: str, decision: HoldDecision, at: datetime) -> None:
        await self._conn.execute(
            text(
                "UPDATE transfers SET status = :status, posted_amount_minor = :posted, resolved_at = :now WHERE id = :id"
            ),
            {"status": decision.status.value, "posted": decision.posted_minor or None, "now": at, "id": hold_id},
        )

    async def mark_reversed(self, transfer_id: str, reversal_id: str) -> None:
        await self._conn.execute(
            text("UPDATE transfers SET reversed_by = :rid WHERE id = :id"), {"rid": reversal_id, "id": transfer_id}
        )

    async def queue_events(self, events: Sequence[LedgerEvent]) -> None:
        """One outbox row per message group (and per EVENTS_PER_ROW events) for the whole transaction."""
        if not events:
            return
        by_group: dict[str, list[LedgerEvent]] = {}
        for event in events:
            by_group.setdefault(_event_group(event.account_id), []).append(event)
        groups, payloads = [], []
        for group, grouped in by_group.items():
            for start in range(0, len(grouped), EVENTS_PER_ROW):
                groups.append(group)
                payloads.append(event_batch(grouped[start : start + EVENTS_PER_ROW]).SerializeToString())
        await self._conn.execute(
            text(
                "INSERT INTO outbox (message_group, payload, traceparent)"
                " SELECT grp, payload, :tp FROM unnest(CAST(:grps AS text[]), CAST(:payloads AS bytea[]))"
                "      AS o(grp, payload)"
            ),
            {"tp": current_traceparent(), "grps": groups, "payloads": payloads},
        )

    async def due_holds(self, limit: int) -> list[str]:
        rows = await self._conn.execute(
            text(
                "SELECT id FROM transfers WHERE status = 'PENDING' AND expires_at <= now()"
                " ORDER BY expires_at LIMIT :limit"
            ),
            {"limit": limit},
        )
        return [r.id for r in rows]

    async def schema_version_in_force(self, *, hold: bool = True) -> int:
        lock = " FOR KEY SHARE" if hold else ""
        version: int = (await self._conn.execute(text(f"SELECT version FROM schema_in_force{lock}"))).scalar_one()
        return version

    async def lock_schema(self) -> int:
        version: int = (await self._conn.execute(text("SELECT version FROM schema_in_force FOR UPDATE"))).scalar_one()
        return version

    async def schema_versions(self, version: int | None = None) -> list[AppliedSchema]:
        rows = await self._conn.execute(
            text(
                "SELECT version, document, applied_by, applied_at FROM schema_versions"
                " WHERE CAST(:v AS integer) IS NULL OR version = :v ORDER BY version"
            ),
            {"v": version},
        )
        return [AppliedSchema(r.version, dict(r.document), r.applied_by, r.applied_at) for r in rows]

    async def add_schema_version(self, version: int, document: str, applied_by: str) -> AppliedSchema:
        r = (
            await self._conn.execute(
                text(
                    "WITH head AS (UPDATE schema_in_force SET version = :v)"
                    " INSERT INTO schema_versions (version, document, applied_by) VALUES (:v, CAST(:doc AS jsonb), :by)"
                    " RETURNING version, document, applied_by, applied_at"
                ),
                {"v": version, "doc": document, "by": applied_by},
            )
        ).one()
        return AppliedSchema(r.version, dict(r.document), r.applied_by, r.applied_at)

    async def existing_accounts(self) -> list[ExistingAccount]:
        rows = await self._conn.execute(text("SELECT id, currency, account_class FROM accounts ORDER BY id"))
        return [ExistingAccount(r.id, r.currency, r.account_class) for r in rows]

    async def create_account(self, definition: AccountDefinition) -> tuple[Account, bool]:
        inserted = (
            await self._conn.execute(
                text(
                    "INSERT INTO accounts (id, currency, type, allow_overdraft, overdraft_limit_minor, metadata,"
                    " account_class)"
                    " VALUES (:id, :cur, :type, :od, :limit, CAST(:meta AS jsonb), :cls) ON CONFLICT (id) DO NOTHING"
                    " RETURNING id"
                ),
                {
                    "id": definition.id,
                    "cur": definition.currency,
                    "type": definition.type.value,
                    "od": definition.allow_overdraft,
                    "limit": definition.overdraft_limit_minor,
                    "meta": json.dumps(definition.metadata),
                    "cls": definition.account_class,
                },
            )
        ).first()
        account = await self.account(definition.id)
        if account is None:
            raise LookupError(f"account {definition.id!r} vanished while it was being opened")
        return account, inserted is not None

    async def account(self, account_id: str) -> Account | None:
        accounts = await self._select_accounts("WHERE id = :id", {"id": account_id})
        return accounts[0] if accounts else None

    async def accounts_after(
        self, after_id: str | None, limit: int, *, metadata: Mapping[str, str] | None = None
    ) -> list[Account]:
        filters, params = metadata_conditions("accounts", metadata)
        return await self._select_accounts(
            f"WHERE (CAST(:after AS text) IS NULL OR id > :after){filters} ORDER BY id LIMIT :limit",
            {"after": after_id, "limit": limit, **params},
        )

    async def _select_accounts(self, where: str, params: dict[str, object]) -> list[Account]:
        rows = await self._conn.execute(
            text(f"SELECT {_ACCOUNT_COLUMNS}, metadata, created_at FROM accounts {where}"), params
        )
        return [_account(r, dict(r.metadata), r.created_at) for r in rows]

    async def totals_as_of(self, account_id: str, as_of: datetime) -> tuple[int, int, int]:
        r = (
            await self._conn.execute(
                text(
                    "SELECT coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
                    " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c,"
                    " coalesce(max(id), 0) AS last"
                    " FROM entries WHERE account_id = :id AND created_at <= :as_of"
                ),
                {"id": account_id, "as_of": as_of},
            )
        ).one()
        return int(r.d), int(r.c), int(r.last)

    async def entries(
        self,
        account_id: str,
        *,
        limit: int,
        before_id: int | None,
        since: datetime | None = None,
        until: datetime | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[LedgerEntry]:
        filters, params = metadata_conditions("t", metadata)
        rows = await self._conn.execute(
            text(
                "SELECT e.id, e.transfer_id, e.account_id, e.direction, e.amount_minor, e.currency,"
                " t.debit_account_id, t.credit_account_id, t.status, t.metadata, e.created_at"
                " FROM entries e JOIN transfers t ON t.id = e.transfer_id"
                " WHERE e.account_id = :id AND (CAST(:before AS bigint) IS NULL OR e.id < :before)"
                " AND (CAST(:since AS timestamptz) IS NULL OR e.created_at >= :since)"
                " AND (CAST(:until AS timestamptz) IS NULL OR e.created_at < :until)"
                f"{filters} ORDER BY e.id DESC LIMIT :limit"
            ),
            {"id": account_id, "before": before_id, "limit": limit, "since": since, "until": until, **params},
        )
        return [
            LedgerEntry(
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

    async def _copy_rows(self, table: str, columns: Sequence[str], records: Sequence[tuple[object, ...]]) -> None:
        """Bulk insert with binary COPY on this transaction's own connection: for thousands of rows it
        costs the database about half of INSERT … SELECT FROM unnest(…). A record may be longer than
        `columns`: COPY sends its first len(columns) values."""
        driver = await driver_connection(self._conn)
        await driver.copy_records_to_table(table, records=records, columns=list(columns))
