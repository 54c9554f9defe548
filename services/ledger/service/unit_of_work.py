"""The ports the ledger's use cases depend on: a repository over one transaction, and the unit of
work that opens it. PostgreSQL implements them in services.ledger.adapters.repository; the unit
tests use an in-memory fake.

Lock order inside a transaction, the same for every use case so none can deadlock: the transfer
row (a hold or a reversal's original) first, then accounts in id order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from services.ledger.domain.events import LedgerEvent
from services.ledger.domain.model import Account, AccountDefinition, LedgerEntry, Outcome, TransferInstruction
from services.ledger.domain.schema import AppliedSchema, ExistingAccount
from services.ledger.domain.transfers import HoldDecision, TransferRecord


class ConcurrentWrite(Exception):
    """Another transaction recorded the same id first (a unique key refused the row); the whole unit
    of work was rolled back, and running it again finds that id known."""


class LedgerRepository(Protocol):
    """Reads and writes of the ledger's data inside one transaction. Accounts locked by
    `lock_accounts` are tracked: `append_entries` advances their hash chains and `save_accounts`
    writes back those whose totals changed."""

    async def now(self) -> datetime:
        """The transaction's clock (one instant for everything it writes)."""
        ...

    async def claim_messages(self, message_ids: Sequence[str]) -> set[str]:
        """Records the queued messages as applied; returns those not applied before."""
        ...

    async def transfer_records(
        self, transfer_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, TransferRecord]: ...

    async def lock_accounts(self, account_ids: set[str]) -> dict[str, Account]:
        """Locks the existing accounts among `account_ids` in id order; returns every account locked
        in this transaction so far, by id."""
        ...

    async def accounts_by_id(self, account_ids: set[str]) -> dict[str, Account]:
        """The existing accounts among `account_ids`, by id, read without locking them."""
        ...

    async def open_accounts(self, currencies: dict[str, str]) -> None:
        """Opens auto-created accounts (id → currency) that do not exist yet."""
        ...

    async def open_classified_accounts(self, definitions: Sequence[AccountDefinition]) -> None:
        """Opens accounts a transfer opens under the schema's classes (type, overdraft, class)."""
        ...

    async def insert_transfers(
        self,
        outcomes: Sequence[Outcome],
        at: datetime,
        *,
        reverses: str | None = None,
        reason: str | None = None,
        schema_version: int | None = None,
    ) -> None: ...

    async def append_entries(self, transfers: Sequence[TransferInstruction], at: datetime) -> list[tuple[int, int]]:
        """A debit and a credit entry per transfer on locked accounts; their (debit, credit) ids."""
        ...

    async def save_accounts(self, at: datetime) -> None: ...

    async def settle_hold(self, hold_id: str, decision: HoldDecision, at: datetime) -> None: ...

    async def mark_reversed(self, transfer_id: str, reversal_id: str) -> None: ...

    async def queue_events(self, events: Sequence[LedgerEvent]) -> None:
        """Queues events in the outbox, ordered per account."""
        ...

    async def due_holds(self, limit: int) -> list[str]: ...

    # -- the schema: a posting transaction reads the version in force under a shared row lock, and a
    # new version is written under the exclusive one, so no posting straddles a change.

    async def schema_version_in_force(self, *, hold: bool = True) -> int:
        """The version in force (0: no schema), held until the transaction ends (`hold`: a posting
        must not straddle a change; a pre-check that stores nothing need not hold it)."""
        ...

    async def lock_schema(self) -> int:
        """Waits for postings in flight, keeps new ones out until the transaction ends; the version in force."""
        ...

    async def schema_versions(self, version: int | None = None) -> list[AppliedSchema]:
        """Every applied version, oldest first; only `version` when given."""
        ...

    async def add_schema_version(self, version: int, document: str, applied_by: str) -> AppliedSchema: ...

    async def existing_accounts(self) -> list[ExistingAccount]:
        """Every account's id, currency and the class it was opened under."""
        ...

    async def create_account(self, definition: AccountDefinition) -> tuple[Account, bool]:
        """(the account, created?) — an existing id is returned as it is."""
        ...

    async def account(self, account_id: str) -> Account | None: ...

    async def accounts_after(
        self, after_id: str | None, limit: int, *, metadata: Mapping[str, str] | None = None
    ) -> list[Account]:
        """Accounts in id order after `after_id`, only those whose metadata has every field: value given."""
        ...

    async def totals_as_of(self, account_id: str, as_of: datetime) -> tuple[int, int, int]:
        """(Σ debits, Σ credits, newest entry id or 0) of the account's entries posted at or before `as_of`."""
        ...

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
        """Newest first, older than `before_id` when given, posted in [since, until), of transfers whose
        metadata has every field: value of `metadata`."""
        ...


class LedgerUnitOfWork(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[LedgerRepository]:
        """One database transaction: committed when the block ends, rolled back when it raises."""
        ...

    def reading(self) -> AbstractAsyncContextManager[LedgerRepository]:
        """A connection for reads (no locks, nothing to commit)."""
        ...

    async def index_metadata(self, *, accounts: Set[str], transfers: Set[str]) -> None:
        """Makes sure an index serves equality filters on each named metadata field of accounts and of
        transfers (names of the schema's INDEXED_FIELD_SHAPE). Outside any transaction; idempotent."""
        ...

    async def ping(self) -> None: ...
