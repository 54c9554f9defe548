"""The matching run of a reconcile: the window's statement lines against the ledger entries the projection
holds, with the account's rules, turned into matches to store and findings (breaks with their evidence)
for the cases.

Two ways, with the same results: a small window loads records and matches objects (`match_items`); a
large one loads columns straight from the store, matches them with `match_columns`, and hands the
one-to-one matches back as columns, so that a million lines never become a million Python objects.
Its findings name the records in their breaks by id (`StoredRecordsEvidence`): the store renders their
evidence from the rows it holds, so a hundred thousand breaks' records are never read into Python.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from services.kernel.money import exponent_of, format_minor
from services.reconciliation.domain.cases import EncodedEvidence, Finding, StoredRecordsEvidence
from services.reconciliation.domain.matching import (
    Break,
    LedgerItem,
    StatementItem,
    as_breaks,
    group_score,
    match_items,
    pair_scores,
    separate_collisions,
)
from services.reconciliation.domain.matching_columns import (
    MAX_ABS_AMOUNT_MINOR,
    PAIR_RULES,
    RULE_UNMATCHED,
    BreakKind,
    LedgerColumns,
    StatementColumns,
)
from services.reconciliation.domain.matching_engine import match_columns
from services.reconciliation.domain.matching_rules import MatchingRules
from services.reconciliation.service.ports import (
    MatchRecord,
    PairMatches,
    ProjectedEntry,
    ReconciliationStore,
    StatementLineRecord,
)

I64 = NDArray[np.int64]

# From this many statement lines in a window, matching runs on columns.
COLUMNAR_FROM_LINES = 20_000
# Ids of up to 17 digits sort as their decimal text with one integer key (see _text_order).
_MAX_KEYED_ID = 10**17

MESSAGES = {
    "MISSING_IN_LEDGER": "the bank booked it; the ledger has no matching entry",
    "MISSING_IN_STATEMENT": "the ledger posted it; the statement has no matching line",
    "AMOUNT_MISMATCH": "the same payment by reference, with different amounts",
    "CURRENCY_MISMATCH": "the same payment by reference, in different currencies",
    "DATE_OUT_OF_TOLERANCE": "the same payment, booked further apart than the date tolerance",
    "DUPLICATE": "the statement shows the same line twice",
    "AMBIGUOUS": "several candidates fit equally well: not guessed, a person decides",
}


@dataclass
class MatchOutcome:
    """What a matching run found: breaks as findings, matches to store (the one-to-one ones of a large
    run in columns, `pairs`), and the counts of the report."""

    findings: list[Finding]
    matches: list[MatchRecord]
    counts: dict[str, int]
    pairs: PairMatches | None = None

    @property
    def matched(self) -> int:
        return self.counts.get("matched", 0)


@dataclass(frozen=True)
class _Scope:
    account_id: str
    rules: MatchingRules
    debit_normal: bool
    currency: str
    first: date
    last: date
    columnar_from_lines: int = COLUMNAR_FROM_LINES
    margin: timedelta = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "margin", timedelta(days=self.rules.date_tolerance_days + self.rules.group_date_window_days)
        )

    def entries_between(self, covered_first: date, covered_last: date) -> tuple[datetime, datetime]:
        return day_start(covered_first - self.margin), day_start(covered_last + self.margin + timedelta(days=1))


def signed(entry: ProjectedEntry, debit_normal: bool) -> int:
    """The entry's effect on the account's balance: + when it increases it (money in)."""
    return entry.amount_minor if (entry.direction == "DEBIT") == debit_normal else -entry.amount_minor


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


async def match_window(
    store: ReconciliationStore,
    account_id: str,
    first: date,
    last: date,
    rules: MatchingRules,
    debit_normal: bool,
    currency: str,
    *,
    columnar_from_lines: int = COLUMNAR_FROM_LINES,
    rows_read: asyncio.Event | None = None,
) -> MatchOutcome:
    """Matches the account's booked statement lines valued from `first` to `last` against the entries
    posted around them (± the date tolerance and the group window), on columns from
    `columnar_from_lines` lines on. `rows_read` is set once the rows are read (the database has
    nothing more to do for the match until its results are written), at the latest on return."""
    read = rows_read or asyncio.Event()
    try:
        scope = _Scope(account_id, rules, debit_normal, currency, first, last, columnar_from_lines)
        span = await store.line_span(account_id, first, last)
        if span is None:
            return MatchOutcome([], [], {"statement_lines": 0, "ledger_entries": 0, "matched": 0})
        count, covered_first, covered_last = span
        if columnar_from_lines <= 0 or count >= columnar_from_lines:
            return await _match_columns(store, scope, covered_first, covered_last, read)
        return await _match_objects(store, scope)
    finally:
        read.set()


# -- on objects -------------------------------------------------------------------------------------


async def _match_objects(store: ReconciliationStore, scope: _Scope) -> MatchOutcome:
    lines = await store.lines_in(scope.account_id, scope.first, scope.last)
    if not lines:
        return MatchOutcome([], [], {"statement_lines": 0, "ledger_entries": 0, "matched": 0})
    covered_first = min(line.value_date for line in lines)
    covered_last = max(line.value_date for line in lines)
    entries = await store.entries_in(scope.account_id, *scope.entries_between(covered_first, covered_last))
    by_line = {str(line.id): line for line in lines}
    by_entry = {str(e.entry_id): e for e in entries}
    statement_items = [
        StatementItem(
            str(line.id),
            line.amount_minor,
            line.currency,
            line.value_date,
            line.booking_date,
            line.reference,
            line.end_to_end_id,
            line.description,
        )
        for line in lines
    ]
    ledger_items = [
        LedgerItem(
            str(e.entry_id),
            e.transfer_id,
            signed(e, scope.debit_normal),
            e.currency,
            e.posted_at.date(),
            e.reference,
            e.end_to_end_id,
        )
        for e in entries
    ]
    result = await asyncio.to_thread(
        match_items,
        [i for i in statement_items if abs(i.amount_minor) <= MAX_ABS_AMOUNT_MINOR],
        [i for i in ledger_items if abs(i.amount_minor) <= MAX_ABS_AMOUNT_MINOR],
        scope.rules,
    )
    breaks = result.breaks + _unmatchable(
        [int(i.id) for i in statement_items if abs(i.amount_minor) > MAX_ABS_AMOUNT_MINOR],
        [int(i.id) for i in ledger_items if abs(i.amount_minor) > MAX_ABS_AMOUNT_MINOR],
    )
    findings = list(
        findings_of(breaks, by_line, by_entry, scope.debit_normal, scope.currency, covered_first, covered_last)
    )
    matches = [
        MatchRecord(
            m.kind.value,
            tuple(int(i) for i in m.statement_ids),
            tuple(by_entry[i].transfer_id for i in m.ledger_ids),
            m.rule,
            m.confidence,
            dict(m.breakdown),
            m.amount_difference_minor,
        )
        for m in result.matches
    ]
    counts = {
        "statement_lines": len(lines),
        "ledger_entries": sum(1 for e in entries if covered_first <= e.posted_at.date() <= covered_last),
        "matched": sum(len(m.statement_ids) for m in result.matches),
    }
    return MatchOutcome(findings, matches, counts)


def _unmatchable(statement_ids: Iterable[int], ledger_ids: Iterable[int]) -> tuple[Break, ...]:
    """The matching engine takes amounts within ±MAX_ABS_AMOUNT_MINOR; the ledger holds any int64 and a
    statement may say anything. An item beyond that range is left out of matching and reported unmatched
    on its own side, for a person to look at, instead of stopping the account's matching altogether."""
    return tuple(Break(BreakKind.MISSING_IN_LEDGER, (str(i),), (), RULE_UNMATCHED) for i in statement_ids) + tuple(
        Break(BreakKind.MISSING_IN_STATEMENT, (), (str(i),), RULE_UNMATCHED) for i in ledger_ids
    )


# -- on columns -------------------------------------------------------------------------------------


class _Ids(Sequence[str]):
    """Row number → id text, made only for the rows looked up (those in breaks)."""

    def __init__(self, ids: I64) -> None:
        self._ids = ids

    def __len__(self) -> int:
        return int(self._ids.size)

    @overload
    def __getitem__(self, row: int) -> str: ...
    @overload
    def __getitem__(self, row: slice) -> Sequence[str]: ...
    def __getitem__(self, row: int | slice) -> str | Sequence[str]:
        if isinstance(row, slice):
            return [str(i) for i in self._ids[row].tolist()]
        return str(int(self._ids[row]))


def _text_order(ids: I64) -> I64:
    """The order of `ids` sorted as decimal text, as `match_items` sorts its ids ("10" < "9"): right-padded
    to 17 digits, then shorter first (a prefix sorts first)."""
    if ids.size == 0:
        return np.arange(0, dtype=np.int64)
    if int(ids.min()) < 0 or int(ids.max()) >= _MAX_KEYED_ID:
        return np.argsort(ids.astype(str), kind="stable").astype(np.int64)
    digits = np.ones(ids.size, dtype=np.int64)
    bound = 10
    while bound <= int(ids.max()):
        digits += ids >= bound
        bound *= 10
    key = ids * (10 ** (17 - digits)) * 20 + digits
    return np.argsort(key).astype(np.int64)


@dataclass
class _Side:
    """One side of a columnar run: ids and the engine's columns (rows in id-text order), plus the ids of
    the rows whose amount the engine cannot take."""

    ids: I64
    columns: dict[str, I64]
    beyond: list[int]
    total: int


def _stack(parts: list[list[I64]], names: Sequence[str]) -> dict[str, I64]:
    """The chunks' columns end to end, each chunk's piece let go once copied."""
    if len(parts) == 1:
        return dict(zip(names, parts.pop(), strict=True))
    stacked: dict[str, I64] = {}
    for i, name in enumerate(names):
        stacked[name] = np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        for p in parts:
            p[i] = _EMPTY
    return stacked


_EMPTY = np.zeros(0, dtype=np.int64)


def _side(columns: dict[str, I64]) -> _Side:
    ids = columns.pop("id")
    total = int(ids.size)
    beyond_rows = np.abs(columns["amount_minor"]) > MAX_ABS_AMOUNT_MINOR
    beyond = sorted(ids[beyond_rows].tolist())  # in id order, as the object path lists them
    if beyond:
        keep = ~beyond_rows
        ids = ids[keep]
        columns = {name: c[keep] for name, c in columns.items()}
    order = _text_order(ids)
    for name in list(columns):  # one column at a time: never two copies of every column at once
        columns[name] = columns[name][order]
    return _Side(ids[order], columns, beyond, total)


# A row's id, then the columns the matcher takes (in its dataclasses' order).
_LINE_FIELDS = ("id", *(column.name for column in fields(StatementColumns)))
_ENTRY_FIELDS = ("id", *(column.name for column in fields(LedgerColumns)))


# Each side is read as columns of integers (the server codes the texts); the codes of both sides are
# then checked together for two texts sharing a code (`separate_collisions`).


async def _load_lines(store: ReconciliationStore, scope: _Scope) -> dict[str, I64]:
    parts: list[list[I64]] = []
    casefold = not scope.rules.references_case_sensitive
    async for chunk in store.line_columns(scope.account_id, scope.first, scope.last, casefold=casefold):
        parts.append([getattr(chunk, name) for name in _LINE_FIELDS] + _split(chunk.checks, 3))
    return _stack(parts, _LINE_FIELDS + _CHECKS)


async def _load_entries(store: ReconciliationStore, scope: _Scope, start: datetime, end: datetime) -> dict[str, I64]:
    parts: list[list[I64]] = []
    casefold = not scope.rules.references_case_sensitive
    async for chunk in store.entry_columns(scope.account_id, start, end, scope.debit_normal, casefold=casefold):
        parts.append([getattr(chunk, name) for name in _ENTRY_FIELDS] + _split(chunk.checks, 3))
    return _stack(parts, _ENTRY_FIELDS + _CHECKS)


def _split(checks: I64, parts: int) -> list[I64]:
    return list(np.split(checks, parts))


_LINE_CODED = ("reference", "end_to_end_id", "description")
_ENTRY_CODED = ("reference", "end_to_end_id", "transfer_id")
_CHECKS = ("check_0", "check_1", "check_2")


def _separate(lines: dict[str, I64], entries: dict[str, I64]) -> None:
    """Re-codes the coded columns of both sides in place should two texts share a code; drops the checks."""
    codes = [lines[n] for n in _LINE_CODED] + [entries[n] for n in _ENTRY_CODED]
    checks = [lines.pop(n) for n in _CHECKS] + [entries.pop(n) for n in _CHECKS]
    separated = separate_collisions(codes, checks)
    for name, column in zip(_LINE_CODED, separated[:3], strict=True):
        lines[name] = column
    for name, column in zip(_ENTRY_CODED, separated[3:], strict=True):
        entries[name] = column


async def _match_columns(
    store: ReconciliationStore, scope: _Scope, covered_first: date, covered_last: date, rows_read: asyncio.Event
) -> MatchOutcome:
    # The dates the lines cover (`line_span`), asked first, so that both sides are read at once (two
    # server backends).
    line_columns, entry_columns = await asyncio.gather(
        _load_lines(store, scope), _load_entries(store, scope, *scope.entries_between(covered_first, covered_last))
    )
    rows_read.set()
    _separate(line_columns, entry_columns)
    lines, entries = _side(line_columns), _side(entry_columns)
    # Currencies numbered densely over both sides: small keys sort fast.
    currency_codes, dense = np.unique(
        np.concatenate([lines.columns["currency"], entries.columns["currency"]]), return_inverse=True
    )
    n_lines = lines.columns["currency"].size
    lines.columns["currency"], entries.columns["currency"] = dense[:n_lines], dense[n_lines:]
    s_columns = StatementColumns(**lines.columns)
    l_columns = LedgerColumns(**entries.columns)
    lines.columns, entries.columns = {}, {}
    found = await asyncio.to_thread(match_columns, s_columns, l_columns, scope.rules)

    posted = l_columns.posted_day
    cover = (covered_first.toordinal(), covered_last.toordinal())
    in_cover = int(((posted >= cover[0]) & (posted <= cover[1])).sum())
    if entries.beyond:
        in_cover += sum(
            1
            for e in await store.entries_by_id(scope.account_id, entries.beyond)
            if covered_first <= e.posted_at.date() <= covered_last
        )
    scores = pair_scores(found, s_columns, l_columns, scope.rules)
    pairs = PairMatches(
        statement_line_id=lines.ids[found.pair_statement],
        entry_id=entries.ids[found.pair_ledger],
        rules=PAIR_RULES,
        rule_index=found.pair_rule,
        confidence=scores.confidence,
        breakdown_index=scores.criteria,
        breakdowns=[dict(b) for b in scores.breakdowns],
        amount_difference_minor=scores.amount_difference,
    )
    breaks: list[Break | None] = list(as_breaks(found, _Ids(lines.ids), _Ids(entries.ids)))
    # What the findings need of the rows in breaks, from the columns; their evidence (the records on
    # both sides) is rendered by the store from the rows it holds, never read into Python.
    line_facts = _facts(lines.ids, (b.statement_ids for b in breaks if b), s_columns.amount_minor, s_columns.currency)
    entry_facts = _facts(entries.ids, (b.ledger_ids for b in breaks if b), l_columns.amount_minor, l_columns.currency)
    entry_days = dict(zip(entry_facts, posted[_rows_of(entries.ids, list(entry_facts))].tolist(), strict=True))
    del s_columns, l_columns, posted
    group_entries = entries.ids[[r for g in found.groups for r in g.ledger]].tolist()
    transfer_of = await store.transfer_ids(scope.account_id, sorted({*entry_facts, *group_entries}))
    texts = [_currency_text(int(code)) for code in currency_codes.tolist()]
    for text_ in {texts[c] for _, c in (*line_facts.values(), *entry_facts.values())}:
        exponent_of(text_)  # as the records' evidence would: an unknown currency stops the run
    findings = list(
        _findings_on_columns(
            breaks, line_facts, entry_facts, entry_days, transfer_of, texts, scope.debit_normal, scope.currency, cover
        )
    )
    del breaks, line_facts, entry_facts, entry_days

    # The rows beyond the engine's range (rare) as records, with the evidence made from them.
    beyond = _unmatchable(lines.beyond, entries.beyond)
    if beyond:
        line_records, entry_records = await asyncio.gather(
            store.lines_by_id(lines.beyond), store.entries_by_id(scope.account_id, entries.beyond)
        )
        findings += findings_of(
            beyond,
            {str(r.id): r for r in line_records},
            {str(e.entry_id): e for e in entry_records},
            scope.debit_normal,
            scope.currency,
            covered_first,
            covered_last,
        )
    groups = []
    for group in found.groups:
        confidence, breakdown = group_score(group, scope.rules)
        groups.append(
            MatchRecord(
                group.kind.value,
                tuple(int(i) for i in lines.ids[list(group.statement)].tolist()),
                tuple(transfer_of[i] for i in entries.ids[list(group.ledger)].tolist()),
                group.rule,
                confidence,
                dict(breakdown),
                group.amount_difference_minor,
            )
        )
    counts = {
        "statement_lines": lines.total,
        "ledger_entries": in_cover,
        "matched": int(found.pair_statement.size) + sum(len(g.statement) for g in found.groups),
    }
    return MatchOutcome(findings, groups, counts, pairs)


def _rows_of(ids: I64, wanted: Sequence[int]) -> I64:
    """The rows of `ids` (unique, in any order) holding the `wanted` ids, each of which is there."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids[order], np.array(wanted, dtype=np.int64))]


def _facts(ids: I64, listed: Iterable[Sequence[str]], amount: I64, currency: I64) -> dict[int, tuple[int, int]]:
    """Id → (amount, dense currency) of the rows whose ids are `listed` (as text)."""
    wanted = sorted({int(i) for some in listed for i in some})
    rows = _rows_of(ids, wanted)
    return dict(zip(wanted, zip(amount[rows].tolist(), currency[rows].tolist(), strict=True), strict=True))


def _currency_text(code: int) -> str:
    """The currency the store coded as one integer, its characters side by side (the stored currency_code, migration 0005)."""
    return "".join(chr(c) for c in (code >> 42, (code >> 21) & 0x1FFFFF, code & 0x1FFFFF) if c)


def _findings_on_columns(
    breaks: list[Break | None],
    lines: Mapping[int, tuple[int, int]],
    entries: Mapping[int, tuple[int, int]],
    entry_days: Mapping[int, int],
    transfer_of: Mapping[int, str],
    currencies: Sequence[str],
    debit_normal: bool,
    currency: str,
    cover: tuple[int, int],
) -> Iterator[Finding]:
    """`findings_of` from what the columns hold (amounts signed from the account's view, dense
    currencies, posting days as ordinals), the evidence left for the store to render. Each break is let
    go (its place in `breaks` emptied) once its finding is made: the two never all exist at once."""
    for row, brk in enumerate(breaks):
        if brk is None:
            continue
        breaks[row] = None
        kind = brk.kind.value
        line_ids = tuple(int(i) for i in brk.statement_ids)
        entry_ids = tuple(int(i) for i in brk.ledger_ids)
        if kind == "MISSING_IN_STATEMENT" and not any(cover[0] <= entry_days[i] <= cover[1] for i in entry_ids):
            continue  # outside the dates the statements cover: not missing, just not reported on yet
        if brk.amount_difference_minor is not None:
            amount = brk.amount_difference_minor
        elif line_ids:
            amount = sum(lines[i][0] for i in line_ids)
        else:
            amount = -sum(entries[i][0] for i in entry_ids)
        cur = (
            currencies[lines[line_ids[0]][1]]
            if line_ids
            else (currencies[entries[entry_ids[0]][1]] if entry_ids else currency)
        )
        yield Finding(
            kind,
            MESSAGES.get(kind, kind),
            tuple(brk.statement_ids),
            tuple(transfer_of[i] for i in entry_ids),
            amount,
            cur,
            StoredRecordsEvidence(brk.rule, line_ids, entry_ids, debit_normal, brk.days_apart),
        )


# -- findings and their evidence ---------------------------------------------------------------------


def line_evidence(line: StatementLineRecord) -> dict[str, Any]:
    return {
        "statementLineId": str(line.id),
        "line": line.line_no,
        "bankAccount": line.bank_account,
        "amount": format_minor(line.amount_minor, line.currency),
        "currency": line.currency,
        "valueDate": line.value_date.isoformat(),
        "bookingDate": line.booking_date.isoformat() if line.booking_date else None,
        "reference": line.reference,
        "endToEndId": line.end_to_end_id,
        "description": line.description,
        "counterparty": line.counterparty,
    }


def entry_evidence(entry: ProjectedEntry, debit_normal: bool) -> dict[str, Any]:
    return {
        "transferId": entry.transfer_id,
        "entryId": entry.entry_id,
        "direction": entry.direction,
        "amount": format_minor(signed(entry, debit_normal), entry.currency),
        "currency": entry.currency,
        "postedAt": entry.posted_at.isoformat(),
        "reference": entry.reference,
        "endToEndId": entry.end_to_end_id,
    }


def findings_of(
    breaks: Iterable[Break],
    lines: Mapping[str, StatementLineRecord],
    entries: Mapping[str, ProjectedEntry],
    debit_normal: bool,
    currency: str,
    covered_first: date,
    covered_last: date,
) -> Iterator[Finding]:
    """A finding per break, with the records on both sides as evidence."""
    for brk in breaks:
        kind = brk.kind.value
        side_lines = [lines[i] for i in brk.statement_ids]
        side_entries = [entries[i] for i in brk.ledger_ids]
        if kind == "MISSING_IN_STATEMENT" and not any(
            covered_first <= e.posted_at.date() <= covered_last for e in side_entries
        ):
            continue  # outside the dates the statements cover: not missing, just not reported on yet
        if brk.amount_difference_minor is not None:
            amount = brk.amount_difference_minor
        elif side_lines:
            amount = sum(line.amount_minor for line in side_lines)
        else:
            amount = -sum(signed(e, debit_normal) for e in side_entries)
        cur = side_lines[0].currency if side_lines else (side_entries[0].currency if side_entries else currency)
        yield Finding(
            kind,
            MESSAGES.get(kind, kind),
            tuple(brk.statement_ids),
            tuple(e.transfer_id for e in side_entries),
            amount,
            cur,
            EncodedEvidence(
                {
                    "rule": brk.rule,
                    "statementLines": [line_evidence(line) for line in side_lines],
                    "ledgerEntries": [entry_evidence(e, debit_normal) for e in side_entries],
                    **({"daysApart": brk.days_apart} if brk.days_apart is not None else {}),
                }
            ),
        )
