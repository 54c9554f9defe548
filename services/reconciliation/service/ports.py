"""What reconciliation's use cases need from the outside: the ledger (its gRPC API), a statement
parser (the file formats), and the context's own store (projection of ledger events, imported
statements, matching rules, runs, matches and cases). Adapters implement them; unit tests use fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from services.reconciliation.domain.cases import CasePlan, CaseState, CaseStatus
from services.reconciliation.domain.model import Report, TransferSides, Window
from services.reconciliation.domain.statements import ParsedFile, Statement, StatementFormat

I64 = NDArray[np.int64]


@dataclass(frozen=True)
class LedgerBalance:
    balance_minor: int
    currency: str
    debit_normal: bool
    last_entry_id: int = 0  # the newest entry the balance counts: the projection's watermark
    # The account's class under the ledger's schema in force ('' for none) and that version (0: no schema).
    account_class: str = ""
    schema_version: int = 0


@dataclass(frozen=True)
class LedgerAccount:
    id: str
    account_class: str  # the schema class it was opened under ('' when opened with no schema in force)


class Ledger(Protocol):
    async def balance_as_of(self, account_id: str, as_of: datetime) -> LedgerBalance | None:
        """None when the ledger does not know the account."""
        ...

    async def schema(self, version: int) -> tuple[int, Mapping[str, Any]] | None:
        """(version, document) of that schema version, or of the one in force with 0; None when no schema
        was ever applied."""
        ...

    async def accounts_with_metadata(self, field: str, value: str, limit: int) -> list[LedgerAccount]:
        """At most `limit` accounts whose metadata `field` (indexed by the schema in force) is `value`."""
        ...

    async def post_adjustment(
        self,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> str:
        """Posts a correcting transfer (idempotent by id); returns the ledger's outcome code ('' when posted).
        Raises Unavailable when the ledger cannot be reached."""
        ...


@dataclass(frozen=True)
class PendingTransfer:
    """A transfer ingest accepted (202) whose outcome the ledger has not given yet."""

    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount_minor: int
    currency: str
    accepted_at: datetime
    redrive_count: int


class AcceptedTransfers(Protocol):
    async def pending(self, account_id: str, older_than_seconds: int) -> list[PendingTransfer]:
        """Requests touching the account still PROCESSING after `older_than_seconds`."""
        ...


class StatementParser(Protocol):
    def parse(self, content: bytes, fmt: StatementFormat | None, csv_mapping: Mapping[str, Any] | None) -> ParsedFile:
        """Raises StatementFileError (row errors with lines) and ValueError (a CSV mapping that makes no sense)."""
        ...


@dataclass(frozen=True)
class StatementLineRecord:
    """A stored statement line, as matching and evidence use it."""

    id: int
    line_no: int
    amount_minor: int
    currency: str
    booking_date: date | None
    value_date: date
    reference: str | None
    end_to_end_id: str | None
    description: str
    counterparty: str | None
    bank_account: str


@dataclass(frozen=True)
class ProjectedEntry:
    """A ledger entry of the reconciled account, as the projection holds it."""

    entry_id: int
    transfer_id: str
    direction: str
    amount_minor: int
    currency: str
    posted_at: datetime
    reference: str | None
    end_to_end_id: str | None


@dataclass(frozen=True)
class StoredStatement:
    bank_account: str
    currency: str
    opening_balance_minor: int | None
    closing_balance_minor: int | None
    opening_date: date | None
    closing_date: date | None
    first_line_date: date | None
    last_line_date: date | None


@dataclass(frozen=True)
class StoredImport:
    id: str
    summary: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class CaseEventRecord:
    action: str
    actor: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class CaseRecord:
    id: str
    account_id: str
    kind: str
    status: CaseStatus
    severity: str
    message: str
    amount_minor: int | None
    currency: str
    evidence: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    adjustment_transfer_id: str | None
    history: list[CaseEventRecord] = field(default_factory=list)


@dataclass(frozen=True)
class CaseFilter:
    account_id: str | None = None
    kind: str | None = None
    status: CaseStatus | None = None
    opened_before: datetime | None = None


@dataclass(frozen=True)
class MatchRecord:
    kind: str
    statement_line_ids: tuple[int, ...]
    transfer_ids: tuple[str, ...]
    rule: str
    confidence: float
    breakdown: Mapping[str, float]
    amount_difference_minor: int


@dataclass(frozen=True)
class PairMatches:
    """The one-to-one matches of a large run, in columns: statement line id, ledger entry id (the store
    writes its transfer id), rule (`rules[rule_index]`), confidence, breakdown (`breakdowns[breakdown_index]`)
    and Σ statement - Σ ledger, one row each."""

    statement_line_id: NDArray[np.int64]
    entry_id: NDArray[np.int64]
    rules: tuple[str, ...]
    rule_index: NDArray[np.int64]
    confidence: NDArray[np.float64]
    breakdown_index: NDArray[np.int64]
    breakdowns: list[dict[str, float]]
    amount_difference_minor: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.statement_line_id.size)


# An answer (a run's report, as returned and as read back) lists at most this many discrepancies and
# case ids; the run stores every one (its export and the cases API list them all).
REPORT_LISTS_AT_MOST = 1000


@dataclass(frozen=True)
class RunToSave:
    """A run as stored: its report (`report`: every discrepancy; `rendered`: as answered), its matches
    (`pairs`: more one-to-one matches, in columns), the rules' version and the event watermark."""

    report: Report
    rendered: dict[str, object]
    matches: Sequence[MatchRecord]
    rules_version: int
    watermark: str
    pairs: PairMatches | None = None


class CasesChanged(Exception):
    """The account's cases changed between reading them and writing a run's plan (another run wrote
    some): the plan must be made again."""


@dataclass(frozen=True)
class LineChunk:
    """Statement lines as matching reads them, a column of int64 each: days are `date.toordinal()`, -1 for
    none; currencies as integers, equal when the currencies are; the reference, end-to-end id and
    description as codes of their text as `CodeBook` normalises it (stripped; references case-folded
    when the rules say so; descriptions never), equal for equal texts, NO_CODE when empty. `checks` holds
    a second, independent code of each of those three columns (end to end), so that two texts sharing a
    code can be told apart (`separate_collisions`)."""

    id: I64
    amount_minor: I64
    currency: I64
    value_day: I64
    booking_day: I64
    reference: I64
    end_to_end_id: I64
    description: I64
    checks: I64


@dataclass(frozen=True)
class EntryChunk:
    """Projected entries as matching reads them, like LineChunk: amounts signed from the account's view;
    reference, end-to-end id and transfer id coded as a line's reference, `checks` theirs; `id` is the
    entry id."""

    id: I64
    amount_minor: I64
    currency: I64
    posted_day: I64
    reference: I64
    end_to_end_id: I64
    transfer_id: I64
    checks: I64


@dataclass(frozen=True)
class ExportMatch:
    """A stored match with the amount of its statement lines (Σ, in their currency)."""

    kind: str
    rule: str
    confidence: float
    breakdown: Mapping[str, float]
    amount_difference_minor: int
    statement_line_ids: tuple[int, ...]
    transfer_ids: tuple[str, ...]
    amount_minor: int | None
    currency: str


@dataclass(frozen=True)
class ExportCase:
    """A discrepancy of a run's report with its case's current status and evidence."""

    case_id: str
    kind: str
    status: str
    severity: str
    message: str
    amount_minor: int | None
    currency: str
    statement_line_ids: tuple[str, ...]
    transfer_ids: tuple[str, ...]
    evidence: Mapping[str, Any]


@dataclass(frozen=True)
class StoredRun:
    id: str
    created_at: datetime
    report: dict[str, Any]


class ReconciliationStore(Protocol):
    # -- projection and ledger-side reads --------------------------------------------------------
    async def totals_until(self, account_id: str, until: datetime) -> tuple[int, int, str | None]: ...

    async def holds_entry(self, account_id: str, entry_id: int) -> bool: ...

    async def unbalanced_transfers(self, account_id: str, window: Window) -> tuple[int, list[TransferSides]]:
        """(how many transfers touch the account in the window, those of them whose sides differ)."""
        ...

    async def entries_in(self, account_id: str, start: datetime, end: datetime) -> list[ProjectedEntry]: ...

    async def accounts_with_statements(self, account_ids: Sequence[str]) -> list[str]: ...

    async def knows_account(self, account_id: str) -> bool:
        """Whether the projection or an imported statement names the account."""
        ...

    # -- statements ------------------------------------------------------------------------------
    async def find_import(self, account_id: str, sha256: str) -> StoredImport | None: ...

    async def previous_closing(self, account_id: str, bank_account: str, before: date | None) -> int | None:
        """The closing balance of the newest stored statement of that bank account closing before `before`."""
        ...

    async def save_import(
        self,
        account_id: str,
        fmt: StatementFormat,
        sha256: str,
        file_name: str,
        statements: Sequence[tuple[Statement, str]],
        summary: dict[str, Any],
        actor: str,
    ) -> StoredImport | None:
        """Stores the file's statements (each with its continuity verdict) and lines in one
        transaction; None when the same file was stored meanwhile (by a concurrent import)."""
        ...

    async def csv_mapping(self, account_id: str) -> dict[str, Any] | None: ...

    async def save_csv_mapping(self, account_id: str, mapping: Mapping[str, Any]) -> None: ...

    async def statements_in(self, account_id: str, first: date, last: date) -> list[StoredStatement]: ...

    async def lines_in(self, account_id: str, first: date, last: date) -> list[StatementLineRecord]: ...

    async def line_span(self, account_id: str, first: date, last: date) -> tuple[int, date, date] | None:
        """How many lines `lines_in` would return (booked, valued from `first` to `last`) and their first
        and last value dates, in one look; None when there are none."""
        ...

    def line_columns(self, account_id: str, first: date, last: date, *, casefold: bool) -> AsyncIterator[LineChunk]:
        """`lines_in`'s lines as columns, in chunks, in any order; references case-folded with `casefold`."""
        ...

    def entry_columns(
        self, account_id: str, start: datetime, end: datetime, debit_normal: bool, *, casefold: bool
    ) -> AsyncIterator[EntryChunk]:
        """`entries_in`'s entries as columns, in chunks, in any order; references case-folded with `casefold`."""
        ...

    async def lines_by_id(self, ids: Sequence[int]) -> list[StatementLineRecord]: ...

    async def entries_by_id(self, account_id: str, entry_ids: Sequence[int]) -> list[ProjectedEntry]: ...

    async def transfer_ids(self, account_id: str, entry_ids: Sequence[int]) -> dict[int, str]:
        """Entry id → transfer id of the account's projected entries with those ids."""
        ...

    # -- rules -----------------------------------------------------------------------------------
    async def rules(self, account_id: str) -> tuple[int, dict[str, Any], datetime | None, str]:
        """(version, rules, saved at, saved by); version 0 and {} for the defaults."""
        ...

    async def save_rules(self, account_id: str, rules: Mapping[str, Any], actor: str) -> int: ...

    # -- runs, matches, cases --------------------------------------------------------------------
    async def record_run(
        self,
        account_id: str,
        window: Window,
        plan: CasePlan,
        opened: Mapping[str, str],
        known_cases: int,
        run: RunToSave,
    ) -> tuple[str, datetime]:
        """Writes the plan's case changes with their history (`opened`: fingerprint → id drawn for each
        new case), then the run with its matches: (run id, created at). Raises CasesChanged when the
        account no longer has `known_cases` cases."""
        ...

    async def runs(
        self, account_id: str | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[StoredRun]: ...

    async def run(self, run_id: str) -> StoredRun | None: ...

    def run_matches(self, run_id: str) -> AsyncIterator[Sequence[ExportMatch]]:
        """The run's matches in batches, in the order they were stored."""
        ...

    def run_cases(self, run_id: str) -> AsyncIterator[Sequence[ExportCase]]:
        """The run's discrepancies in batches, in the report's order, with their cases."""
        ...

    async def cases_of(self, account_id: str, window: Window) -> tuple[dict[str, CaseState], list[str]]:
        """(fingerprint → case for every case of the account, fingerprints of the cases the window covers)."""
        ...

    async def cases(self, where: CaseFilter, before: tuple[datetime, str] | None, limit: int) -> list[CaseRecord]: ...

    async def case(self, case_id: str, *, lock: bool = False) -> CaseRecord | None: ...

    async def changes_since(
        self, account_id: str | None, after: tuple[datetime, str], limit: int
    ) -> tuple[list[CaseRecord], list[StoredRun]]:
        """Cases updated and runs created after `after` (time, id), oldest first."""
        ...

    async def transition_case(
        self,
        case_id: str,
        status: CaseStatus,
        event: str,
        actor: str,
        reason: str,
        adjustment_transfer_id: str | None = None,
    ) -> None: ...
