"""The matching passes, run over columns (matching_columns.py) in the order the rules give, each on the
rows the earlier ones left:

- reference: exact reference pairs (optimal one-to-one), then reference groups (several items on one
  side sharing the other's reference and adding up to it), then the breaks a reference reveals
  (amount, currency or date differ);
- amount_date: same currency and amount (± tolerance) within the date tolerance;
- group: bounded subset-sum for payouts netting fees (one statement line, many ledger items) and the
  reverse.

After each pass, leftover copies of a statement line already explained are its duplicates. What stays
unpaired at the end is missing on the other side. Ties are reported as AMBIGUOUS, never guessed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.typing import NDArray

from services.reconciliation.domain.assignment import TiedSets, assign_optimally
from services.reconciliation.domain.group_search import GroupCandidate, GroupSearch, settle_groups
from services.reconciliation.domain.match_candidates import join_amount_date, join_references, keyed_rows, window_slices
from services.reconciliation.domain.matching_columns import (
    BREAK_KINDS,
    NO_CODE,
    PAIR_RULES,
    RULE_AMOUNT_DATE,
    RULE_GROUP,
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
from services.reconciliation.domain.matching_rules import MatchingPass, MatchingRules, PairScoring
from services.reconciliation.domain.sorted_keys import distinct, factorize, order_by, starts_of_runs

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]

# Before pruning by amount, a target with more candidates than this multiple of the cap is not searched:
# slicing and pruning such lists one by one costs more than the search could find.
PRUNE_HEADROOM = 8
# Reference breaks, best first when one item could explain several: only the date differs, then the
# amount, then the currency.
CURRENCY_BREAK, AMOUNT_BREAK, DATE_BREAK = 1, 2, 3
BREAK_OF = {
    CURRENCY_BREAK: BREAK_KINDS.index(BreakKind.CURRENCY_MISMATCH),
    AMOUNT_BREAK: BREAK_KINDS.index(BreakKind.AMOUNT_MISMATCH),
    DATE_BREAK: BREAK_KINDS.index(BreakKind.DATE_OUT_OF_TOLERANCE),
}


def match_columns(statement: StatementColumns, ledger: LedgerColumns, rules: MatchingRules) -> ColumnarMatches:
    """Runs the rules' passes over the two sides and returns matches and breaks by row number."""
    run = _Run(statement, ledger, rules)
    for matching_pass in rules.passes:
        if matching_pass is MatchingPass.REFERENCE:
            run.reference_pass()
        elif matching_pass is MatchingPass.AMOUNT_DATE:
            run.amount_date_pass()
        else:
            run.group_pass()
        run.settle_duplicates(str(matching_pass), final=False)
    run.settle_duplicates(RULE_UNMATCHED, final=True)
    return run.result()


class _Run:
    """One matching run: what is still unpaired on each side, and everything found so far."""

    def __init__(self, statement: StatementColumns, ledger: LedgerColumns, rules: MatchingRules) -> None:
        self.statement = statement
        self.ledger = ledger
        self.rules = rules
        self.scoring = PairScoring.of(rules)
        self.s_alive = np.ones(len(statement), dtype=np.bool_)
        self.l_alive = np.ones(len(ledger), dtype=np.bool_)
        self.s_duplicate = np.zeros(len(statement), dtype=np.bool_)
        self.s_day = statement.value_day
        if rules.statement_date_is_booking:
            self.s_day = np.where(statement.booking_day != NO_CODE, statement.booking_day, statement.value_day)
        # What explained a statement row, kept as evidence for its duplicates: the paired ledger row, or
        # the ledger rows of its group or break.
        self.s_partner = np.full(len(statement), -1, dtype=np.int64)
        self.s_linked: dict[int, tuple[int, ...]] = {}
        self.pairs: list[tuple[I64, I64, int]] = []
        self.pair_breaks: list[tuple[I64, I64, I64, I64, I64]] = []
        self.groups: list[RowGroup] = []
        self.breaks: list[RowBreak] = []
        self.diagnostics: Counter[str] = Counter()
        self.searches = GroupSearch(rules, statement.amount_minor, ledger.amount_minor, self.diagnostics)
        self.duplicate_sets = self._duplicate_sets()

    # Identities: rows with equal codes are interchangeable for the assignment (see assignment.py).

    def statement_identity(self, rows: I64) -> I64:
        s = self.statement
        columns = (s.currency, s.amount_minor, s.value_day, s.booking_day, s.reference, s.end_to_end_id, s.description)
        return _identity([c[rows] for c in columns])

    def ledger_identity(self, rows: I64) -> I64:
        led = self.ledger
        columns = [led.currency, led.amount_minor, led.posted_day, led.reference, led.end_to_end_id]
        if "transfer_id" in self.rules.ledger_reference_fields:
            columns.append(led.transfer_id)
        return _identity([c[rows] for c in columns])

    # The passes.

    def reference_pass(self) -> None:
        rules = self.rules
        s_rows, l_rows = np.flatnonzero(self.s_alive), np.flatnonzero(self.l_alive)
        s_key_rows, s_keys = keyed_rows(
            s_rows, [getattr(self.statement, f)[s_rows] for f in rules.statement_reference_fields]
        )
        l_key_rows, l_keys = keyed_rows(
            l_rows, [getattr(self.ledger, f)[l_rows] for f in rules.ledger_reference_fields]
        )
        # At a million rows the join is the run's memory peak: nothing else it does not need stays alive.
        del s_rows, l_rows
        join = join_references(s_key_rows, s_keys, l_key_rows, l_keys, rules.max_pairs_per_reference)
        del s_key_rows, s_keys, l_key_rows, l_keys
        self.diagnostics["references_too_common"] += join.skipped_keys
        s, led = join.statement, join.ledger
        if s.size == 0:
            return
        same_currency = self.statement.currency[s] == self.ledger.currency[led]
        same_currency_and_sign = same_currency & (
            np.sign(self.statement.amount_minor[s]) == np.sign(self.ledger.amount_minor[led])
        )
        amount_gap = self.statement.amount_minor[s] - self.ledger.amount_minor[led]
        day_gap = self.s_day[s] - self.ledger.posted_day[led]
        amount_ok = same_currency_and_sign & (np.abs(amount_gap) <= rules.amount_tolerance_minor)
        clean = amount_ok & (np.abs(day_gap) <= rules.date_tolerance_days)
        self._assign(s[clean], led[clean], self.scoring.points(True, amount_gap[clean], day_gap[clean]), RULE_REFERENCE)
        # Only what the one-to-one assignment left can form groups or reveal breaks.
        live = self.s_alive[s] & self.l_alive[led]
        s, led, same_currency, same_currency_and_sign = (
            s[live],
            led[live],
            same_currency[live],
            same_currency_and_sign[live],
        )
        amount_ok, clean, amount_gap, day_gap = amount_ok[live], clean[live], amount_gap[live], day_gap[live]
        if rules.reference_groups:
            self._reference_groups(s, led, same_currency_and_sign)
        kind = np.where(~same_currency, CURRENCY_BREAK, np.where(~amount_ok, AMOUNT_BREAK, DATE_BREAK))
        dirty = ~clean
        self._reference_breaks(s[dirty], led[dirty], kind[dirty], amount_gap[dirty], day_gap[dirty])

    def amount_date_pass(self) -> None:
        s_rows, l_rows = np.flatnonzero(self.s_alive), np.flatnonzero(self.l_alive)
        s, led = join_amount_date(
            (s_rows, self.statement.currency[s_rows], self.statement.amount_minor[s_rows], self.s_day[s_rows]),
            (l_rows, self.ledger.currency[l_rows], self.ledger.amount_minor[l_rows], self.ledger.posted_day[l_rows]),
            self.rules.amount_tolerance_minor,
            self.rules.date_tolerance_days,
        )
        points = self.scoring.points(
            False,
            self.statement.amount_minor[s] - self.ledger.amount_minor[led],
            self.s_day[s] - self.ledger.posted_day[led],
        )
        self._assign(s, led, points, RULE_AMOUNT_DATE)

    def group_pass(self) -> None:
        rules = self.rules
        s_rows = np.flatnonzero(self.s_alive & (self.statement.amount_minor != 0))
        l_rows = np.flatnonzero(self.l_alive & (self.ledger.amount_minor != 0))
        found: list[GroupCandidate] = []
        for target_is_statement in (True, False):
            t_rows, o_rows = (s_rows, l_rows) if target_is_statement else (l_rows, s_rows)
            t_rows = self._distinct_targets(t_rows, target_is_statement)
            order, first, last = window_slices(
                self._side(t_rows, target_is_statement),
                self._side(o_rows, not target_is_statement),
                rules.group_date_window_days,
            )
            counts = last - first
            crowded = counts > PRUNE_HEADROOM * rules.max_group_candidates
            self.diagnostics["group_targets_over_candidate_cap"] += int(crowded.sum())
            for i in np.flatnonzero((counts >= 2) & ~crowded).tolist():
                candidates = o_rows[np.sort(order[first[i] : last[i]])]
                candidate = self.searches.find(int(t_rows[i]), target_is_statement, candidates, by_reference=False)
                if candidate is not None:
                    found.append(candidate)
        self._record_groups(found, RULE_GROUP)

    # Pieces of the passes.

    def _assign(self, s: I64, led: I64, points: I64, rule: str) -> None:
        if s.size == 0:
            return
        outcome = assign_optimally(s, led, points, self.statement_identity, self.ledger_identity)
        self.pairs.append((outcome.statement, outcome.ledger, PAIR_RULES.index(rule)))
        self._consume(outcome.statement, outcome.ledger)
        self.s_partner[outcome.statement] = outcome.ledger
        self._ties(outcome.tied, rule)

    def _reference_groups(self, s: I64, led: I64, same_currency_and_sign: Bools) -> None:
        live = self.s_alive[s] & self.l_alive[led] & same_currency_and_sign
        live &= (self.statement.amount_minor[s] != 0) & (self.ledger.amount_minor[led] != 0)
        s, led = s[live], led[live]
        found: list[GroupCandidate] = []
        for target_is_statement, targets, others in ((True, s, led), (False, led, s)):
            order = order_by([targets, others])
            targets, others = targets[order], others[order]
            starts = np.flatnonzero(starts_of_runs([targets]))
            ends = np.concatenate([starts[1:], [targets.size]]).astype(np.int64)
            several = ends - starts >= 2
            searching = set(self._distinct_targets(targets[starts[several]], target_is_statement).tolist())
            for start, end in zip(starts[several].tolist(), ends[several].tolist(), strict=True):
                if int(targets[start]) in searching:
                    candidate = self.searches.find(
                        int(targets[start]), target_is_statement, others[start:end], by_reference=True
                    )
                    if candidate is not None:
                        found.append(candidate)
        self._record_groups(found, RULE_REFERENCE_GROUP)

    def _reference_breaks(self, s: I64, led: I64, kind: I64, amount_gap: I64, day_gap: I64) -> None:
        live = self.s_alive[s] & self.l_alive[led]
        s, led, kind, amount_gap, day_gap = s[live], led[live], kind[live], amount_gap[live], day_gap[live]
        # One item sharing its reference with several distinct items on the other side, in one currency,
        # is a group whose amounts do not add up: one break with all of them, rather than a pair and strays.
        for statement_is_hub in (True, False):
            hub, spoke = (s, led) if statement_is_hub else (led, s)
            if hub.size == 0:
                break
            hub_degree = np.bincount(hub)
            star_edge = (hub_degree[hub] >= 2) & (np.bincount(spoke)[spoke] == 1)
            spoke_identity = self.ledger_identity if statement_is_hub else self.statement_identity
            hubs = np.flatnonzero(star_edge)
            hubs = hubs[order_by([hub[hubs]])]
            starts = np.flatnonzero(starts_of_runs([hub[hubs]]))
            for edges in np.split(hubs, starts[1:]) if hubs.size else []:
                h = int(hub[edges[0]])
                if edges.size < hub_degree[h] or (kind[edges] == CURRENCY_BREAK).any():
                    continue  # some of the hub's references lead elsewhere too, or the currency differs
                if distinct(spoke_identity(spoke[edges])).size < edges.size:
                    continue  # identical spokes are copies of one item, not parts of a group
                spokes = tuple(sorted(spoke[edges].tolist()))
                group_s, group_l = ((h,), spokes) if statement_is_hub else (spokes, (h,))
                difference = int(
                    self.statement.amount_minor[list(group_s)].sum() - self.ledger.amount_minor[list(group_l)].sum()
                )
                self._break(BreakKind.AMOUNT_MISMATCH, group_s, group_l, RULE_REFERENCE_GROUP, difference)
            live = self.s_alive[s] & self.l_alive[led]
            s, led, kind, amount_gap, day_gap = s[live], led[live], kind[live], amount_gap[live], day_gap[live]
        if s.size == 0:
            return
        # One-to-one: the break explaining most first, then the closest; ranks keep points small integers.
        gap = np.where(kind == AMOUNT_BREAK, np.abs(amount_gap), np.abs(day_gap))
        rank, _ = factorize([kind, gap])
        worst = int(rank.max()) + 1
        points = (kind * (worst + 1) + (worst - rank)).astype(np.int64)
        outcome = assign_optimally(s, led, points, self.statement_identity, self.ledger_identity)
        edge_key = s * len(self.ledger) + led
        order = order_by([edge_key])
        edge = order[np.searchsorted(edge_key[order], outcome.statement * len(self.ledger) + outcome.ledger)]
        breaks = np.array([BREAK_OF[k] for k in kind[edge].tolist()], dtype=np.int64)
        self.pair_breaks.append((outcome.statement, outcome.ledger, breaks, amount_gap[edge], day_gap[edge]))
        self._consume(outcome.statement, outcome.ledger)
        self.s_partner[outcome.statement] = outcome.ledger
        self._ties(outcome.tied, RULE_REFERENCE)

    def _record_groups(self, found: list[GroupCandidate], rule: str) -> None:
        accepted, tied = settle_groups(found, len(self.statement))
        for candidate in tied:
            self._break(BreakKind.AMBIGUOUS, candidate.statement, candidate.ledger, rule)
        if not accepted:
            return
        # Sums and spans of all accepted groups at once, in exact int64.
        s_rows = np.array([r for g in accepted for r in g.statement], dtype=np.int64)
        l_rows = np.array([r for g in accepted for r in g.ledger], dtype=np.int64)
        s_group = np.repeat(np.arange(len(accepted)), [len(g.statement) for g in accepted])
        l_group = np.repeat(np.arange(len(accepted)), [len(g.ledger) for g in accepted])
        difference = np.zeros(len(accepted), dtype=np.int64)
        np.add.at(difference, s_group, self.statement.amount_minor[s_rows])
        np.subtract.at(difference, l_group, self.ledger.amount_minor[l_rows])
        # Groups have one item on one side, so comparing each member with the other side's first item
        # covers every pair.
        s_anchor = self.s_day[[g.statement[0] for g in accepted]]
        l_anchor = self.ledger.posted_day[[g.ledger[0] for g in accepted]]
        apart = np.zeros(len(accepted), dtype=np.int64)
        np.maximum.at(apart, s_group, np.abs(self.s_day[s_rows] - l_anchor[s_group]))
        np.maximum.at(apart, l_group, np.abs(self.ledger.posted_day[l_rows] - s_anchor[l_group]))
        for g, d, a in zip(accepted, difference.tolist(), apart.tolist(), strict=True):
            kind = MatchKind.ONE_TO_MANY if len(g.statement) == 1 else MatchKind.MANY_TO_ONE
            self.groups.append(RowGroup(kind, g.statement, g.ledger, rule, d, a))
            for r in g.statement:
                self.s_linked[r] = g.ledger
        self._consume(s_rows, l_rows)

    def _ties(self, tied: TiedSets, rule: str) -> None:
        """One AMBIGUOUS case per tied set (many at once: built from lists, consumed as arrays)."""
        self._consume(tied.statement, tied.ledger)
        for s_rows, l_rows in tied.as_tuples():
            self.breaks.append(RowBreak(BreakKind.AMBIGUOUS, s_rows, l_rows, rule))
            for r in s_rows:
                self.s_linked[r] = l_rows

    def _break(
        self,
        kind: BreakKind,
        s_rows: tuple[int, ...],
        l_rows: tuple[int, ...],
        rule: str,
        amount_difference: int | None = None,
    ) -> None:
        self.breaks.append(RowBreak(kind, s_rows, l_rows, rule, amount_difference))
        self._consume(np.array(s_rows, dtype=np.int64), np.array(l_rows, dtype=np.int64))
        for r in s_rows:
            self.s_linked[r] = l_rows

    def _consume(self, s_rows: I64, l_rows: I64) -> None:
        self.s_alive[s_rows] = False
        self.l_alive[l_rows] = False

    def _side(self, rows: I64, statement_side: bool) -> tuple[I64, I64, I64]:
        if statement_side:
            return self.statement.currency[rows], np.sign(self.statement.amount_minor[rows]), self.s_day[rows]
        return self.ledger.currency[rows], np.sign(self.ledger.amount_minor[rows]), self.ledger.posted_day[rows]

    def _distinct_targets(self, rows: I64, statement_side: bool) -> I64:
        """Identical targets would find the same members and look like rivals: only the first searches;
        its copies become duplicates or stay unmatched."""
        if rows.size < 2:
            return rows
        identity = self.statement_identity(rows) if statement_side else self.ledger_identity(rows)
        _, first = factorize([identity])
        return rows[np.sort(first)]

    # Duplicates.

    def _duplicate_sets(self) -> list[I64]:
        """Statement rows with the same currency, amount, value date and the same non-empty references,
        as sets of at least two rows in row order (the sort is stable). Only rows whose reference
        repeats can be in one, so only those are sorted."""
        s = self.statement
        references = [getattr(s, name) for name in self.rules.statement_reference_fields]
        maybe = np.zeros(len(s), dtype=np.bool_)
        for codes in references:
            present = np.flatnonzero(codes != NO_CODE)
            same, _ = factorize([codes[present]])
            maybe[present[np.bincount(same)[same] >= 2]] = True
        rows = np.flatnonzero(maybe)
        if rows.size == 0:
            return []
        keys = [s.currency[rows], s.amount_minor[rows], s.value_day[rows], *(codes[rows] for codes in references)]
        order = order_by(keys)
        rows = rows[order]
        starts = np.flatnonzero(starts_of_runs([k[order] for k in keys]))
        ends = np.concatenate([starts[1:], [rows.size]])
        return [rows[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True) if b - a >= 2]

    def settle_duplicates(self, rule: str, final: bool) -> None:
        """Leftover copies of a line that something explained are its duplicates; at the end, copies of a
        line nothing explained are duplicates of the first copy, which stays missing in the ledger."""
        pending = []
        for rows in self.duplicate_sets:
            alive = rows[self.s_alive[rows]]
            if alive.size == 0:
                continue
            explained = rows[~self.s_alive[rows] & ~self.s_duplicate[rows]]
            if explained.size:
                original, copies = int(explained[0]), alive.tolist()
            elif final and alive.size >= 2:
                original, copies = int(alive[0]), alive[1:].tolist()
            else:
                pending.append(rows)
                continue
            partner = int(self.s_partner[original])
            evidence = (partner,) if partner >= 0 else self.s_linked.get(original, ())
            for copy in copies:
                self.breaks.append(RowBreak(BreakKind.DUPLICATE, (original, copy), evidence, rule))
            self.s_alive[copies] = False
            self.s_duplicate[copies] = True
        self.duplicate_sets = pending

    def result(self) -> ColumnarMatches:
        def joined(parts: list[I64]) -> I64:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

        return ColumnarMatches(
            pair_statement=joined([p[0] for p in self.pairs]),
            pair_ledger=joined([p[1] for p in self.pairs]),
            pair_rule=joined([np.full(p[0].size, p[2], dtype=np.int64) for p in self.pairs]),
            break_statement=joined([b[0] for b in self.pair_breaks]),
            break_ledger=joined([b[1] for b in self.pair_breaks]),
            break_kind=joined([b[2] for b in self.pair_breaks]),
            break_amount_difference=joined([b[3] for b in self.pair_breaks]),
            break_days_apart=joined([b[4] for b in self.pair_breaks]),
            groups=tuple(self.groups),
            breaks=tuple(self.breaks),
            missing_in_ledger=np.flatnonzero(self.s_alive).astype(np.int64),
            missing_in_statement=np.flatnonzero(self.l_alive).astype(np.int64),
            diagnostics={name: self.diagnostics[name] for name in sorted(self.diagnostics)},
        )


def _identity(columns: list[I64]) -> I64:
    """Equal codes for rows equal in every column."""
    if columns[0].size == 0:
        return np.zeros(0, dtype=np.int64)
    return factorize(columns)[0]
