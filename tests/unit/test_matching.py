"""The matching engine on plain objects: each pass, each break kind, ties, groups, determinism."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import numpy as np
import pytest

from services.reconciliation.domain import assignment
from services.reconciliation.domain.matching import (
    Break,
    BreakKind,
    LedgerItem,
    Match,
    MatchKind,
    MatchResult,
    StatementItem,
    match_items,
    normalised_text,
    separate_collisions,
)
from services.reconciliation.domain.matching_columns import NO_CODE, LedgerColumns, StatementColumns
from services.reconciliation.domain.matching_engine import match_columns
from services.reconciliation.domain.matching_rules import MatchingPass, MatchingRules, ScoreWeights, StatementDate

DAY0 = date(2026, 3, 2)
RULES = MatchingRules()


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def line(
    id_: str,
    amount: int,
    on: int = 0,
    reference: str | None = None,
    *,
    e2e: str | None = None,
    currency: str = "EUR",
    booked: int | None = None,
    description: str = "",
) -> StatementItem:
    return StatementItem(
        id_, amount, currency, day(on), None if booked is None else day(booked), reference, e2e, description
    )


def entry(
    id_: str,
    amount: int,
    on: int = 0,
    reference: str | None = None,
    *,
    transfer: str | None = None,
    e2e: str | None = None,
    currency: str = "EUR",
) -> LedgerItem:
    return LedgerItem(id_, transfer or f"tr-{id_}", amount, currency, day(on), reference, e2e)


def pairs(result: MatchResult) -> set[tuple[tuple[str, ...], tuple[str, ...]]]:
    return {(m.statement_ids, m.ledger_ids) for m in result.matches}


def only_match(result: MatchResult) -> Match:
    assert len(result.matches) == 1, result
    return result.matches[0]


def only_break(result: MatchResult) -> Break:
    assert len(result.breaks) == 1, result
    return result.breaks[0]


# Pass 1: exact reference.


def test_a_reference_pairs_items_whatever_their_order_and_case() -> None:
    result = match_items(
        [line("s1", 1500, 0, "INV-7"), line("s2", 900, 1, e2e="E2E-42")],
        [entry("l2", 900, 1, e2e="e2e-42"), entry("l1", 1500, 1, "inv-7")],
        RULES,
    )
    assert pairs(result) == {(("s1",), ("l1",)), (("s2",), ("l2",))}
    assert {m.rule for m in result.matches} == {"reference"}
    assert not result.breaks


def test_the_bank_reference_can_be_the_ledger_transfer_id() -> None:
    result = match_items([line("s1", 100, 0, e2e="tr-9")], [entry("l1", 100, 0, transfer="tr-9")], RULES)
    assert only_match(result).rule == "reference"


def test_which_fields_are_references_is_configurable() -> None:
    statement = [line("s1", 100, 0, e2e="tr-9")]
    ledger = [entry("l1", 100, 9, transfer="tr-9")]  # too far apart for amount + date alone
    rules = MatchingRules(ledger_reference_fields=("reference", "end_to_end_id"))
    assert only_break(match_items(statement, ledger, RULES)).kind is BreakKind.DATE_OUT_OF_TOLERANCE
    result = match_items(statement, ledger, rules)
    assert {b.kind for b in result.breaks} == {BreakKind.MISSING_IN_LEDGER, BreakKind.MISSING_IN_STATEMENT}


def test_case_sensitive_references_when_the_rules_say_so() -> None:
    rules = MatchingRules(references_case_sensitive=True, passes=(MatchingPass.REFERENCE,))
    result = match_items([line("s1", 100, 0, "Ab")], [entry("l1", 100, 0, "aB")], rules)
    assert not result.matches


def test_a_reference_match_scores_full_confidence_when_everything_agrees() -> None:
    match = only_match(match_items([line("s1", 100, 0, "R")], [entry("l1", 100, 0, "R")], RULES))
    assert match.kind is MatchKind.ONE_TO_ONE
    assert match.confidence == 1.0
    assert dict(match.breakdown) == {"reference": 1.0, "amount": 1.0, "date": 1.0}
    assert match.amount_difference_minor == 0


def test_the_booking_date_can_be_the_one_compared() -> None:
    statement = [line("s1", 100, 0, "R", booked=5)]
    ledger = [entry("l1", 100, 5, "R")]
    assert only_break(match_items(statement, ledger, RULES)).kind is BreakKind.DATE_OUT_OF_TOLERANCE
    rules = MatchingRules(statement_date=StatementDate.BOOKING_DATE)
    assert only_match(match_items(statement, ledger, rules)).confidence == 1.0


# Pass 2: amount + currency within the date tolerance.


def test_amount_and_date_pair_items_without_references() -> None:
    match = only_match(match_items([line("s1", 4200, 2)], [entry("l1", 4200, 0, "tr-1")], RULES))
    assert match.rule == "amount_date"
    assert dict(match.breakdown) == {"reference": 0.0, "amount": 1.0, "date": pytest.approx(1 / 3)}
    assert match.confidence == pytest.approx((0.3 * 1 + 0.2 / 3) / 1.0)


def test_amount_and_date_need_the_same_currency_and_the_tolerance() -> None:
    result = match_items(
        [line("s1", 4200, 3), line("s2", 500, 0, currency="USD")],
        [entry("l1", 4200, 0), entry("l2", 500, 0)],
        RULES,
    )
    assert not result.matches
    assert len(result.breaks_of(BreakKind.MISSING_IN_LEDGER)) == 2


def test_an_amount_tolerance_admits_close_amounts_and_scores_them_lower() -> None:
    rules = MatchingRules(amount_tolerance_minor=5)
    match = only_match(match_items([line("s1", 1003, 0)], [entry("l1", 1000, 0)], rules))
    assert match.amount_difference_minor == 3
    assert match.breakdown["amount"] == pytest.approx(3 / 6)
    assert not match_items([line("s1", 1006, 0)], [entry("l1", 1000, 0)], rules).matches


def test_the_assignment_maximises_the_total_score_not_first_come_first_served() -> None:
    # s1 is as close to l1 as to l2; s2 only reaches l1. First-fit would give l1 to s1 and leave s2
    # unmatched; the optimum pairs s1-l2 and s2-l1.
    result = match_items(
        [line("s1", 700, 1), line("s2", 700, -1)],
        [entry("l1", 700, 0), entry("l2", 700, 2)],
        RULES,
    )
    assert pairs(result) == {(("s1",), ("l2",)), (("s2",), ("l1",))}
    assert not result.breaks


def test_the_closer_date_wins_when_it_is_the_better_total() -> None:
    result = match_items([line("s1", 700, 0)], [entry("l1", 700, 2), entry("l2", 700, 1)], RULES)
    assert pairs(result) == {(("s1",), ("l2",))}
    assert [b.ledger_ids for b in result.breaks] == [("l1",)]


# Ties are cases, not guesses.


def test_two_equally_good_candidates_are_ambiguous() -> None:
    result = match_items([line("s1", 700, 0)], [entry("l1", 700, 1), entry("l2", 700, -1)], RULES)
    assert not result.matches
    tie = only_break(result)
    assert tie.kind is BreakKind.AMBIGUOUS
    assert (tie.statement_ids, tie.ledger_ids) == (("s1",), ("l1", "l2"))


def test_a_tie_elsewhere_does_not_hold_up_a_forced_pair() -> None:
    # s2 can only be l3: matched; s1 ties between l1 and l2.
    result = match_items(
        [line("s1", 700, 0), line("s2", 999, 0)],
        [entry("l1", 700, 1), entry("l2", 700, -1), entry("l3", 999, 0)],
        RULES,
    )
    assert pairs(result) == {(("s2",), ("l3",))}
    assert [(b.kind, b.ledger_ids) for b in result.breaks] == [(BreakKind.AMBIGUOUS, ("l1", "l2"))]


def test_a_tie_across_a_cycle_is_found_although_no_item_has_two_equal_candidates() -> None:
    # Every item's two candidates score differently, yet s1-l1 + s2-l2 (1 and 1 day apart) totals the
    # same as s1-l2 + s2-l1 (2 and 0 days apart).
    result = match_items(
        [line("s1", 700, 0), line("s2", 700, 1)],
        [entry("l1", 700, 1), entry("l2", 700, 2)],
        RULES,
    )
    assert not result.matches
    tie = only_break(result)
    assert (tie.kind, tie.statement_ids, tie.ledger_ids) == (BreakKind.AMBIGUOUS, ("s1", "s2"), ("l1", "l2"))


def test_identical_statement_lines_are_interchangeable_not_a_tie() -> None:
    # Two identical card lines and two transfers of that amount: whichever line takes whichever
    # transfer, the outcome reads the same.
    result = match_items(
        [line("s1", 999, 0, description="card"), line("s2", 999, 0, description="card")],
        [entry("l1", 999, 0), entry("l2", 999, 0)],
        RULES,
    )
    assert pairs(result) == {(("s1",), ("l1",)), (("s2",), ("l2",))}
    assert not result.breaks


def test_distinguishable_lines_competing_for_distinct_transfers_are_a_tie() -> None:
    result = match_items(
        [line("s1", 999, 0, description="from Ann"), line("s2", 999, 0, description="from Bob")],
        [entry("l1", 999, 0), entry("l2", 999, 0)],
        RULES,
    )
    assert not result.matches
    assert only_break(result).kind is BreakKind.AMBIGUOUS


def test_large_components_get_the_same_answer_from_the_sparse_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    statement = [line(f"s{i:02d}", 500 + rng.randint(0, 2), rng.randint(0, 9), description=f"d{i}") for i in range(40)]
    ledger = [entry(f"l{j:02d}", 500 + rng.randint(0, 2), rng.randint(0, 9)) for j in range(40)]
    rules = MatchingRules(amount_tolerance_minor=1, passes=(MatchingPass.AMOUNT_DATE,))
    dense = match_items(statement, ledger, rules)
    monkeypatch.setattr(assignment, "DENSE_CELLS_LIMIT", 0)
    assert match_items(statement, ledger, rules) == dense
    assert dense.matches and dense.breaks_of(BreakKind.AMBIGUOUS)


def test_a_reference_shared_by_too_many_items_identifies_nothing() -> None:
    statement = [line("s1", 100, 0, "PAYMENT"), line("s2", 200, 0, "PAYMENT")]
    ledger = [entry("l1", 100, 0, "payment"), entry("l2", 200, 1, "payment")]
    result = match_items(statement, ledger, MatchingRules(max_pairs_per_reference=3))
    assert {m.rule for m in result.matches} == {"amount_date"}
    assert result.diagnostics["references_too_common"] == 1


# Pass 3: groups.


def test_a_payout_netting_fees_matches_the_ledger_items_it_pays() -> None:
    rules = MatchingRules(fee_tolerance_minor=100)
    result = match_items(
        [line("payout", 9_940, 3)],
        [entry("c1", 2_500, 1), entry("c2", 3_000, 2), entry("c3", 4_500, 0), entry("other", 7_777, 1)],
        rules,
    )
    match = only_match(result)
    assert match.kind is MatchKind.ONE_TO_MANY
    assert match.rule == "group"
    assert (match.statement_ids, match.ledger_ids) == (("payout",), ("c1", "c2", "c3"))
    assert match.amount_difference_minor == -60  # the fee
    assert 0 < match.confidence < 1
    assert [b.ledger_ids for b in result.breaks] == [("other",)]


def test_a_fee_beyond_the_tolerance_is_no_payout() -> None:
    result = match_items(
        [line("payout", 9_800, 3)],
        [entry("c1", 2_500, 1), entry("c2", 3_000, 2), entry("c3", 4_500, 0)],
        MatchingRules(),
    )
    assert not result.matches


def test_several_lines_can_pay_one_ledger_item() -> None:
    result = match_items(
        [line("part1", 60_000, 0), line("part2", 40_000, 1), line("unrelated", 123, 0)],
        [entry("invoice", 100_000, 1)],
        RULES,
    )
    match = only_match(result)
    assert match.kind is MatchKind.MANY_TO_ONE
    assert (match.statement_ids, match.ledger_ids) == (("part1", "part2"), ("invoice",))


def test_items_sharing_the_payout_reference_are_matched_as_a_whole() -> None:
    items = [entry(f"c{i}", 1_000 + i, 0, e2e="PO-1") for i in range(10)]  # more than a blind search takes
    total = sum(i.amount_minor for i in items)
    result = match_items([line("payout", total - 25, 2, "po-1")], items, MatchingRules(fee_tolerance_minor=25))
    match = only_match(result)
    assert (match.kind, match.rule, len(match.ledger_ids)) == (MatchKind.ONE_TO_MANY, "reference_group", 10)
    assert match.breakdown["reference"] == 1.0


def test_a_payout_reference_whose_items_do_not_add_up_is_one_amount_mismatch() -> None:
    result = match_items(
        [line("payout", 5_000, 0, "PO-2")],
        [entry("c1", 2_000, 0, e2e="PO-2"), entry("c2", 2_500, 0, e2e="PO-2")],
        RULES,
    )
    mismatch = only_break(result)
    assert (mismatch.kind, mismatch.statement_ids, mismatch.ledger_ids) == (
        BreakKind.AMOUNT_MISMATCH,
        ("payout",),
        ("c1", "c2"),
    )
    assert mismatch.amount_difference_minor == 500


def test_several_subsets_adding_up_are_ambiguous() -> None:
    result = match_items([line("payout", 300, 0)], [entry("a", 100, 0), entry("b", 200, 0), entry("c", 200, 1)], RULES)
    assert not result.matches
    tie = only_break(result)
    assert (tie.kind, tie.ledger_ids) == (BreakKind.AMBIGUOUS, ("a", "b", "c"))


def test_two_payouts_claiming_the_same_items_are_ambiguous() -> None:
    result = match_items(
        [line("p1", 300, 0), line("p2", 500, 0)],
        [entry("a", 100, 0), entry("b", 200, 0), entry("c", 300, 5)],
        MatchingRules(passes=(MatchingPass.GROUP,), group_date_window_days=5),
    )
    assert not any(m.kind is MatchKind.ONE_TO_MANY for m in result.matches)
    assert {tuple(b.ledger_ids) for b in result.breaks_of(BreakKind.AMBIGUOUS)} == {("a", "b", "c")}


def test_a_group_search_beyond_the_candidate_cap_gives_up_and_says_so() -> None:
    ledger = [entry(f"l{i:02d}", 1_000 + 7 * i, 0) for i in range(30)]
    result = match_items([line("payout", 2_007, 0)], ledger, MatchingRules(max_group_candidates=8))
    assert not result.matches
    assert result.diagnostics["group_targets_over_candidate_cap"] == 1


def test_a_blind_group_that_could_be_chance_is_not_matched() -> None:
    # Twenty candidates of nearby amounts: hundreds of subsets land near any target, so one landing on it
    # says nothing.
    ledger = [entry(f"l{i:02d}", 1_000 + i, 0) for i in range(20)]
    result = match_items([line("payout", 3_030, 0)], ledger, RULES)
    assert not result.matches
    assert result.diagnostics["group_solutions_not_significant"] == 1


# Breaks revealed by a reference.


def test_a_referenced_item_with_another_amount_is_an_amount_mismatch() -> None:
    mismatch = only_break(match_items([line("s1", 1_050, 0, "R1")], [entry("l1", 1_000, 1, "R1")], RULES))
    assert (mismatch.kind, mismatch.statement_ids, mismatch.ledger_ids) == (BreakKind.AMOUNT_MISMATCH, ("s1",), ("l1",))
    assert (mismatch.amount_difference_minor, mismatch.days_apart) == (50, -1)


def test_a_referenced_item_in_another_currency_is_a_currency_mismatch() -> None:
    mismatch = only_break(
        match_items([line("s1", 1_000, 0, "R1", currency="GBP")], [entry("l1", 1_000, 0, "R1")], RULES)
    )
    assert (mismatch.kind, mismatch.statement_ids, mismatch.ledger_ids) == (
        BreakKind.CURRENCY_MISMATCH,
        ("s1",),
        ("l1",),
    )
    assert mismatch.amount_difference_minor is None


def test_a_referenced_item_too_far_in_time_is_out_of_tolerance() -> None:
    late = only_break(match_items([line("s1", 1_000, 7, "R1")], [entry("l1", 1_000, 0, "R1")], RULES))
    assert (late.kind, late.statement_ids, late.ledger_ids, late.days_apart) == (
        BreakKind.DATE_OUT_OF_TOLERANCE,
        ("s1",),
        ("l1",),
        7,
    )


def test_an_unmatched_line_is_missing_in_the_ledger_and_an_unmatched_entry_missing_in_the_statement() -> None:
    result = match_items([line("s1", 1_000, 0, "R1")], [entry("l1", 2_000, 0, "R2")], RULES)
    assert [(b.kind, b.statement_ids, b.ledger_ids) for b in result.breaks] == [
        (BreakKind.MISSING_IN_LEDGER, ("s1",), ()),
        (BreakKind.MISSING_IN_STATEMENT, (), ("l1",)),
    ]


# Duplicates.


def test_the_same_line_twice_is_a_duplicate_of_the_first() -> None:
    result = match_items([line("s1", 1_000, 0, "R1"), line("s2", 1_000, 0, "R1")], [entry("l1", 1_000, 0, "R1")], RULES)
    assert pairs(result) == {(("s1",), ("l1",))}
    duplicate = only_break(result)
    assert (duplicate.kind, duplicate.statement_ids, duplicate.ledger_ids) == (
        BreakKind.DUPLICATE,
        ("s1", "s2"),
        ("l1",),
    )


def test_a_duplicate_of_a_line_with_an_amount_mismatch_points_at_that_break() -> None:
    result = match_items([line("s1", 1_100, 0, "R1"), line("s2", 1_100, 0, "R1")], [entry("l1", 1_000, 0, "R1")], RULES)
    assert [(b.kind, b.statement_ids, b.ledger_ids) for b in result.breaks] == [
        (BreakKind.AMOUNT_MISMATCH, ("s1",), ("l1",)),
        (BreakKind.DUPLICATE, ("s1", "s2"), ("l1",)),
    ]


def test_a_repeated_line_nothing_explains_is_missing_once_and_duplicated_once() -> None:
    result = match_items([line("s1", 1_000, 0, "R1"), line("s2", 1_000, 0, "R1")], [], RULES)
    assert [(b.kind, b.statement_ids) for b in result.breaks] == [
        (BreakKind.MISSING_IN_LEDGER, ("s1",)),
        (BreakKind.DUPLICATE, ("s1", "s2")),
    ]


def test_the_same_reference_paid_twice_in_the_ledger_is_no_duplicate() -> None:
    result = match_items(
        [line("s1", 1_000, 0, "INV-1"), line("s2", 1_000, 0, "INV-1")],
        [entry("l1", 1_000, 0, "INV-1"), entry("l2", 1_000, 0, "INV-1")],
        RULES,
    )
    assert pairs(result) == {(("s1",), ("l1",)), (("s2",), ("l2",))}
    assert not result.breaks


def test_lines_without_a_reference_are_never_duplicates() -> None:
    result = match_items([line("s1", 1_000, 0), line("s2", 1_000, 0)], [entry("l1", 1_000, 0)], RULES)
    assert pairs(result) == {(("s1",), ("l1",))}
    assert [b.kind for b in result.breaks] == [BreakKind.MISSING_IN_LEDGER]


# Currencies without minor units, money going out.


def test_yen_amounts_are_whole_yen_and_match_exactly() -> None:
    result = match_items(
        [line("s1", 125_000, 0, "JP-1", currency="JPY"), line("s2", 98_765, 1, currency="JPY")],
        [
            entry("l1", 125_000, 0, "JP-1", currency="JPY"),
            entry("l2", 98_765, 0, currency="JPY"),
            entry("l3", 98_765, 0),
        ],
        RULES,
    )
    assert pairs(result) == {(("s1",), ("l1",)), (("s2",), ("l2",))}
    assert [b.ledger_ids for b in result.breaks] == [("l3",)]  # the EUR entry of the same figure


def test_outgoing_payments_match_and_a_batch_debit_carries_the_bank_fee() -> None:
    result = match_items(
        [line("s1", -2_500, 0, "OUT-1"), line("batch", -10_035, 1)],
        [entry("l1", -2_500, 0, "OUT-1"), entry("b1", -4_000, 0), entry("b2", -6_000, 1)],
        MatchingRules(fee_tolerance_minor=50),
    )
    assert pairs(result) == {(("s1",), ("l1",)), (("batch",), ("b1", "b2"))}
    batch = next(m for m in result.matches if m.kind is MatchKind.ONE_TO_MANY)
    assert batch.amount_difference_minor == -35


def test_money_in_never_pairs_with_money_out() -> None:
    result = match_items([line("s1", 500, 0)], [entry("l1", -500, 0)], MatchingRules(amount_tolerance_minor=1000))
    assert not result.matches


# Determinism and the two entry points.


def mixed_day() -> tuple[list[StatementItem], list[LedgerItem]]:
    statement = [
        line("s01", 1_000, 0, "R1"),
        line("s02", 1_000, 0, "R1"),
        line("s03", 2_000, 1),
        line("s04", 700, 0),
        line("s05", 9_940, 3),
        line("s06", 5_000, 0, "R6", currency="USD"),
        line("s07", 3_333, 9, "R7"),
        line("s08", 4_444, 0, "R8"),
        line("s09", 12_345, 0),
    ]
    ledger = [
        entry("l01", 1_000, 0, "R1"),
        entry("l03", 2_000, 0),
        entry("l04a", 700, 1),
        entry("l04b", 700, -1),
        entry("l05a", 2_500, 1),
        entry("l05b", 3_000, 2),
        entry("l05c", 4_500, 0),
        entry("l06", 5_000, 0, "R6"),
        entry("l07", 3_333, 0, "R7"),
        entry("l08", 4_000, 0, "R8"),
        entry("l10", 77, 0),
    ]
    return statement, ledger


def test_the_result_does_not_depend_on_the_input_order() -> None:
    statement, ledger = mixed_day()
    rules = MatchingRules(fee_tolerance_minor=100)
    expected = match_items(statement, ledger, rules)
    for seed in range(5):
        shuffled_s, shuffled_l = statement[:], ledger[:]
        random.Random(seed).shuffle(shuffled_s)
        random.Random(seed + 100).shuffle(shuffled_l)
        assert match_items(shuffled_s, shuffled_l, rules) == expected
    assert [m.statement_ids for m in expected.matches] == sorted(m.statement_ids for m in expected.matches)
    assert {b.kind for b in expected.breaks} == set(BreakKind)  # the day holds one of every kind


def test_every_item_is_accounted_for_exactly_once_apart_from_duplicate_evidence() -> None:
    statement, ledger = mixed_day()
    result = match_items(statement, ledger, MatchingRules(fee_tolerance_minor=100))
    seen_s = [i for m in result.matches for i in m.statement_ids]
    seen_l = [i for m in result.matches for i in m.ledger_ids]
    for b in result.breaks:
        seen_s += b.statement_ids[-1:] if b.kind is BreakKind.DUPLICATE else b.statement_ids
        seen_l += [] if b.kind is BreakKind.DUPLICATE else b.ledger_ids
    assert sorted(seen_s) == sorted(i.id for i in statement)
    assert sorted(seen_l) == sorted(i.id for i in ledger)


def test_the_columnar_entry_point_answers_in_row_numbers() -> None:
    statement = StatementColumns(
        amount_minor=np.array([1_000, 2_000, 300]),
        currency=np.array([0, 0, 0]),
        value_day=np.array([DAY0.toordinal()] * 3),
        booking_day=np.full(3, NO_CODE),
        reference=np.array([11, NO_CODE, NO_CODE]),
        end_to_end_id=np.full(3, NO_CODE),
        description=np.zeros(3, dtype=np.int64),
    )
    ledger = LedgerColumns(
        amount_minor=np.array([2_000, 1_000, 100, 200]),
        currency=np.zeros(4, dtype=np.int64),
        posted_day=np.array([DAY0.toordinal()] * 4),
        reference=np.array([NO_CODE, 11, NO_CODE, NO_CODE]),
        end_to_end_id=np.full(4, NO_CODE),
        transfer_id=np.array([20, 21, 22, 23]),
    )
    found = match_columns(statement, ledger, RULES)
    assert sorted(zip(found.pair_statement.tolist(), found.pair_ledger.tolist(), strict=True)) == [(0, 1), (1, 0)]
    assert [(g.statement, g.ledger) for g in found.groups] == [((2,), (2, 3))]
    assert found.missing_in_ledger.size == found.missing_in_statement.size == 0


def test_ids_must_be_unique_on_each_side() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        match_items([line("s1", 1, 0), line("s1", 2, 0)], [], RULES)


def test_amounts_must_be_integer_minor_units() -> None:
    with pytest.raises(ValueError, match="integer minor units"):
        match_items([StatementItem("s1", 10.5, "EUR", DAY0, None, None, None)], [], RULES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="within"):
        match_items([line("s1", 10**16, 0)], [], RULES)


# Rules as data.


def test_rules_survive_a_json_round_trip() -> None:
    rules = MatchingRules(
        version=7,
        passes=(MatchingPass.AMOUNT_DATE, MatchingPass.REFERENCE),
        ledger_reference_fields=("reference",),
        date_tolerance_days=4,
        fee_tolerance_minor=150,
        weights=ScoreWeights(reference=0.6, amount=0.3, date=0.1),
    )
    stored = json.dumps(rules.to_dict())
    assert MatchingRules.from_dict(json.loads(stored)) == rules
    assert json.loads(stored)["passes"] == ["amount_date", "reference"]


@pytest.mark.parametrize(
    "change",
    [
        {"unknown": 1},
        {"passes": ["reference", "reference"]},
        {"passes": ["fuzzy"]},
        {"date_tolerance_days": -1},
        {"date_tolerance_days": "2"},
        {"max_group_size": 1},
        {"ledger_reference_fields": ["iban"]},
        {"weights": {"reference": 1, "amount": 0, "date": 0}},
        {"weights": {"colour": 1}},
        {"reference_groups": "yes"},
        {"version": 0},
    ],
)
def test_invalid_rules_are_refused_whole(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MatchingRules.from_dict({**MatchingRules().to_dict(), **change})


def test_the_result_names_the_rules_version() -> None:
    assert match_items([], [], MatchingRules(version=3)).rules_version == 3


def test_codes_that_two_texts_share_are_separated_by_their_checks() -> None:
    # Codes 7 and 9 each stand for two texts (their checks differ): after separation, equal (code, check)
    # pairs share a code, different ones do not, and NO_CODE stays NO_CODE.
    codes = [np.array([7, 7, NO_CODE, 9], dtype=np.int64), np.array([7, 9, 5], dtype=np.int64)]
    checks = [np.array([1, 2, NO_CODE, 3], dtype=np.int64), np.array([2, 4, 6], dtype=np.int64)]
    a, b = separate_collisions(codes, checks)
    assert a[2] == NO_CODE
    assert a[0] != a[1] and a[1] == b[0] and a[3] != b[1] and len({a[0], a[1], a[3], b[1], b[2]}) == 5


def test_codes_without_a_shared_code_come_back_unchanged() -> None:
    codes = [np.array([7, 7, NO_CODE], dtype=np.int64), np.array([7, 9], dtype=np.int64)]
    checks = [np.array([1, 1, NO_CODE], dtype=np.int64), np.array([1, 2], dtype=np.int64)]
    assert all(x is y for x, y in zip(separate_collisions(codes, checks), codes, strict=True))


def test_text_is_compared_stripped_and_case_folded_as_python_does() -> None:
    assert normalised_text("\u00a0Stra\u00dfe\t", casefold=True) == "strasse"
    assert normalised_text("\u212aELVIN ", casefold=True) == "kelvin"
    assert normalised_text(" ABC ", casefold=False) == "ABC"
    assert normalised_text(None, casefold=True) == ""
