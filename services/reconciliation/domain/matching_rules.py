"""Matching rules as data: which passes run, in what order, their tolerances and the score's weights.

A rule set is stored as JSON next to every run (`to_dict`/`from_dict`), so a result can always be traced
to the rules that produced it. Scores are computed here in integer points, so that ties are exact and
the optimal assignment compares sums of integers, never of floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]

STATEMENT_REFERENCE_FIELDS = ("end_to_end_id", "reference")
LEDGER_REFERENCE_FIELDS = ("reference", "end_to_end_id", "transfer_id")

# Weights are kept to three decimals when turned into integer points: enough to express any sensible
# preference, and small enough that sums over a component stay exact in float64 inside the solver.
WEIGHT_SCALE = 1000
MAX_GROUP_SIZE = 12
MAX_GROUP_CANDIDATES = 32  # meet-in-the-middle enumerates 2^(n/2) subsets per half
MAX_DAY_TOLERANCE = 366
# Points reach 3000 (A+1)(T+1); these bounds keep a component's total exact in the solver's float64.
MAX_AMOUNT_TOLERANCE = 100_000
MAX_FEE_TOLERANCE = 10**9


class MatchingPass(StrEnum):
    REFERENCE = "reference"  # exact reference, then reference groups, then reference breaks
    AMOUNT_DATE = "amount_date"  # amount + currency within the date tolerance, no reference needed
    GROUP = "group"  # bounded subset-sum: one statement line for many ledger items, and the reverse


class StatementDate(StrEnum):
    VALUE_DATE = "value_date"
    BOOKING_DATE = "booking_date"  # falls back to the value date on lines without one


@dataclass(frozen=True)
class ScoreWeights:
    """Weight of each criterion in the confidence; criteria scores are in [0, 1], the confidence is their
    weighted mean."""

    reference: float = 0.5
    amount: float = 0.3
    date: float = 0.2

    def __post_init__(self) -> None:
        values = (self.reference, self.amount, self.date)
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1 for v in values):
            raise ValueError("score weights must be numbers between 0 and 1")
        # A candidate without a reference scores on amount and date alone; were both weightless, every
        # such candidate would score zero and none could be told apart from a non-candidate.
        if round(self.amount * WEIGHT_SCALE) + round(self.date * WEIGHT_SCALE) <= 0:
            raise ValueError("the amount and date weights cannot both be zero")

    @property
    def points(self) -> tuple[int, int, int]:
        return (
            round(self.reference * WEIGHT_SCALE),
            round(self.amount * WEIGHT_SCALE),
            round(self.date * WEIGHT_SCALE),
        )


@dataclass(frozen=True)
class MatchingRules:
    """One rule set. `version` is the rule set's own version, recorded with every run it produced."""

    version: int = 1
    passes: tuple[MatchingPass, ...] = (MatchingPass.REFERENCE, MatchingPass.AMOUNT_DATE, MatchingPass.GROUP)
    statement_reference_fields: tuple[str, ...] = STATEMENT_REFERENCE_FIELDS
    ledger_reference_fields: tuple[str, ...] = LEDGER_REFERENCE_FIELDS
    references_case_sensitive: bool = False
    reference_groups: bool = True
    # A reference shared by more pairs than this identifies nothing ("PAYMENT", "SEPA"): it is ignored
    # rather than joined into a quadratic number of candidates.
    max_pairs_per_reference: int = 10_000
    statement_date: StatementDate = StatementDate.VALUE_DATE
    date_tolerance_days: int = 2
    amount_tolerance_minor: int = 0
    max_group_size: int = 6
    group_date_window_days: int = 3
    fee_tolerance_minor: int = 0
    max_group_candidates: int = 24
    # A group found without a reference must be unlikely to be chance: counting the subset sums around
    # the target, fewer than this many would be expected to land in its window by coincidence.
    group_max_coincidences: float = 0.05
    group_work_budget: int = 50_000_000
    weights: ScoreWeights = field(default_factory=ScoreWeights)

    def __post_init__(self) -> None:
        # Stored rules come back as plain JSON values: normalise them once here, so every other check
        # and every reader sees enums and tuples.
        object.__setattr__(self, "passes", tuple(MatchingPass(p) for p in self.passes))
        object.__setattr__(self, "statement_date", StatementDate(self.statement_date))
        object.__setattr__(self, "statement_reference_fields", tuple(self.statement_reference_fields))
        object.__setattr__(self, "ledger_reference_fields", tuple(self.ledger_reference_fields))
        _check_range("version", self.version, 1, 2**31 - 1)
        for name in ("references_case_sensitive", "reference_groups"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        if not isinstance(self.weights, ScoreWeights):
            raise ValueError("weights must be ScoreWeights")
        if len(set(self.passes)) != len(self.passes):
            raise ValueError("a pass may appear once")
        _check_fields(self.statement_reference_fields, STATEMENT_REFERENCE_FIELDS, "statement_reference_fields")
        _check_fields(self.ledger_reference_fields, LEDGER_REFERENCE_FIELDS, "ledger_reference_fields")
        _check_range("date_tolerance_days", self.date_tolerance_days, 0, MAX_DAY_TOLERANCE)
        _check_range("group_date_window_days", self.group_date_window_days, 0, MAX_DAY_TOLERANCE)
        _check_range("amount_tolerance_minor", self.amount_tolerance_minor, 0, MAX_AMOUNT_TOLERANCE)
        _check_range("fee_tolerance_minor", self.fee_tolerance_minor, 0, MAX_FEE_TOLERANCE)
        _check_range("max_group_size", self.max_group_size, 2, MAX_GROUP_SIZE)
        _check_range("max_group_candidates", self.max_group_candidates, 2, MAX_GROUP_CANDIDATES)
        _check_range("max_pairs_per_reference", self.max_pairs_per_reference, 1, 10**8)
        _check_range("group_work_budget", self.group_work_budget, 0, 10**12)
        limit = self.group_max_coincidences
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit <= 10**6:
            raise ValueError("group_max_coincidences must be a number between 0 and 1000000")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passes"] = [str(p) for p in self.passes]
        data["statement_reference_fields"] = list(self.statement_reference_fields)
        data["ledger_reference_fields"] = list(self.ledger_reference_fields)
        data["statement_date"] = str(self.statement_date)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MatchingRules:
        """Raises ValueError on unknown keys or invalid values: a stored rule set is never half-read."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown matching rule keys: {', '.join(unknown)}")
        values = dict(data)
        try:
            if "weights" in values:
                weight_keys = {f.name for f in fields(ScoreWeights)}
                unknown = sorted(set(values["weights"]) - weight_keys)
                if unknown:
                    raise ValueError(f"unknown weight keys: {', '.join(unknown)}")
                values["weights"] = ScoreWeights(**values["weights"])
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"invalid matching rules: {exc}") from None

    @property
    def statement_date_is_booking(self) -> bool:
        return self.statement_date is StatementDate.BOOKING_DATE


def _check_fields(chosen: tuple[str, ...], allowed: tuple[str, ...], name: str) -> None:
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(allowed):
        raise ValueError(f"{name} must be distinct names among {', '.join(allowed)}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}")


@dataclass(frozen=True)
class PairScoring:
    """Integer points for a one-to-one candidate: each criterion's score is a fraction with a fixed
    denominator, so all of them are brought to the common denominator (A+1)(T+1) and weighted.

    reference: 1 when the pair shares a reference, else 0;
    amount: (A + 1 - |difference|) / (A + 1) with A the amount tolerance;
    date: (T + 1 - |days apart|) / (T + 1) with T the date tolerance.
    """

    reference_weight: int
    amount_weight: int
    date_weight: int
    amount_denominator: int
    day_denominator: int

    @classmethod
    def of(cls, rules: MatchingRules) -> PairScoring:
        reference, amount, date = rules.weights.points
        return cls(reference, amount, date, rules.amount_tolerance_minor + 1, rules.date_tolerance_days + 1)

    @property
    def max_points(self) -> int:
        return (
            (self.reference_weight + self.amount_weight + self.date_weight)
            * self.amount_denominator
            * self.day_denominator
        )

    def points(self, referenced: bool, amount_gap: I64, day_gap: I64) -> I64:
        """Callers only pass candidates, whose gaps are within the tolerances."""
        amount_part = self.amount_weight * (self.amount_denominator - np.abs(amount_gap)) * self.day_denominator
        day_part = self.date_weight * (self.day_denominator - np.abs(day_gap)) * self.amount_denominator
        reference_part = self.reference_weight * self.amount_denominator * self.day_denominator if referenced else 0
        total: I64 = (amount_part + day_part + reference_part).astype(np.int64)
        return total


def confidence_of(weights: ScoreWeights, reference: float, amount: float, date: float) -> float:
    """Weighted mean of criterion scores, with the same integer weights the points use."""
    w_reference, w_amount, w_date = weights.points
    return (w_reference * reference + w_amount * amount + w_date * date) / (w_reference + w_amount + w_date)
