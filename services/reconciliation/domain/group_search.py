"""Groups: one item on one side explained by several on the other (a payout netting fees, or one
transfer booked by the bank as several lines), found by bounded subset-sum and settled without guessing.

The fee is Σ ledger - Σ statement and must lie in [0, fee tolerance]: fees only ever make the bank's
figure smaller than the ledger's gross, whichever way the money moves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.reconciliation.domain.matching_rules import MatchingRules
from services.reconciliation.domain.subset_sums import SubsetSums, search_cost

I64 = NDArray[np.int64]
SOLUTIONS_LISTED = 16
# The neighbourhood in which subset sums are counted to judge whether a solution could be chance: a
# sixteenth of the target either side, and never less than a hundred windows.
NEIGHBOURHOOD_DIVISOR = 16
NEIGHBOURHOOD_WINDOWS = 100


@dataclass(frozen=True)
class GroupCandidate:
    """Members found for one target; `unique` when exactly one subset adds up."""

    statement: tuple[int, ...]
    ledger: tuple[int, ...]
    unique: bool


class GroupSearch:
    """Searches within a work budget shared by all the searches of one run."""

    def __init__(
        self, rules: MatchingRules, statement_amounts: I64, ledger_amounts: I64, diagnostics: Counter[str]
    ) -> None:
        self._rules = rules
        self._statement_amounts = statement_amounts
        self._ledger_amounts = ledger_amounts
        self._diagnostics = diagnostics
        self.budget = rules.group_work_budget

    def find(
        self, target: int, target_is_statement: bool, candidates: I64, by_reference: bool
    ) -> GroupCandidate | None:
        """Members among `candidates` (rows of the other side, same currency and sign) adding up to the
        target. Items sharing the target's reference are tried as a whole first, whatever their number;
        without a reference, a solution also has to be unlikely to be a coincidence."""
        rules = self._rules
        fee = rules.fee_tolerance_minor
        if target_is_statement:
            t = int(self._statement_amounts[target])
            low, high = t, t + fee
            amounts = self._ledger_amounts[candidates]
        else:
            t = int(self._ledger_amounts[target])
            low, high = t - fee, t
            amounts = self._statement_amounts[candidates]
        if by_reference and low <= sum(amounts.tolist()) <= high:
            return _candidate(target, target_is_statement, tuple(candidates.tolist()), unique=True)
        # Every member has the target's sign, so none can be larger than the target's range.
        keep = np.abs(amounts) <= max(abs(low), abs(high))
        candidates, amounts = candidates[keep], amounts[keep]
        if candidates.size < 2:
            return None
        if candidates.size > rules.max_group_candidates:
            self._diagnostics["group_targets_over_candidate_cap"] += 1
            return None
        cost = search_cost(candidates.size, rules.max_group_size)
        if cost > self.budget:
            self._diagnostics["group_targets_over_budget"] += 1
            return None
        self.budget -= cost
        self._diagnostics["group_targets_searched"] += 1
        sums = SubsetSums(amounts, rules.max_group_size)
        found = sums.search(low, high, SOLUTIONS_LISTED)
        if found.count == 0:
            return None
        if not by_reference and self._coincidence_expected(sums, low, high, found.count):
            self._diagnostics["group_solutions_not_significant"] += 1
            return None
        if found.count == 1:
            members = tuple(int(candidates[p]) for p in found.solutions[0])
            return _candidate(target, target_is_statement, members, unique=True)
        if 0 < found.count <= SOLUTIONS_LISTED:
            members = tuple(sorted({int(candidates[p]) for solution in found.solutions for p in solution}))
        else:
            members = tuple(candidates.tolist())
        return _candidate(target, target_is_statement, members, unique=False)

    def _coincidence_expected(self, sums: SubsetSums, low: int, high: int, in_window: int) -> bool:
        """Counts the subset sums near the window: at that density, how many would fall into the window
        by chance? Past the rules' limit, finding a solution says nothing about the target."""
        width = high - low + 1
        reach = max(max(abs(low), abs(high)) // NEIGHBOURHOOD_DIVISOR, NEIGHBOURHOOD_WINDOWS * width)
        nearby = sums.count(low - reach, high + reach)
        if nearby is None:
            return True
        others = nearby - max(in_window, 0)
        return others * width / (2 * reach) > self._rules.group_max_coincidences


def _candidate(target: int, target_is_statement: bool, members: tuple[int, ...], unique: bool) -> GroupCandidate:
    if target_is_statement:
        return GroupCandidate((target,), tuple(sorted(members)), unique)
    return GroupCandidate(tuple(sorted(members)), (target,), unique)


def settle_groups(found: list[GroupCandidate], n_statement: int) -> tuple[list[GroupCandidate], list[GroupCandidate]]:
    """A group is accepted when its search found exactly one solution and no other search claims any of
    its items. Overlapping candidates, and searches with several solutions, become tied sets (returned
    as candidates holding every item involved)."""
    parent = list(range(len(found)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for i, candidate in enumerate(found):
        for node in (*candidate.statement, *(n_statement + r for r in candidate.ledger)):
            if node in owner:
                parent[root(i)] = root(owner[node])
            else:
                owner[node] = i
    clusters: dict[int, list[GroupCandidate]] = {}
    for i, candidate in enumerate(found):
        clusters.setdefault(root(i), []).append(candidate)
    accepted: list[GroupCandidate] = []
    tied: list[GroupCandidate] = []
    for cluster in clusters.values():
        if len(cluster) == 1 and cluster[0].unique:
            accepted.append(cluster[0])
        else:
            statement = tuple(sorted({r for c in cluster for r in c.statement}))
            ledger = tuple(sorted({r for c in cluster for r in c.ledger}))
            tied.append(GroupCandidate(statement, ledger, unique=False))
    return accepted, tied
