"""An in-memory ledger unit of work, for unit tests of the ledger's use cases (no IO).

It keeps what PostgreSQL keeps (accounts with totals and chain heads, transfers, entries, applied
messages, queued events) and rolls a transaction back when its block raises, like the real one.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from services.ledger.domain.chain import GENESIS, ChainedEntry, chain_entries
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
from services.ledger.domain.schema import AppliedSchema, ExistingAccount
from services.ledger.domain.transfers import HoldDecision, TransferRecord
from services.ledger.service.unit_of_work import ConcurrentWrite


@dataclass
class LedgerState:
    accounts: dict[str, Account] = field(default_factory=dict)
    heads: dict[str, bytes] = field(default_factory=dict)
    transfers: dict[str, TransferRecord] = field(default_factory=dict)
    entries: list[ChainedEntry] = field(default_factory=list)
    messages: set[str] = field(default_factory=set)
    events: list[LedgerEvent] = field(default_factory=list)
    next_entry_id: int = 1
    schemas: list[AppliedSchema] = field(default_factory=list)
    clock: datetime = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class FakeLedgerRepository:
    def __init__(self, state: LedgerState) -> None:
        self.state = state
        self.locked: dict[str, Account] = {}

    async def now(self) -> datetime:
        return self.state.clock

    async def claim_messages(self, message_ids: Sequence[str]) -> set[str]:
        fresh = set(message_ids) - self.state.messages
        self.state.messages |= fresh
        return fresh

    async def transfer_records(self, transfer_ids: Sequence[str], *, lock: bool = False) -> dict[str, TransferRecord]:
        return {tid: self.state.transfers[tid] for tid in transfer_ids if tid in self.state.transfers}

    async def lock_accounts(self, account_ids: set[str]) -> dict[str, Account]:
        for account_id in sorted(account_ids):
            if account_id in self.state.accounts:
                self.locked[account_id] = self.state.accounts[account_id]
        return self.locked

    async def accounts_by_id(self, account_ids: set[str]) -> dict[str, Account]:
        return {i: self.state.accounts[i] for i in account_ids if i in self.state.accounts}

    async def open_accounts(self, currencies: dict[str, str]) -> None:
        for account_id, currency in sorted(currencies.items()):
            if account_id not in self.state.accounts:
                self.state.accounts[account_id] = Account(
                    account_id, currency, AUTO_CREATED_TYPE, True, created_at=self.state.clock
                )
                self.state.heads[account_id] = GENESIS

    async def open_classified_accounts(self, definitions: Sequence[AccountDefinition]) -> None:
        for d in definitions:
            if d.id not in self.state.accounts:
                self.state.accounts[d.id] = Account(
                    d.id,
                    d.currency,
                    d.type,
                    d.allow_overdraft,
                    d.overdraft_limit_minor,
                    created_at=self.state.clock,
                    account_class=d.account_class,
                )
                self.state.heads[d.id] = GENESIS

    async def insert_transfers(
        self,
        outcomes: Sequence[Outcome],
        at: datetime,
        *,
        reverses: str | None = None,
        reason: str | None = None,
        schema_version: int | None = None,
    ) -> None:
        for o in outcomes:
            if o.transfer.transfer_id in self.state.transfers:
                raise ConcurrentWrite(f"duplicate key {o.transfer.transfer_id!r}")
            status = (
                TransferStatus.POSTED
                if isinstance(o, Posted)
                else TransferStatus.PENDING
                if isinstance(o, Held)
                else TransferStatus.REJECTED
            )
            self.state.transfers[o.transfer.transfer_id] = TransferRecord(
                o.transfer,
                TransferKind.REVERSAL if reverses else o.transfer.kind,
                status,
                o.code if isinstance(o, Rejected) else None,
                o.message if isinstance(o, Rejected) else None,
                at,
                expires_at=o.transfer.expires_at,
                reverses_transfer_id=reverses,
                reason=reason,
            )

    async def append_entries(self, transfers: Sequence[TransferInstruction], at: datetime) -> list[tuple[int, int]]:
        start = self.state.next_entry_id
        ids = list(range(start, start + 2 * len(transfers)))
        self.state.next_entry_id += len(ids)
        self.state.entries.extend(chain_entries(self.state.heads, transfers, ids, at))
        pairs = [(ids[2 * i], ids[2 * i + 1]) for i in range(len(transfers))]
        for t, (debit, credit) in zip(transfers, pairs, strict=True):
            record = self.state.transfers.get(t.transfer_id)
            if record is not None:
                self.state.transfers[t.transfer_id] = replace(record, debit_entry_id=debit, credit_entry_id=credit)
        return pairs

    async def save_accounts(self, at: datetime) -> None:
        return None  # the locked accounts are the state's own objects

    async def settle_hold(self, hold_id: str, decision: HoldDecision, at: datetime) -> None:
        record = self.state.transfers[hold_id]
        entries = [e for e in self.state.entries if e.transfer_id == hold_id]
        self.state.transfers[hold_id] = replace(
            record,
            status=decision.status,
            posted_amount_minor=decision.posted_minor or None,
            resolved_at=at,
            debit_entry_id=entries[0].id if entries else None,
            credit_entry_id=entries[1].id if entries else None,
        )

    async def mark_reversed(self, transfer_id: str, reversal_id: str) -> None:
        self.state.transfers[transfer_id] = replace(self.state.transfers[transfer_id], reversed_by=reversal_id)

    async def queue_events(self, events: Sequence[LedgerEvent]) -> None:
        self.state.events.extend(events)

    async def due_holds(self, limit: int) -> list[str]:
        due = [
            r.id
            for r in self.state.transfers.values()
            if r.status is TransferStatus.PENDING and r.expires_at is not None and r.expires_at <= self.state.clock
        ]
        return due[:limit]

    async def schema_version_in_force(self, *, hold: bool = True) -> int:
        return self.state.schemas[-1].version if self.state.schemas else 0

    async def lock_schema(self) -> int:
        return await self.schema_version_in_force()

    async def schema_versions(self, version: int | None = None) -> list[AppliedSchema]:
        return [a for a in self.state.schemas if version is None or a.version == version]

    async def add_schema_version(self, version: int, document: str, applied_by: str) -> AppliedSchema:
        if any(a.version == version for a in self.state.schemas):
            raise ConcurrentWrite(f"duplicate schema version {version}")
        applied = AppliedSchema(version, json.loads(document), applied_by, self.state.clock)
        self.state.schemas.append(applied)
        return applied

    async def existing_accounts(self) -> list[ExistingAccount]:
        return [
            ExistingAccount(a.id, a.currency, a.account_class)
            for a in sorted(self.state.accounts.values(), key=lambda a: a.id)
        ]

    async def create_account(self, definition: AccountDefinition) -> tuple[Account, bool]:
        existing = self.state.accounts.get(definition.id)
        if existing is not None:
            return existing, False
        account = Account(
            definition.id,
            definition.currency,
            definition.type,
            definition.allow_overdraft,
            definition.overdraft_limit_minor,
            metadata=dict(definition.metadata),
            created_at=self.state.clock,
            account_class=definition.account_class,
        )
        self.state.accounts[definition.id] = account
        self.state.heads[definition.id] = GENESIS
        return account, True

    async def account(self, account_id: str) -> Account | None:
        return self.state.accounts.get(account_id)

    async def accounts_after(
        self, after_id: str | None, limit: int, *, metadata: Mapping[str, str] | None = None
    ) -> list[Account]:
        ordered = sorted(self.state.accounts.values(), key=lambda a: a.id)
        wanted = (metadata or {}).items()
        return [a for a in ordered if (after_id is None or a.id > after_id) and wanted <= dict(a.metadata).items()][
            :limit
        ]

    async def totals_as_of(self, account_id: str, as_of: datetime) -> tuple[int, int, int]:
        mine = [e for e in self.state.entries if e.account_id == account_id and e.created_at <= as_of]
        return (
            sum(e.amount_minor for e in mine if e.direction == "DEBIT"),
            sum(e.amount_minor for e in mine if e.direction == "CREDIT"),
            max((e.id for e in mine), default=0),
        )

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
        wanted = (metadata or {}).items()
        rows = []
        for e in sorted(self.state.entries, key=lambda e: -e.id):
            if e.account_id != account_id or (before_id is not None and e.id >= before_id):
                continue
            if (since and e.created_at < since) or (until and e.created_at >= until):
                continue
            t = self.state.transfers[e.transfer_id]
            if not wanted <= dict(t.instruction.metadata).items():
                continue
            rows.append(
                LedgerEntry(
                    e.id,
                    e.transfer_id,
                    e.account_id,
                    e.direction,
                    e.amount_minor,
                    e.currency,
                    t.instruction.debit_account_id,
                    t.instruction.credit_account_id,
                    t.status.value,
                    t.instruction.metadata,
                    e.created_at,
                )
            )
        return rows[:limit]


class FakeLedgerUnitOfWork:
    """Commits by keeping the state; a block that raises restores the state it started from."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.commits = 0
        self.repository_class: type[FakeLedgerRepository] = FakeLedgerRepository  # a test may break it on purpose
        self.indexed: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())  # (accounts, transfers)

    def advance(self, seconds: float) -> None:
        self.state.clock += timedelta(seconds=seconds)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeLedgerRepository]:
        saved = copy.deepcopy(self.state)
        try:
            yield self.repository_class(self.state)
        except BaseException:
            self.state.__dict__.update(saved.__dict__)
            raise
        self.commits += 1

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[FakeLedgerRepository]:
        yield FakeLedgerRepository(self.state)

    async def ping(self) -> None:
        return None

    async def index_metadata(self, *, accounts: Set[str], transfers: Set[str]) -> None:
        self.indexed = (frozenset(accounts), frozenset(transfers))

    def balance(self, account_id: str) -> int:
        return self.state.accounts[account_id].balance_minor

    def open(self, account_id: str, *, kind: AccountType = AccountType.LIABILITY, overdraft: bool = False) -> None:
        self.state.accounts[account_id] = Account(account_id, "USD", kind, overdraft, created_at=self.state.clock)
        self.state.heads[account_id] = GENESIS
