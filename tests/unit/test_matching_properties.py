"""Matching properties (hypothesis):

(a) a statement mirroring a random ledger, with discrepancies of every kind injected: the engine finds
    every injected break and match, and reports nothing else;
(b) the one-to-one assignment reaches the brute-force maximum total score, and reports as ambiguous
    exactly the items whose partner differs between optimal matchings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import Enum, auto

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.reconciliation.domain.matching import (
    BreakKind,
    LedgerItem,
    MatchResult,
    StatementItem,
    match_items,
)
from services.reconciliation.domain.matching_rules import MatchingPass, MatchingRules, PairScoring

DAY0 = date(2026, 5, 4)
FEE_TOLERANCE = 3
RULES = MatchingRules(fee_tolerance_minor=FEE_TOLERANCE)
Found = tuple[str, tuple[str, ...], tuple[str, ...]]


class Fate(Enum):
    MATCHED = auto()
    MATCHED_WITHOUT_REFERENCE = auto()
    LEDGER_DROPPED = auto()  # the line stays: missing in the ledger
    LINE_DROPPED = auto()  # the entry stays: missing in the statement
    AMOUNT_CHANGED = auto()
    CURRENCY_CHANGED = auto()
    DATE_SHIFTED = auto()
    LINE_DUPLICATED = auto()


@dataclass
class Scenario:
    statement: list[StatementItem] = field(default_factory=list)
    ledger: list[LedgerItem] = field(default_factory=list)
    matches: set[tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=set)
    breaks: list[Found] = field(default_factory=list)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Amounts are 8 x distinct powers of two: no two items are equal, no subset of items adds up to
    another item or to another subset, and a fee of at most 3 cannot bridge two sums. So every
    injected discrepancy has exactly one reading."""
    exponents = iter(draw(st.permutations(list(range(4, 44)))))

    def amount(sign: int) -> int:
        return sign * (8 << next(exponents))

    scenario = Scenario()
    fates = draw(st.lists(st.sampled_from(list(Fate)), max_size=14))
    for i, fate in enumerate(fates):
        currency = draw(st.sampled_from(["EUR", "JPY"]))
        sign = draw(st.sampled_from([1, 1, -1]))
        posted = draw(st.integers(0, 30))
        s_id, l_id, reference = f"s{i:03d}", f"l{i:03d}", f"T-{i}"
        entry = LedgerItem(l_id, reference, amount(sign), currency, DAY0 + timedelta(posted), reference, None)
        line_day = posted + draw(st.integers(-RULES.date_tolerance_days, RULES.date_tolerance_days))
        line = StatementItem(s_id, entry.amount_minor, currency, DAY0 + timedelta(line_day), None, None, reference, "")
        if fate is Fate.MATCHED_WITHOUT_REFERENCE:
            line = StatementItem(s_id, line.amount_minor, currency, line.value_date, None, None, None, "")
        elif fate is Fate.AMOUNT_CHANGED:
            line = StatementItem(
                s_id, line.amount_minor + draw(st.integers(1, 7)), currency, line.value_date, None, None, reference
            )
        elif fate is Fate.CURRENCY_CHANGED:
            line = StatementItem(s_id, line.amount_minor, "USD", line.value_date, None, None, reference)
        elif fate is Fate.DATE_SHIFTED:
            shift = draw(st.integers(RULES.date_tolerance_days + 1, 12)) * draw(st.sampled_from([1, -1]))
            line = StatementItem(
                s_id, line.amount_minor, currency, DAY0 + timedelta(posted + shift), None, None, reference
            )
        if fate is not Fate.LEDGER_DROPPED:
            scenario.ledger.append(entry)
        if fate is not Fate.LINE_DROPPED:
            scenario.statement.append(line)
        if fate in (Fate.MATCHED, Fate.MATCHED_WITHOUT_REFERENCE, Fate.LINE_DUPLICATED):
            scenario.matches.add(((s_id,), (l_id,)))
        expected = {
            Fate.LEDGER_DROPPED: ("MISSING_IN_LEDGER", (s_id,), ()),
            Fate.LINE_DROPPED: ("MISSING_IN_STATEMENT", (), (l_id,)),
            Fate.AMOUNT_CHANGED: ("AMOUNT_MISMATCH", (s_id,), (l_id,)),
            Fate.CURRENCY_CHANGED: ("CURRENCY_MISMATCH", (s_id,), (l_id,)),
            Fate.DATE_SHIFTED: ("DATE_OUT_OF_TOLERANCE", (s_id,), (l_id,)),
        }
        if fate in expected:
            scenario.breaks.append(expected[fate])
        if fate is Fate.LINE_DUPLICATED:
            copy = f"t{i:03d}"  # sorts after every "s": the later id is the duplicate
            scenario.statement.append(
                StatementItem(copy, line.amount_minor, currency, line.value_date, None, None, reference)
            )
            scenario.breaks.append(("DUPLICATE", (s_id, copy), (l_id,)))

    for k in range(draw(st.integers(0, 2))):  # lines the ledger never heard of
        s_id = f"x{k:03d}"
        stray_reference = draw(st.sampled_from([None, f"X-{k}"]))
        stray_day = DAY0 + timedelta(draw(st.integers(0, 30)))
        scenario.statement.append(StatementItem(s_id, amount(1), "EUR", stray_day, None, stray_reference, None))
        scenario.breaks.append(("MISSING_IN_LEDGER", (s_id,), ()))

    for k in range(draw(st.integers(0, 2))):  # payouts: one line for several entries, less a fee
        sign = draw(st.sampled_from([1, -1]))
        paid_on = draw(st.integers(3, 30))
        with_reference = draw(st.booleans())
        payout_ref = f"PO-{k}" if with_reference else None
        members = [
            LedgerItem(
                f"p{k}m{m}",
                f"tr-p{k}m{m}",
                amount(sign),
                "EUR",
                DAY0 + timedelta(paid_on - draw(st.integers(0, RULES.group_date_window_days))),
                f"tr-p{k}m{m}",
                payout_ref,
            )
            for m in range(draw(st.integers(2, 4)))
        ]
        fee = draw(st.integers(0, FEE_TOLERANCE))
        total = sum(m.amount_minor for m in members) - fee
        scenario.ledger += members
        scenario.statement.append(
            StatementItem(f"p{k}", total, "EUR", DAY0 + timedelta(paid_on), None, payout_ref, None)
        )
        scenario.matches.add(((f"p{k}",), tuple(m.id for m in members)))

    for k in range(draw(st.integers(0, 1))):  # one entry paid in several lines
        booked = draw(st.integers(0, 30))
        parts = [
            StatementItem(
                f"q{k}p{m}", amount(1), "EUR", DAY0 + timedelta(booked + draw(st.integers(0, 3))), None, None, None
            )
            for m in range(draw(st.integers(2, 3)))
        ]
        scenario.statement += parts
        paid = sum(p.amount_minor for p in parts)
        scenario.ledger.append(LedgerItem(f"q{k}", f"tr-q{k}", paid, "EUR", DAY0 + timedelta(booked), f"tr-q{k}", None))
        scenario.matches.add((tuple(p.id for p in parts), (f"q{k}",)))
    return scenario


def found_breaks(result: MatchResult) -> list[Found]:
    return sorted((str(b.kind), b.statement_ids, b.ledger_ids) for b in result.breaks)


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_every_injected_break_is_found_and_none_is_invented(scenario: Scenario) -> None:
    result = match_items(scenario.statement, scenario.ledger, RULES)
    assert found_breaks(result) == sorted(scenario.breaks)
    assert {(m.statement_ids, m.ledger_ids) for m in result.matches} == scenario.matches
    assert len(result.matches) == len(scenario.matches)


# (b) optimality of the one-to-one assignment.

AMOUNT_DATE_ONLY = MatchingRules(passes=(MatchingPass.AMOUNT_DATE,), amount_tolerance_minor=2)


@st.composite
def small_sides(draw: st.DrawFn) -> tuple[list[StatementItem], list[LedgerItem]]:
    """Up to 6 x 6 items of nearly equal amounts over a week: many candidates, frequent ties. Every item
    is distinguishable (own description or reference), so any tie is a real one."""
    n_s, n_l = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    statement = [
        StatementItem(
            f"s{i}",
            1_000 + draw(st.integers(0, 3)),
            "EUR",
            DAY0 + timedelta(draw(st.integers(0, 6))),
            None,
            None,
            None,
            f"line {i}",
        )
        for i in range(n_s)
    ]
    ledger = [
        LedgerItem(
            f"l{j}",
            f"t{j}",
            1_000 + draw(st.integers(0, 3)),
            "EUR",
            DAY0 + timedelta(draw(st.integers(0, 6))),
            f"t{j}",
            None,
        )
        for j in range(n_l)
    ]
    return statement, ledger


def optimal_matchings(points: dict[tuple[int, int], int], n_s: int) -> tuple[int, list[dict[int, int]]]:
    """Every matching of candidate pairs with the maximum total, by enumeration."""
    best = -1
    optima: list[dict[int, int]] = []

    def extend(i: int, used: frozenset[int], chosen: dict[int, int], total: int) -> None:
        nonlocal best, optima
        if i == n_s:
            if total > best:
                best, optima = total, [dict(chosen)]
            elif total == best:
                optima.append(dict(chosen))
            return
        extend(i + 1, used, chosen, total)
        for (s, led), p in points.items():
            if s == i and led not in used:
                chosen[i] = led
                extend(i + 1, used | {led}, chosen, total + p)
                del chosen[i]

    extend(0, frozenset(), {}, 0)
    return best, optima


@settings(max_examples=300, deadline=None)
@given(small_sides())
def test_the_assignment_is_optimal_and_ties_are_exactly_the_undecided_items(
    sides: tuple[list[StatementItem], list[LedgerItem]],
) -> None:
    statement, ledger = sides
    rules = AMOUNT_DATE_ONLY
    scoring = PairScoring.of(rules)
    points: dict[tuple[int, int], int] = {}
    for i, s in enumerate(statement):
        for j, led in enumerate(ledger):
            amount_gap = s.amount_minor - led.amount_minor
            day_gap = (s.value_date - led.posted_date).days
            if abs(amount_gap) <= rules.amount_tolerance_minor and abs(day_gap) <= rules.date_tolerance_days:
                points[i, j] = int(scoring.points(False, np.array([amount_gap]), np.array([day_gap]))[0])
    best, optima = optimal_matchings(points, len(statement))

    result = match_items(statement, ledger, rules)
    s_index = {s.id: i for i, s in enumerate(statement)}
    l_index = {led.id: j for j, led in enumerate(ledger)}
    matched = {(s_index[m.statement_ids[0]], l_index[m.ledger_ids[0]]) for m in result.matches}
    tied_s = {s_index[i] for b in result.breaks_of(BreakKind.AMBIGUOUS) for i in b.statement_ids}
    tied_l = {l_index[i] for b in result.breaks_of(BreakKind.AMBIGUOUS) for i in b.ledger_ids}

    partners_s = {i: {o.get(i) for o in optima} for i in range(len(statement))}
    partners_l = {j: {next((i for i, x in o.items() if x == j), None) for o in optima} for j in range(len(ledger))}
    assert tied_s == {i for i, p in partners_s.items() if len(p) > 1}
    assert tied_l == {j for j, p in partners_l.items() if len(p) > 1}
    assert matched == {(i, p.copy().pop()) for i, p in partners_s.items() if len(p) == 1 and None not in p}
    if not tied_s and not tied_l:
        assert sum(points[pair] for pair in matched) == best
    for m in result.matches:
        pair = (s_index[m.statement_ids[0]], l_index[m.ledger_ids[0]])
        assert m.confidence == points[pair] / scoring.max_points
