"""Reconciliation matching on objects: statement items and ledger items in, matches and breaks out.

`match_items` sorts both sides by id, turns them into integer columns and runs the engine
(`matching_engine.py`), so the result does not depend on the input order and is listed by ids. Amounts
are exact integer minor units throughout; only the confidence score is a float.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from operator import attrgetter
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from services.reconciliation.domain.matching_columns import (
    BREAK_KINDS,
    NO_CODE,
    PAIR_RULES,
    RULE_REFERENCE,
    RULE_REFERENCE_GROUP,
    RULE_UNMATCHED,
    BreakKind,
    ColumnarMatches,
    LedgerColumns,
    MatchKind,
    RowBreak,
    RowGroup,
    StatementColumns,
)
from services.reconciliation.domain.matching_engine import match_columns
from services.reconciliation.domain.matching_rules import MatchingRules, PairScoring, confidence_of
from services.reconciliation.domain.sorted_keys import factorize, order_by

__all__ = [
    "Break",
    "BreakKind",
    "CodeBook",
    "LedgerItem",
    "Match",
    "MatchKind",
    "MatchResult",
    "PairScores",
    "StatementItem",
    "as_breaks",
    "group_score",
    "match_items",
    "match_order",
    "pair_scores",
]

I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class StatementItem:
    """One bank statement line; `amount_minor` is signed, + is money into the account."""

    id: str
    amount_minor: int
    currency: str
    value_date: date
    booking_date: date | None
    reference: str | None
    end_to_end_id: str | None
    description: str = ""


@dataclass(frozen=True, slots=True)
class LedgerItem:
    """One ledger entry on the reconciled account; `amount_minor` is signed from the account's view."""

    id: str
    transfer_id: str
    amount_minor: int
    currency: str
    posted_date: date
    reference: str | None
    end_to_end_id: str | None


@dataclass(frozen=True, slots=True)
class Match:
    """Items explained by each other. `breakdown` holds each criterion's score in [0, 1] (reference,
    amount, date); `confidence` is their weighted mean. `amount_difference_minor` is Σ statement -
    Σ ledger (minus the fees a payout netted)."""

    kind: MatchKind
    statement_ids: tuple[str, ...]
    ledger_ids: tuple[str, ...]
    rule: str
    confidence: float
    breakdown: Mapping[str, float] = field(hash=False)
    amount_difference_minor: int


@dataclass(frozen=True, slots=True)
class Break:
    """A discrepancy with its evidence: the items on both sides. For DUPLICATE, `statement_ids` is
    (original, duplicate) and `ledger_ids` what explained the original; for AMBIGUOUS, every tied item."""

    kind: BreakKind
    statement_ids: tuple[str, ...]
    ledger_ids: tuple[str, ...]
    rule: str
    amount_difference_minor: int | None = None
    days_apart: int | None = None


@dataclass(frozen=True)
class MatchResult:
    matches: tuple[Match, ...]
    breaks: tuple[Break, ...]
    rules_version: int
    # Searches given up (candidate cap, work budget, likely coincidence) and references too common to use.
    diagnostics: Mapping[str, int] = field(hash=False)

    def breaks_of(self, kind: BreakKind) -> tuple[Break, ...]:
        return tuple(b for b in self.breaks if b.kind is kind)


def normalised_text(value: str | None, casefold: bool) -> str:
    """The text a string is compared on: stripped, case-folded with `casefold`; "" when absent."""
    if not value:
        return ""
    return value.strip().casefold() if casefold else value.strip()


def separate_collisions(codes: Sequence[I64], checks: Sequence[I64]) -> list[I64]:
    """Columns of codes made by hashing texts (equal texts, equal codes; NO_CODE with check NO_CODE for
    none), each with `checks`: a second, independent hash of the same texts. Two different texts could
    share a code, however unlikely (63 bits); they would then differ in check, and there would be more
    distinct (code, check) pairs than codes. The codes come back as they are when the counts agree,
    otherwise re-coded on (code, check), densely, so that no two texts are taken for one.

    The pairs are counted through one 64-bit mix of code and check: sorting integers, not pairs, keeps
    this to two sorts of a copy (a hundred MiB at a million rows a side). A mix that collides too can
    only make the count of pairs smaller: a false alarm (the exact re-coding runs) or, should it cancel
    a code collision exactly, a miss with a chance of the order of 2**-63 per text."""
    if not codes:
        return []
    every = np.concatenate(codes)
    every.sort()
    distinct_codes = _distinct_sorted(every)
    del every
    mixed = np.concatenate(checks)
    with np.errstate(over="ignore"):
        mixed *= np.int64(-7046029254386353131)  # odd: a bijection of the checks
    start = 0
    for column in codes:  # in place, column by column: no third copy of every code
        mixed[start : start + column.size] ^= column
        start += column.size
    mixed.sort()
    if _distinct_sorted(mixed) == distinct_codes:
        return list(codes)
    del mixed
    every = np.concatenate(codes)
    every_check = np.concatenate(checks)
    pairs = np.unique(np.stack([every, every_check], axis=1), axis=0)
    recoded = []
    for column, check in zip(codes, checks, strict=True):
        at = _rows_of(pairs, np.stack([column, check], axis=1))
        recoded.append(np.where(column == NO_CODE, NO_CODE, at).astype(np.int64))
    return recoded


def _distinct_sorted(values: I64) -> int:
    return int(values.size and 1 + np.count_nonzero(values[1:] != values[:-1]))


def _rows_of(table: NDArray[np.int64], keys: NDArray[np.int64]) -> I64:
    """Row of each (code, check) key in `table` (sorted, unique rows); 0 for keys not in it (NO_CODE)."""
    lo = np.searchsorted(table[:, 0], keys[:, 0], side="left")
    hi = np.searchsorted(table[:, 0], keys[:, 0], side="right")
    rows = lo.copy()
    # Rows sharing a code are few (a collision): walk them.
    for i in np.flatnonzero(hi - lo > 1).tolist():
        for row in range(int(lo[i]), int(hi[i])):
            if table[row, 1] == keys[i, 1]:
                rows[i] = row
                break
    return np.minimum(rows, len(table) - 1).astype(np.int64)


class CodeBook:
    """Interns strings as integer codes so the engine joins integers. One book per run and per kind of
    value, shared by both sides; absent and blank values get NO_CODE."""

    def __init__(self, *, casefold: bool = False) -> None:
        self._casefold = casefold
        self._codes: dict[str, int] = {"": NO_CODE}
        self._next = 0

    def codes(self, values: Iterable[str | None]) -> I64:
        normalised = [normalised_text(v, self._casefold) for v in values]
        # setdefault with a running counter: new strings get fresh codes, known ones keep theirs; codes
        # are unique but not dense, which is all an equality join needs.
        found = np.fromiter(
            map(self._codes.setdefault, normalised, itertools.count(self._next)), dtype=np.int64, count=len(normalised)
        )
        self._next += len(normalised)
        return found


def statement_columns(
    items: Sequence[StatementItem], references: CodeBook, currencies: CodeBook, descriptions: CodeBook
) -> StatementColumns:
    return StatementColumns(
        amount_minor=_amounts(items),
        currency=currencies.codes([i.currency for i in items]),
        value_day=np.fromiter((i.value_date.toordinal() for i in items), dtype=np.int64, count=len(items)),
        booking_day=np.fromiter(
            (NO_CODE if i.booking_date is None else i.booking_date.toordinal() for i in items),
            dtype=np.int64,
            count=len(items),
        ),
        reference=references.codes([i.reference for i in items]),
        end_to_end_id=references.codes([i.end_to_end_id for i in items]),
        description=descriptions.codes([i.description for i in items]),
    )


def ledger_columns(items: Sequence[LedgerItem], references: CodeBook, currencies: CodeBook) -> LedgerColumns:
    return LedgerColumns(
        amount_minor=_amounts(items),
        currency=currencies.codes([i.currency for i in items]),
        posted_day=np.fromiter((i.posted_date.toordinal() for i in items), dtype=np.int64, count=len(items)),
        reference=references.codes([i.reference for i in items]),
        end_to_end_id=references.codes([i.end_to_end_id for i in items]),
        transfer_id=references.codes([i.transfer_id for i in items]),
    )


def _amounts(items: Sequence[StatementItem] | Sequence[LedgerItem]) -> I64:
    amounts = [i.amount_minor for i in items]
    if any(type(a) is not int for a in amounts):
        raise ValueError("amounts must be integer minor units")
    try:
        return np.array(amounts, dtype=np.int64)
    except OverflowError:
        raise ValueError("amounts must fit in 64 bits") from None


def match_items(statement: Sequence[StatementItem], ledger: Sequence[LedgerItem], rules: MatchingRules) -> MatchResult:
    """Matches statement items with ledger items under the rules. Raises ValueError when ids repeat on
    one side or an amount is not an integer within ±10^15 minor units."""
    s_items = sorted(statement, key=attrgetter("id"))
    l_items = sorted(ledger, key=attrgetter("id"))
    for side, ids in (("statement", [i.id for i in s_items]), ("ledger", [i.id for i in l_items])):
        repeated = next((a for a, b in itertools.pairwise(ids) if a == b), None)
        if repeated is not None:
            raise ValueError(f"{side} id {repeated!r} appears twice")
    references = CodeBook(casefold=not rules.references_case_sensitive)
    currencies = CodeBook()
    s_columns = statement_columns(s_items, references, currencies, CodeBook())
    l_columns = ledger_columns(l_items, references, currencies)
    found = match_columns(s_columns, l_columns, rules)
    return _as_result(found, s_columns, l_columns, [i.id for i in s_items], [i.id for i in l_items], rules)


def _as_result(
    found: ColumnarMatches,
    s_columns: StatementColumns,
    l_columns: LedgerColumns,
    s_ids: Sequence[str],
    l_ids: Sequence[str],
    rules: MatchingRules,
) -> MatchResult:
    """Turns row numbers back into ids; matches ordered by their first statement then ledger id,
    breaks by kind, then the same."""
    pairs = pair_scores(found, s_columns, l_columns, rules)
    one = MatchKind.ONE_TO_ONE
    matches = [
        Match(one, (s_ids[s],), (l_ids[l_],), PAIR_RULES[rule], conf, pairs.breakdowns[c], gap)
        for s, l_, rule, conf, c, gap in zip(
            found.pair_statement.tolist(),
            found.pair_ledger.tolist(),
            found.pair_rule.tolist(),
            pairs.confidence.tolist(),
            pairs.criteria.tolist(),
            pairs.amount_difference.tolist(),
            strict=True,
        )
    ]
    for group in found.groups:
        confidence, scores = group_score(group, rules)
        matches.append(
            Match(
                group.kind,
                tuple(s_ids[r] for r in group.statement),
                tuple(l_ids[r] for r in group.ledger),
                group.rule,
                confidence,
                scores,
                group.amount_difference_minor,
            )
        )
    return MatchResult(
        tuple(matches[i] for i in match_order(found).tolist()),
        as_breaks(found, s_ids, l_ids),
        rules.version,
        MappingProxyType(dict(found.diagnostics)),
    )


@dataclass(frozen=True)
class PairScores:
    """Scores of the one-to-one pairs, in the order of `pair_statement`: pairs with the same criteria
    share one read-only breakdown (`breakdowns[criteria[i]]`)."""

    confidence: NDArray[np.float64]
    criteria: I64
    breakdowns: list[Mapping[str, float]]
    amount_difference: I64  # statement - ledger


def pair_scores(
    found: ColumnarMatches, s_columns: StatementColumns, l_columns: LedgerColumns, rules: MatchingRules
) -> PairScores:
    s_day = s_columns.value_day
    if rules.statement_date_is_booking:
        s_day = np.where(s_columns.booking_day != NO_CODE, s_columns.booking_day, s_columns.value_day)
    scoring = PairScoring.of(rules)
    ps, pl, pr = found.pair_statement, found.pair_ledger, found.pair_rule
    amount_gap = s_columns.amount_minor[ps] - l_columns.amount_minor[pl]
    day_gap = s_day[ps] - l_columns.posted_day[pl]
    referenced = pr == PAIR_RULES.index(RULE_REFERENCE)
    points = np.where(referenced, scoring.points(True, amount_gap, day_gap), scoring.points(False, amount_gap, day_gap))
    confidence = points / scoring.max_points

    # Pairs with the same criteria share one read-only breakdown, made once per distinct criteria.
    criteria, first = factorize([referenced.astype(np.int64), np.abs(amount_gap), np.abs(day_gap)])
    shared: list[Mapping[str, float]] = [
        MappingProxyType(
            {
                "reference": 1.0 if ref else 0.0,
                "amount": (scoring.amount_denominator - gap) / scoring.amount_denominator,
                "date": (scoring.day_denominator - days) / scoring.day_denominator,
            }
        )
        for ref, gap, days in zip(
            referenced[first].tolist(), np.abs(amount_gap[first]).tolist(), np.abs(day_gap[first]).tolist(), strict=True
        )
    ]
    return PairScores(confidence, criteria, shared, amount_gap)


def group_score(group: RowGroup, rules: MatchingRules) -> tuple[float, Mapping[str, float]]:
    """(confidence, per-criterion breakdown) of a one-to-many or many-to-one match."""
    fee_span = rules.fee_tolerance_minor + 1
    window_span = rules.group_date_window_days + 1
    scores = {
        "reference": 1.0 if group.rule == RULE_REFERENCE_GROUP else 0.0,
        "amount": max(0.0, (fee_span + min(group.amount_difference_minor, 0)) / fee_span),
        "date": max(0.0, (window_span - group.max_days_apart) / window_span),
    }
    confidence = confidence_of(rules.weights, scores["reference"], scores["amount"], scores["date"])
    return confidence, MappingProxyType(scores)


def match_order(found: ColumnarMatches) -> I64:
    """The order of the matches (pairs, then groups) by their first statement row, then ledger row."""
    first_s = np.concatenate([found.pair_statement, np.array([g.statement[0] for g in found.groups], dtype=np.int64)])
    first_l = np.concatenate([found.pair_ledger, np.array([g.ledger[0] for g in found.groups], dtype=np.int64)])
    return order_by([first_s, first_l])


def as_breaks(found: ColumnarMatches, s_ids: Sequence[str], l_ids: Sequence[str]) -> tuple[Break, ...]:
    """The breaks with ids, ordered by kind, then first statement row, then first ledger row. Only the
    rows in breaks are looked up in `s_ids` and `l_ids`."""
    breaks: list[Break] = []
    for kind, s, l_, gap, days in zip(
        found.break_kind.tolist(),
        found.break_statement.tolist(),
        found.break_ledger.tolist(),
        found.break_amount_difference.tolist(),
        found.break_days_apart.tolist(),
        strict=True,
    ):
        break_kind = BREAK_KINDS[kind]
        difference = None if break_kind is BreakKind.CURRENCY_MISMATCH else gap
        breaks.append(Break(break_kind, (s_ids[s],), (l_ids[l_],), RULE_REFERENCE, difference, days))
    breaks.extend(_as_break(b, s_ids, l_ids) for b in found.breaks)
    breaks.extend(
        Break(BreakKind.MISSING_IN_LEDGER, (s_ids[r],), (), RULE_UNMATCHED) for r in found.missing_in_ledger.tolist()
    )
    breaks.extend(
        Break(BreakKind.MISSING_IN_STATEMENT, (), (l_ids[r],), RULE_UNMATCHED)
        for r in found.missing_in_statement.tolist()
    )
    unlisted = len(s_ids) + len(l_ids)  # sorts after every row: breaks without items on that side
    n_missing_l, n_missing_s = found.missing_in_ledger.size, found.missing_in_statement.size
    kind_key = np.concatenate(
        [
            found.break_kind,
            np.array([BREAK_KINDS.index(b.kind) for b in found.breaks], dtype=np.int64),
            np.full(n_missing_l, BREAK_KINDS.index(BreakKind.MISSING_IN_LEDGER), dtype=np.int64),
            np.full(n_missing_s, BREAK_KINDS.index(BreakKind.MISSING_IN_STATEMENT), dtype=np.int64),
        ]
    )
    s_key = np.concatenate(
        [
            found.break_statement,
            np.array([b.statement[0] if b.statement else unlisted for b in found.breaks], dtype=np.int64),
            found.missing_in_ledger,
            np.full(n_missing_s, unlisted, dtype=np.int64),
        ]
    )
    l_key = np.concatenate(
        [
            found.break_ledger,
            np.array([b.ledger[0] if b.ledger else unlisted for b in found.breaks], dtype=np.int64),
            np.full(n_missing_l, unlisted, dtype=np.int64),
            found.missing_in_statement,
        ]
    )
    return tuple(breaks[i] for i in order_by([kind_key, s_key, l_key]).tolist())


def _as_break(found: RowBreak, s_ids: Sequence[str], l_ids: Sequence[str]) -> Break:
    return Break(
        found.kind,
        tuple(s_ids[r] for r in found.statement),
        tuple(l_ids[r] for r in found.ledger),
        found.rule,
        found.amount_difference_minor,
        found.days_apart,
    )
