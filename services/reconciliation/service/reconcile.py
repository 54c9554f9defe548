"""Reconciliation's use cases: import a statement, match it against the ledger, keep the cases, and
answer the seed's reconcile call for an account and window.

Matching runs over an account and window each time new data arrives (an import) and on demand (a
reconcile call): the statement lines of the window against the ledger entries the projection holds,
with the account's rules in force (its saved rules, else its schema class's defaults, else the built-in
ones: see domain/class_defaults.py). Its breaks become cases (see domain/cases.py), so running it
again is harmless: a break found again updates its case; a break gone resolves it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from services.kernel.errors import NotFound, ValidationError
from services.kernel.money import format_minor
from services.kernel.runtime import cyclic_collector_paused
from services.reconciliation.domain.cases import (
    SYSTEM_ACTOR,
    CaseAction,
    CaseEventKind,
    CaseStatus,
    Finding,
    next_status,
    parse_action,
    plan_cases,
)
from services.reconciliation.domain.class_defaults import (
    RulesInForce,
    SchemaDefaults,
    choose_rules,
    parse_rules,
    read_schema_defaults,
)
from services.reconciliation.domain.model import (
    BALANCE_DRIFT,
    Discrepancy,
    Report,
    TransferSides,
    Window,
    check_account,
    parse_window,
    validate_account_id,
)
from services.reconciliation.domain.statements import (
    BalanceCheck,
    ParsedFile,
    Statement,
    StatementFileError,
    StatementFormat,
)
from services.reconciliation.service.export import encode_run, parse_format
from services.reconciliation.service.matching_run import COLUMNAR_FROM_LINES, day_start, match_window
from services.reconciliation.service.ports import (
    REPORT_LISTS_AT_MOST,
    AcceptedTransfers,
    CaseFilter,
    CaseRecord,
    CasesChanged,
    Ledger,
    LedgerBalance,
    ReconciliationStore,
    RunToSave,
    StatementParser,
    StoredRun,
)

log = logging.getLogger(__name__)

SUSPENSE_ACCOUNT = "suspense"
# A run whose account's cases another run changed meanwhile plans its cases again, this many times in all.
_PLAN_ATTEMPTS = 3
# Row errors of a rejected file carried in its error's details: gRPC trailers are limited to a few KiB.
MAX_REPORTED_ROW_ERRORS = 20
# Ages reach back from now: beyond a century there is nothing to find, and far beyond it no datetime.
MAX_AGE_SECONDS = 100 * 366 * 86400
MAX_PAGE = 500
# A page of stored runs stops growing past this much report JSON: the gateway buffers a whole answer.
MAX_RUNS_PAGE_BYTES = 512 * 1024
DEFAULT_PAGE = 50
# A statement routed by its account id to more ledger accounts than this lists only these.
MAX_LISTED_ACCOUNTS = 10
STATEMENT_ACCOUNT_UNKNOWN = "STATEMENT_ACCOUNT_UNKNOWN"
STATEMENT_ACCOUNT_AMBIGUOUS = "STATEMENT_ACCOUNT_AMBIGUOUS"
STATEMENT_ACCOUNTS_MIXED = "STATEMENT_ACCOUNTS_MIXED"


class StatementRejected(ValidationError):
    """The file cannot be imported as it is; nothing was imported. `errors` lists every problem by line;
    the first MAX_REPORTED_ROW_ERRORS travel as violations (error details are bounded in size)."""

    def __init__(self, parsed_errors: StatementFileError) -> None:
        errors = parsed_errors.errors
        shown = errors[:MAX_REPORTED_ROW_ERRORS]
        super().__init__(
            f"the statement file is invalid: {len(errors)} problem(s), nothing was imported"
            + (f"; the first {len(shown)} are in details" if len(errors) > len(shown) else ""),
            field="content",
            code="STATEMENT_INVALID",
            metadata={"errors": str(len(errors))},
            violations=[("content", f"line {e.line}: {e.message}"[:200]) for e in shown],
        )
        self.errors = errors


class UnknownAccount(NotFound):
    """Neither the ledger nor an imported statement knows the account."""


class UnknownCase(NotFound):
    """No case with this id."""


class UnknownRun(NotFound):
    """No stored run with this id."""


@dataclass(frozen=True)
class ImportCommand:
    account_id: str
    content: bytes
    format: str
    csv_mapping: Mapping[str, Any] | None
    file_name: str
    actor: str


@dataclass(frozen=True)
class ImportOutcome:
    id: str
    summary: dict[str, Any]
    created_at: datetime
    replayed: bool


@dataclass(frozen=True)
class StoredReport:
    run_id: str
    created_at: datetime
    report: Report
    rendered: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconciliationService:
    store: ReconciliationStore
    ledger: Ledger
    parser: StatementParser | None = None
    watermark_wait_seconds: float = 5.0
    suspense_account: str = SUSPENSE_ACCOUNT
    accepted: AcceptedTransfers | None = None
    not_posted_after_seconds: int = 300
    # Windows with this many statement lines are matched on columns (the same results, at scale).
    columnar_from_lines: int = COLUMNAR_FROM_LINES
    # Days with new ledger entries, per account, not yet matched against statements (continuous mode).
    _touched: dict[str, set[date]] = field(default_factory=dict)
    # The ledger schema's reconciliation defaults by version: a version never changes once applied.
    _schema_defaults: dict[int, SchemaDefaults] = field(default_factory=dict)

    # -- continuous matching -----------------------------------------------------------------------

    def ledger_entries_arrived(self, entries: Sequence[tuple[str, datetime]]) -> None:
        """Notes (account, posted at) of entries the projection just stored, for `match_touched`."""
        for account_id, posted_at in entries:
            self._touched.setdefault(account_id, set()).add(posted_at.date())

    async def match_touched(self) -> int:
        """Matches again, for every account with imported statements, the days new ledger entries
        arrived on (± the date tolerance): a late posting resolves the case its absence opened, as
        it arrives rather than at the next reconcile call. Returns the accounts matched."""
        touched, self._touched = self._touched, {}
        if not touched:
            return 0
        with_statements = await self.store.accounts_with_statements(sorted(touched))
        for account_id in with_statements:
            days = touched[account_id]
            try:
                in_force = await self.rules_in_force(account_id, None)
            except Exception:
                log.exception("continuous matching failed", extra={"fields": {"account_id": account_id}})
                self._touched.setdefault(account_id, set()).update(days)
                continue
            margin = timedelta(days=in_force.rules.date_tolerance_days)
            window = parse_window((min(days) - margin).isoformat(), (max(days) + margin).isoformat())
            try:
                await self.reconcile_window(account_id, window, wait=False)
            except Exception:
                log.exception("continuous matching failed", extra={"fields": {"account_id": account_id}})
                self._touched.setdefault(account_id, set()).update(days)
        return len(with_statements)

    # -- statements --------------------------------------------------------------------------------

    async def import_statement(self, command: ImportCommand) -> ImportOutcome:
        """Imports a file once per account (same bytes → the first import, replayed), checks each
        statement's balances and its continuity with the previous one, then matches the new lines.
        With no account id the file's own account identifier names the ledger account (`route_statement`).

        Raises ValidationError (bad account id, format, empty file, CSV mapping; STATEMENT_ACCOUNT_UNKNOWN,
        STATEMENT_ACCOUNT_AMBIGUOUS, STATEMENT_ACCOUNTS_MIXED when routing) and StatementRejected.
        """
        fmt = _format(command.format)
        if not command.content:
            raise ValidationError("content (or contentBase64) is required", field="content", code="MISSING_FIELD")
        sha256 = hashlib.sha256(command.content).hexdigest()
        if not command.account_id.strip():
            # The file must be read to know whose it is: parsed first, then the replay check.
            parsed = await self._parse(command.content, fmt, command.csv_mapping)
            account_id = await self.route_statement(parsed)
            known = await self.store.find_import(account_id, sha256)
            if known is not None:
                return ImportOutcome(known.id, known.summary, known.created_at, replayed=True)
        else:
            account_id = _account_id(command.account_id)
            known = await self.store.find_import(account_id, sha256)
            if known is not None:
                return ImportOutcome(known.id, known.summary, known.created_at, replayed=True)
            mapping = command.csv_mapping
            if mapping is None and fmt in (None, StatementFormat.CSV):
                mapping = await self.store.csv_mapping(account_id)
            parsed = await self._parse(command.content, fmt, mapping)
        if command.csv_mapping is not None and parsed.format is StatementFormat.CSV:
            await self.store.save_csv_mapping(account_id, command.csv_mapping)
        chained = await self._with_continuity(account_id, parsed)
        summary = _summary(account_id, parsed, chained, sha256)
        stored = await self.store.save_import(
            account_id, parsed.format, sha256, command.file_name, chained, summary, command.actor
        )
        if stored is None:  # the same file, imported concurrently: the first one is the answer
            known = await self.store.find_import(account_id, sha256)
            if known is None:
                raise RuntimeError("an import vanished after a concurrent insert")
            return ImportOutcome(known.id, known.summary, known.created_at, replayed=True)
        dates = [line.value_date or line.booking_date for st in parsed.statements for line in st.lines]
        days = [d for d in dates if d is not None]
        if days:
            # The same shape as a reconcile call's window over those days, so its cases are in scope there.
            window = parse_window(min(days).isoformat(), max(days).isoformat())
            try:
                run = await self.reconcile_window(account_id, window, wait=False)
                summary = {
                    **stored.summary,
                    "matched": run.rendered.get("matched", 0),
                    "discrepanciesOpened": len(run.report.discrepancies),
                }
            except Exception:
                # The import stands; matching runs again with the next import or reconcile call.
                log.exception("matching after an import failed", extra={"fields": {"account_id": account_id}})
        return ImportOutcome(stored.id, summary, stored.created_at, replayed=False)

    async def _parse(
        self, content: bytes, fmt: StatementFormat | None, mapping: Mapping[str, Any] | None
    ) -> ParsedFile:
        if self.parser is None:
            raise RuntimeError("no statement parser configured")
        parser = self.parser
        try:
            # Parsing a large file is CPU work: off the event loop, so other calls keep being answered.
            return await asyncio.to_thread(parser.parse, content, fmt, mapping)
        except StatementFileError as broken:
            raise StatementRejected(broken) from None
        except ValueError as error:
            raise ValidationError(f"csvMapping: {error}", field="csvMapping", code="INVALID_CSV_MAPPING") from None

    async def route_statement(self, parsed: ParsedFile) -> str:
        """The ledger account a file names by its own account identifier (camt IBAN or Othr/Id, MT940
        :25:, BAI2 account, OFX ACCTID): the account whose schema class declares
        `reconciliation.statementAccount.metadataField` and whose metadata holds that identifier. One
        import reconciles with one account, so a file whose statements name different accounts is
        refused (import them one by one, or name accountId).

        Raises ValidationError: MISSING_FIELD (the file names no account, or no class of the schema in
        force declares a statement account), STATEMENT_ACCOUNT_UNKNOWN, STATEMENT_ACCOUNT_AMBIGUOUS,
        STATEMENT_ACCOUNTS_MIXED."""
        identifiers = sorted({statement.account.strip() for statement in parsed.statements})
        if not identifiers or "" in identifiers:
            raise ValidationError(
                "accountId is required: the file names no account to find it by",
                field="accountId",
                code="MISSING_FIELD",
            )
        applied = await self.ledger.schema(0)
        defaults = self._defaults_of(*applied) if applied is not None else None
        fields = defaults.statement_fields if defaults is not None else {}
        if not fields:
            raise ValidationError(
                "accountId is required: no account class of the ledger's schema declares"
                " reconciliation.statementAccount to find it by",
                field="accountId",
                code="MISSING_FIELD",
            )
        routed: dict[str, str] = {}
        for identifier in identifiers:
            found: list[str] = []
            for metadata_field, classes in sorted(fields.items()):
                accounts = await self.ledger.accounts_with_metadata(metadata_field, identifier, MAX_LISTED_ACCOUNTS)
                found.extend(a.id for a in accounts if a.account_class in classes and a.id not in found)
            if not found:
                declared = ", ".join(sorted(fields))
                raise ValidationError(
                    f"no ledger account's metadata ({declared}) holds the statement's account {identifier!r}:"
                    " open one with it, or name accountId",
                    field="accountId",
                    code=STATEMENT_ACCOUNT_UNKNOWN,
                    metadata={"statementAccount": identifier},
                )
            if len(found) > 1:
                raise ValidationError(
                    f"the statement's account {identifier!r} is held by several ledger accounts"
                    f" ({', '.join(found[:MAX_LISTED_ACCOUNTS])}): name accountId",
                    field="accountId",
                    code=STATEMENT_ACCOUNT_AMBIGUOUS,
                    metadata={"statementAccount": identifier, "accounts": ",".join(found[:MAX_LISTED_ACCOUNTS])},
                )
            routed[identifier] = found[0]
        if len(set(routed.values())) > 1:
            pairs = ", ".join(f"{identifier} → {account}" for identifier, account in routed.items())
            raise ValidationError(
                f"the file's statements belong to different ledger accounts ({pairs}); one import reconciles"
                " with one account: import each statement on its own, or name accountId",
                field="accountId",
                code=STATEMENT_ACCOUNTS_MIXED,
            )
        return next(iter(routed.values()))

    def _defaults_of(self, version: int, document: Mapping[str, Any]) -> SchemaDefaults:
        defaults = self._schema_defaults.get(version)
        if defaults is None:
            defaults = self._schema_defaults[version] = read_schema_defaults(version, document)
        return defaults

    async def _schema_defaults_at(self, version: int) -> SchemaDefaults | None:
        """The defaults of a schema version, asking the ledger only for a version not seen before."""
        if version <= 0:
            return None
        if version not in self._schema_defaults:
            applied = await self.ledger.schema(version)
            if applied is None:
                return None
            self._defaults_of(*applied)
        return self._schema_defaults[version]

    async def rules_in_force(self, account_id: str, balance: LedgerBalance | None) -> RulesInForce:
        """The account's saved rules, else its class's in the schema in force (the ledger tells its class
        with its balance: asked here when the caller has none), else the built-in ones."""
        version, saved, _, _ = await self.store.rules(account_id)
        if version > 0:
            return choose_rules(version, saved, None, "")
        if balance is None:
            balance = await self.ledger.balance_as_of(account_id, datetime.now(UTC))
        if balance is None or not balance.account_class:
            return choose_rules(0, {}, None, "")
        schema = await self._schema_defaults_at(balance.schema_version)
        return choose_rules(0, {}, schema, balance.account_class)

    async def _with_continuity(self, account_id: str, parsed: ParsedFile) -> list[tuple[Statement, str]]:
        """Each statement with OK, GAP (its opening differs from the previous closing) or FIRST."""
        previous: dict[str, int | None] = {}
        chained: list[tuple[Statement, str]] = []
        for statement in parsed.statements:
            if statement.account not in previous:
                previous[statement.account] = await self.store.previous_closing(
                    account_id, statement.account, statement.opening_date or statement.closing_date
                )
            before = previous[statement.account]
            if statement.opening_balance_minor is None or before is None:
                verdict = "FIRST" if before is None else "NOT_APPLICABLE"
            else:
                verdict = "OK" if before == statement.opening_balance_minor else "GAP"
            chained.append((statement, verdict))
            if statement.closing_balance_minor is not None:
                previous[statement.account] = statement.closing_balance_minor
        return chained

    # -- rules -------------------------------------------------------------------------------------

    async def matching_rules(self, account_id: str) -> tuple[int, dict[str, Any], datetime | None, str, str]:
        """(saved version — 0 when none —, the rules a run would use now, saved at, saved by, where they come
        from: see `rules_in_force`). Raises ValidationError (a malformed account id)."""
        account_id = _account_id(account_id)
        version, _, at, by = await self.store.rules(account_id)
        in_force = await self.rules_in_force(account_id, None)
        return version, in_force.rules.to_dict(), at, by, in_force.source

    async def set_matching_rules(
        self, account_id: str, rules: Mapping[str, Any], actor: str
    ) -> tuple[int, dict[str, Any], datetime | None, str, str]:
        """Saves a new version. Raises ValidationError when the rules make no sense."""
        account_id = _account_id(account_id)
        clean = {k: v for k, v in rules.items() if k != "version"}
        try:
            parse_rules(clean, 1)
        except (TypeError, ValueError) as error:
            raise ValidationError(f"rules: {error}", field="rules", code="INVALID_RULES") from None
        await self.store.save_rules(account_id, clean, actor)
        return await self.matching_rules(account_id)

    # -- reconcile ---------------------------------------------------------------------------------

    async def reconcile_account(self, account_id: str, start: str, end: str) -> StoredReport:
        """The seed's call: matches the window, updates its cases, stores the run. Raises
        ValidationError (malformed or reversed window) and UnknownAccount."""
        account_id = validate_account_id(account_id)
        window = parse_window(start, end)
        return await self.reconcile_window(account_id, window, wait=True)

    async def reconcile_window(self, account_id: str, window: Window, *, wait: bool) -> StoredReport:
        # A large window makes a break, a finding and a report row per discrepancy (hundreds of
        # thousands), none in a reference cycle: the cyclic collector would walk them again and again.
        with cyclic_collector_paused():
            return await self._reconcile_window(account_id, window, wait=wait)

    async def _reconcile_window(self, account_id: str, window: Window, *, wait: bool) -> StoredReport:
        as_of = min(window.end, datetime.now(UTC))
        balance = await self.ledger.balance_as_of(account_id, as_of)
        if balance is None and not await self.store.knows_account(account_id):
            raise UnknownAccount(
                f"account {account_id!r} is known neither to the ledger nor to an imported statement",
                field="account_id",
                code="RECON_ACCOUNT_NOT_FOUND",
            )
        watermark = "CURRENT"
        if balance is not None and balance.last_entry_id:
            watermark = await self._await_projection(account_id, balance.last_entry_id, wait)
        debit_normal = balance.debit_normal if balance else True
        # The server sums the window's transfers (its own work) while this process matches, once the
        # rows to match are read: the two cores then serve one each.
        rows_read = asyncio.Event()

        async def unbalanced_transfers() -> tuple[int, list[TransferSides]]:
            await rows_read.wait()
            return await self.store.unbalanced_transfers(account_id, window)

        transfers = asyncio.create_task(unbalanced_transfers())
        try:
            debits, credits, projected_currency = await self.store.totals_until(account_id, as_of)
            projected = debits - credits if debit_normal else credits - debits
            currency = (balance.currency if balance else None) or projected_currency or ""
            in_force = await self.rules_in_force(account_id, balance)
            rules = in_force.rules
            first, last = window.start.date(), (window.end - timedelta(microseconds=1)).date()
            matched = await match_window(
                self.store,
                account_id,
                first,
                last,
                rules,
                debit_normal,
                currency,
                columnar_from_lines=self.columnar_from_lines,
                rows_read=rows_read,
            )
            transaction_count, unbalanced = await transfers
        finally:
            transfers.cancel()
        report = check_account(
            account_id,
            currency,
            window,
            projected_balance=projected,
            ledger_balance=balance.balance_minor if balance else projected,
            transfers=unbalanced,
            transaction_count=transaction_count,
        )
        if watermark != "CURRENT":
            # Events still in flight: a difference now says nothing about the ledger.
            report.discrepancies[:] = [d for d in report.discrepancies if d.kind != BALANCE_DRIFT]
        findings, counts = matched.findings, matched.counts
        statement_drift = await self._statement_drift(account_id, window, currency, debit_normal)
        if statement_drift is not None:
            findings.append(statement_drift)
            drift = statement_drift.evidence
            assert isinstance(drift, Mapping)  # a document made here, not records named by id
            report.expected_balance_minor = int(drift["statementClosingMinor"])  # type: ignore[call-overload]
            report.actual_balance_minor = int(drift["ledgerBalanceMinor"])  # type: ignore[call-overload]
        findings.extend(await self._not_posted(account_id))
        for d in report.discrepancies:
            findings.append(
                Finding(
                    d.kind, d.message, (), (d.transaction_id,) if d.transaction_id else (), d.actual_minor, currency
                )
            )
        for attempt in range(1, _PLAN_ATTEMPTS + 1):
            existing, covered = await self.store.cases_of(account_id, window)
            plan = plan_cases(findings, existing, covered)
            # The new cases' ids are drawn here, so that the run is written beside its cases, not after.
            opened = dict(zip((f.fingerprint for f in plan.open), random_uuids(len(plan.open)), strict=True))
            case_ids = opened | {f.fingerprint: case_id for case_id, f in (*plan.reopen, *plan.still_open)}
            report.discrepancies[:] = [_discrepancy(f, case_ids.get(f.fingerprint, ""), currency) for f in findings]
            rendered = _rendered(
                report, counts, rules.version, in_force.source, watermark, sorted(set(case_ids.values()))
            )
            run = RunToSave(report, rendered, matched.matches, rules.version, watermark, matched.pairs)
            try:
                run_id, created_at = await self.store.record_run(account_id, window, plan, opened, len(existing), run)
                break
            except CasesChanged:
                if attempt == _PLAN_ATTEMPTS:
                    raise
                log.info("cases changed during a run; planning again", extra={"fields": {"account_id": account_id}})
        return StoredReport(run_id, created_at, report, {**rendered, "report_id": run_id})

    async def _not_posted(self, account_id: str) -> list[Finding]:
        """ACCEPTED_NOT_POSTED: ingest answered 202 and the ledger has not posted it, past the age after
        which the redrive should long have delivered it."""
        if self.accepted is None:
            return []
        try:
            pending = await self.accepted.pending(account_id, self.not_posted_after_seconds)
        except Exception:
            log.warning("ingest could not be asked for pending transfers", exc_info=True)
            return []
        return [
            Finding(
                "ACCEPTED_NOT_POSTED",
                f"accepted {p.accepted_at.isoformat()} and still not posted by the ledger"
                f" (published again {p.redrive_count} times)",
                (),
                (p.idempotency_key,),
                p.amount_minor,
                p.currency,
                {
                    "idempotencyKey": p.idempotency_key,
                    "sourceAccountId": p.source_account_id,
                    "destinationAccountId": p.destination_account_id,
                    "amount": format_minor(p.amount_minor, p.currency),
                    "acceptedAt": p.accepted_at.isoformat(),
                    "redriveCount": p.redrive_count,
                },
            )
            for p in pending
        ]

    async def _await_projection(self, account_id: str, last_entry_id: int, wait: bool) -> str:
        """CURRENT once the projection holds the ledger's newest entry for the account; BEHIND if it
        still does not after the wait (events in flight)."""
        deadline = asyncio.get_running_loop().time() + (self.watermark_wait_seconds if wait else 0)
        while True:
            if await self.store.holds_entry(account_id, last_entry_id):
                return "CURRENT"
            if asyncio.get_running_loop().time() >= deadline:
                return "BEHIND"
            await asyncio.sleep(0.05)

    async def _statement_drift(
        self, account_id: str, window: Window, currency: str, debit_normal: bool
    ) -> Finding | None:
        """BALANCE_DRIFT: the newest statement closing in the window against the ledger's balance at
        the end of that closing day."""
        first, last = window.start.date(), (window.end - timedelta(microseconds=1)).date()
        closing = [
            s
            for s in await self.store.statements_in(account_id, first, last)
            if s.closing_balance_minor is not None and s.closing_date is not None and first <= s.closing_date <= last
        ]
        if not closing:
            return None
        newest = closing[-1]
        assert newest.closing_date is not None and newest.closing_balance_minor is not None
        cut_off = day_start(newest.closing_date + timedelta(days=1)) - timedelta(microseconds=1)
        balance = await self.ledger.balance_as_of(account_id, cut_off)
        ledger_minor = balance.balance_minor if balance else 0
        if ledger_minor == newest.closing_balance_minor:
            return None
        cur = newest.currency or currency
        return Finding(
            BALANCE_DRIFT,
            f"the statement closes {newest.closing_date.isoformat()} at {format_minor(newest.closing_balance_minor, cur)}"
            f" {cur}; the ledger says {format_minor(ledger_minor, cur)}",
            amount_minor=newest.closing_balance_minor - ledger_minor,
            currency=cur,
            evidence={
                "bankAccount": newest.bank_account,
                "closingDate": newest.closing_date.isoformat(),
                "statementClosingMinor": newest.closing_balance_minor,
                "ledgerBalanceMinor": ledger_minor,
                "statementClosing": format_minor(newest.closing_balance_minor, cur),
                "ledgerBalance": format_minor(ledger_minor, cur),
            },
        )

    # -- runs --------------------------------------------------------------------------------------

    async def runs(self, account_id: str, limit: int, cursor: str) -> tuple[list[StoredRun], str]:
        """Newest first, at most `limit` runs and about MAX_RUNS_PAGE_BYTES of reports (at least one):
        a report lists every discrepancy of its window, so a page of busy runs can weigh megabytes."""
        size = _page_size(limit)
        before = _decode_cursor(cursor) if cursor else None
        rows = await self.store.runs(_account_filter(account_id), before, size + 1)
        page: list[StoredRun] = []
        weight = 0
        for row in rows[:size]:
            weight += len(json.dumps(row.report, default=str))
            if page and weight > MAX_RUNS_PAGE_BYTES:
                break
            page.append(row)
        more = len(rows) > len(page)
        return page, _encode_cursor(page[-1].created_at, page[-1].id) if more else ""

    async def run(self, run_id: str) -> StoredRun:
        found = await self.store.run(run_id.strip()) if _looks_like_uuid(run_id) else None
        if found is None:
            raise UnknownRun(f"no reconciliation run {run_id!r}", field="run_id", code="RECON_RUN_NOT_FOUND")
        return found

    async def export_run(self, run_id: str, fmt: str) -> tuple[str, AsyncIterator[bytes]]:
        """(content type, the file in pieces) of a stored run's report: its matches and its cases with
        their evidence, as CSV or JSON. Raises ValidationError (INVALID_FORMAT) and UnknownRun."""
        export_format = parse_format(fmt)
        run = await self.run(run_id)
        pieces = encode_run(run, export_format, self.store.run_matches(run.id), self.store.run_cases(run.id))
        return export_format.content_type, pieces

    # -- cases -------------------------------------------------------------------------------------

    async def cases(
        self, *, account_id: str, kind: str, status: str, min_age_seconds: int, limit: int, cursor: str
    ) -> tuple[list[CaseRecord], str]:
        """Raises ValidationError (unknown kind or status, age out of 0-MAX_AGE_SECONDS, bad limit or cursor)."""
        size = _page_size(limit)
        _check_age(min_age_seconds, "minAgeSeconds")
        try:
            wanted = CaseStatus(status.upper()) if status else None
        except ValueError:
            raise ValidationError(
                "status must be OPEN, ACKNOWLEDGED or RESOLVED", field="status", code="INVALID_STATUS"
            ) from None
        if kind and kind.upper() not in KINDS:
            raise ValidationError(f"kind must be one of {', '.join(KINDS)}", field="kind", code="INVALID_KIND")
        where = CaseFilter(
            _account_filter(account_id),
            kind.upper() or None,
            wanted,
            datetime.now(UTC) - timedelta(seconds=min_age_seconds) if min_age_seconds else None,
        )
        before = _decode_cursor(cursor) if cursor else None
        rows = await self.store.cases(where, before, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return rows, _encode_cursor(rows[-1].opened_at, rows[-1].id) if more else ""

    async def watch(
        self, account_id: str, since_seconds: int, stop: asyncio.Event | None = None, poll_seconds: float = 0.25
    ) -> AsyncIterator[CaseRecord | StoredRun]:
        """Cases as they open, change or resolve, and runs as they finish, in the order they happened,
        for as long as the caller listens. Reads the store (not this process's memory), so it sees
        what every replica does. Raises ValidationError for a bad account id or an age out of range."""
        account = _account_filter(account_id)
        _check_age(since_seconds, "sinceSeconds")
        cases_after = runs_after = (datetime.now(UTC) - timedelta(seconds=since_seconds), "")
        while stop is None or not stop.is_set():
            cases, _ = await self.store.changes_since(account, cases_after, 500)
            _, runs = await self.store.changes_since(account, runs_after, 500)
            for case in cases:
                yield case
                cases_after = (case.updated_at, case.id)
            for run in runs:
                yield run
                runs_after = (run.created_at, run.id)
            if len(cases) < 500 and len(runs) < 500:
                await asyncio.sleep(poll_seconds)

    async def case(self, case_id: str) -> CaseRecord:
        found = await self.store.case(case_id) if _looks_like_uuid(case_id) else None
        if found is None:
            raise UnknownCase(f"no discrepancy {case_id!r}", field="id", code="RECON_CASE_NOT_FOUND")
        return found

    async def resolve_case(self, case_id: str, action: str, reason: str, actor: str) -> CaseRecord:
        """Acknowledges or resolves a case; POST_ADJUSTMENT first posts a correcting transfer between
        the account and the suspense account through the ledger (its id is derived from the case, so
        a retry cannot post twice). Raises UnknownCase, ValidationError and CaseTransitionRefused."""
        parsed = parse_action(action, reason)
        case = await self.case(case_id)
        status = next_status(case.status, parsed)
        adjustment_id = None
        if parsed is CaseAction.POST_ADJUSTMENT:
            adjustment_id = await self._post_adjustment(case, reason)
            await self.store.transition_case(
                case.id, case.status, CaseEventKind.ADJUSTMENT_POSTED.value, actor, reason, adjustment_id
            )
        event = CaseEventKind.ACKNOWLEDGED if status is CaseStatus.ACKNOWLEDGED else CaseEventKind.RESOLVED
        await self.store.transition_case(case.id, status, event.value, actor or SYSTEM_ACTOR, reason, adjustment_id)
        return await self.case(case.id)

    async def _post_adjustment(self, case: CaseRecord, reason: str) -> str:
        if not case.amount_minor or not case.currency:
            raise ValidationError(
                "this case has no amount to adjust; resolve it instead", field="action", code="RECON_NOTHING_TO_ADJUST"
            )
        transfer_id = f"adj-{case.id}"
        balance = await self.ledger.balance_as_of(case.account_id, datetime.now(UTC))
        debit_normal = balance.debit_normal if balance else True
        # The case's amount is what the account's balance lacks (+) or has too much of (-): the side of
        # the account that moves its balance that way, against the suspense account.
        raises = case.amount_minor > 0
        if raises == debit_normal:
            debit, credit = case.account_id, self.suspense_account
        else:
            debit, credit = self.suspense_account, case.account_id
        code = await self.ledger.post_adjustment(
            transfer_id, debit, credit, abs(case.amount_minor), case.currency, f"case {case.id}: {reason}"
        )
        if code and code != "LEDGER_TRANSFER_EXISTS":
            raise ValidationError(
                f"the ledger refused the adjustment: {code}", field="action", code="RECON_ADJUSTMENT_REFUSED"
            )
        return transfer_id


KINDS = (
    "MISSING_IN_LEDGER",
    "MISSING_IN_STATEMENT",
    "AMOUNT_MISMATCH",
    "CURRENCY_MISMATCH",
    "DATE_OUT_OF_TOLERANCE",
    "DUPLICATE",
    "AMBIGUOUS",
    "UNBALANCED_TRANSFER",
    "BALANCE_DRIFT",
    "ACCEPTED_NOT_POSTED",
)


def random_uuids(n: int) -> list[str]:
    """`n` random (version 4) UUIDs as text, as str(uuid.uuid4()) gives them, drawn at once: a large run
    opens a hundred thousand cases, and uuid4() one at a time cost half a second."""
    blocks = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    blocks[:, 6] = (blocks[:, 6] & 0x0F) | 0x40  # version 4
    blocks[:, 8] = (blocks[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = blocks.tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def _discrepancy(finding: Finding, case_id: str, currency: str) -> Discrepancy:
    return Discrepancy(
        finding.kind,
        finding.severity,
        finding.message,
        finding.transfer_ids[0] if finding.transfer_ids else "",
        None,
        finding.amount_minor,
        case_id=case_id,
        statement_line_ids=finding.statement_line_ids,
        transfer_ids=finding.transfer_ids,
        currency=finding.currency or currency,
    )


def _rendered(
    report: Report, counts: Mapping[str, int], version: int, source: str, watermark: str, case_ids: list[str]
) -> dict[str, Any]:
    return {
        "account_id": report.account_id,
        "start": report.window.start.isoformat(),
        "end": report.window.end.isoformat(),
        "transaction_count": report.transaction_count,
        "expected_balance_minor": report.expected_balance_minor,
        "actual_balance_minor": report.actual_balance_minor,
        "currency": report.currency,
        "statement_lines": counts.get("statement_lines", 0),
        "ledger_entries": counts.get("ledger_entries", 0),
        "matched": counts.get("matched", 0),
        "rules_version": version,
        "rules_source": source,
        "watermark": watermark,
        "case_ids": case_ids[:REPORT_LISTS_AT_MOST],
        "discrepancy_count": len(report.discrepancies),
        # case_ids come from the discrepancies: never more of them
        "discrepancies_truncated": len(report.discrepancies) > REPORT_LISTS_AT_MOST,
        "discrepancies": [
            {
                "type": d.kind,
                "severity": d.severity,
                "message": d.message,
                "transaction_id": d.transaction_id,
                "amount_minor": d.actual_minor,
                "currency": d.currency,
                "case_id": d.case_id,
                "statement_line_ids": list(d.statement_line_ids),
                "ledger_transfer_ids": list(d.transfer_ids),
            }
            for d in report.discrepancies[:REPORT_LISTS_AT_MOST]
        ],
    }


def _summary(
    account_id: str, parsed: ParsedFile, chained: Sequence[tuple[Statement, str]], sha256: str
) -> dict[str, Any]:
    def money(minor: int | None, currency: str) -> str:
        return "" if minor is None else format_minor(minor, currency)

    statements = [
        {
            "bankAccount": st.account,
            "statementId": st.statement_id or "",
            "currency": st.currency,
            "lines": len(st.lines),
            "openingBalance": money(st.opening_balance_minor, st.currency),
            "closingBalance": money(st.closing_balance_minor, st.currency),
            "balanceCheck": st.balance_check.value,
            "continuity": continuity,
            "openingDate": st.opening_date.isoformat() if st.opening_date else "",
            "closingDate": st.closing_date.isoformat() if st.closing_date else "",
        }
        for st, continuity in chained
    ]
    one_account = len({st.account for st in parsed.statements}) == 1
    first, last = parsed.statements[0], parsed.statements[-1]
    checks = {st.balance_check for st in parsed.statements}
    overall = (
        BalanceCheck.MISMATCH
        if BalanceCheck.MISMATCH in checks
        else BalanceCheck.OK
        if checks == {BalanceCheck.OK}
        else BalanceCheck.NOT_APPLICABLE
    )
    warnings = [{"line": w.line, "message": w.message} for w in parsed.warnings]
    for st, continuity in chained:
        if st.balance_check is BalanceCheck.MISMATCH:
            warnings.append(
                {"line": st.line, "message": f"statement {st.statement_id or st.account}: opening + entries != closing"}
            )
        if continuity == "GAP":
            warnings.append(
                {
                    "line": st.line,
                    "message": f"statement {st.statement_id or st.account}: opening balance differs from the previous statement's closing balance",
                }
            )
    return {
        "status": "IMPORTED",
        "accountId": account_id,
        "format": parsed.format.value,
        "linesImported": parsed.line_count,
        "errors": [],
        "warnings": warnings,
        "openingBalance": money(first.opening_balance_minor, first.currency) if one_account else "",
        "closingBalance": money(last.closing_balance_minor, last.currency) if one_account else "",
        "balanceCheck": overall.value,
        "statements": statements,
        "sha256": sha256,
        "matched": 0,
        "discrepanciesOpened": 0,
    }


def _account_filter(value: str) -> str | None:
    """An optional account filter: absent (empty) means every account, anything else must be an account id."""
    return _account_id(value) if value else None


def _account_id(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValidationError("accountId is required", field="accountId", code="MISSING_FIELD")
    if len(value) > 128 or not all(c.isalnum() or c in "._:-" for c in value) or not value.isascii():
        raise ValidationError(
            "accountId must be 1-128 characters of letters, digits and . _ : -",
            field="accountId",
            code="INVALID_ACCOUNT_ID",
        )
    return value


def _format(value: str) -> StatementFormat | None:
    if not value.strip():
        return None
    normalized = value.strip().upper().replace(".", "").replace("_", "")
    aliases = {"QFX": "OFX", "MT940": "MT940", "CAMT053": "CAMT053", "CAMT052": "CAMT052", "CAMT054": "CAMT054"}
    try:
        return StatementFormat(aliases.get(normalized, normalized))
    except ValueError:
        raise ValidationError(
            f"format must be one of {', '.join(f.value for f in StatementFormat)} (or empty to detect it)",
            field="format",
            code="INVALID_FORMAT",
        ) from None


def _check_age(seconds: int, field: str) -> None:
    if not 0 <= seconds <= MAX_AGE_SECONDS:
        raise ValidationError(
            f"{field} must be between 0 and {MAX_AGE_SECONDS} (a century)", field=field, code="INVALID_AGE"
        )


def _page_size(limit: int) -> int:
    if limit == 0:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit", code="INVALID_LIMIT")
    return limit


def _encode_cursor(at: datetime, key: str) -> str:
    import base64

    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, key = raw.split("|", 1)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not key:
            raise ValueError(cursor)
        return parsed, key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("cursor is not one this API returned", field="cursor", code="INVALID_CURSOR") from None


def _looks_like_uuid(value: str) -> bool:

    try:
        uuid.UUID(value.strip())
    except ValueError:
        return False
    return True
