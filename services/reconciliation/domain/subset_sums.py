"""Bounded subset-sum: which few of a short list of amounts add up to a target, and whether only one does.

Used for payouts (one statement line = several ledger items less fees) and the reverse. Meet in the
middle: the candidates are split in two halves, every subset of each half with at most `max_size` items
is enumerated with numpy, and the halves are joined by one sorted search on (size, sum). Exact integer
arithmetic throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]
MAX_CANDIDATES = 32
MIN_SIZE = 2


@dataclass(frozen=True)
class SubsetSearch:
    """`count` subsets (of at least two positions into the candidates) add up into the range, -1 when
    too many to count; the first `limit` of them are listed, each as sorted positions."""

    count: int
    solutions: tuple[tuple[int, ...], ...]


def search_cost(n_candidates: int, max_size: int) -> int:
    """Subsets enumerated and probed by one search: the work charged against a budget."""
    left = n_candidates // 2
    return ((1 << left) + (1 << (n_candidates - left))) * (max_size + 1)


class SubsetSums:
    """The subsets of 2..max_size of `amounts` (at most 32), ready to be counted into any sum range."""

    def __init__(self, amounts: I64, max_size: int) -> None:
        n = amounts.size
        if n > MAX_CANDIDATES:
            raise ValueError(f"subset search takes at most {MAX_CANDIDATES} candidates")
        self._n = n
        self._left_n = n // 2
        self._max_size = max_size
        self._left = _half_subsets(amounts[: self._left_n], max_size)
        masks, sizes, sums = _half_subsets(amounts[self._left_n :], max_size)
        order = np.argsort(sums, kind="stable")
        self._right = (masks[order], sizes[order], sums[order])

    def _hits(self, low: int, high: int, most: int) -> tuple[I64, I64] | None:
        """(left, right) index pairs whose sums add up into the range and whose sizes add up to 2..max;
        None when more than `most` pairs add up before sizes are checked."""
        left_sums = self._left[2]
        right_sums = self._right[2]
        first = np.searchsorted(right_sums, low - left_sums, side="left")
        last = np.searchsorted(right_sums, high - left_sums, side="right")
        per_left = last - first
        total = int(per_left.sum())
        if total > most:
            return None
        left_at = np.repeat(np.arange(left_sums.size, dtype=np.int64), per_left)
        right_at = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(per_left) - per_left - first, per_left)
        size = self._left[1][left_at] + self._right[1][right_at]
        keep = (size >= MIN_SIZE) & (size <= self._max_size)
        return left_at[keep], right_at[keep]

    def count(self, low: int, high: int, most: int = 1_000_000) -> int | None:
        """How many subsets add up into the range; None when too many to count."""
        hits = self._hits(low, high, most)
        return None if hits is None else int(hits[0].size)

    def search(self, low: int, high: int, limit: int = 16) -> SubsetSearch:
        """The subsets adding up into the range; a count of -1 means more than a million."""
        hits = self._hits(low, high, 1_000_000)
        if hits is None:
            return SubsetSearch(-1, ())
        left_at, right_at = hits
        found = []
        for i, j in zip(left_at[:limit].tolist(), right_at[:limit].tolist(), strict=True):
            mask = int(self._left[0][i]) | (int(self._right[0][j]) << self._left_n)
            found.append(tuple(b for b in range(self._n) if mask >> b & 1))
        return SubsetSearch(int(left_at.size), tuple(sorted(found)))


def subsets_summing_to(amounts: I64, low: int, high: int, max_size: int, limit: int = 16) -> SubsetSearch:
    """All subsets of 2..max_size of `amounts` whose sum lies in [low, high]."""
    return SubsetSums(amounts, max_size).search(low, high, limit)


def _half_subsets(amounts: I64, max_size: int) -> tuple[I64, I64, I64]:
    """Masks, sizes and sums of the subsets with at most max_size items. Built by doubling: after the
    j-th amount, the second half of the arrays are the first half with that amount added, so index i
    is exactly the subset whose bits are set in i."""
    sums = np.zeros(1, dtype=np.int64)
    sizes = np.zeros(1, dtype=np.int64)
    for amount in amounts.tolist():
        sums = np.concatenate([sums, sums + amount])
        sizes = np.concatenate([sizes, sizes + 1])
    masks = np.arange(sums.size, dtype=np.int64)
    keep = sizes <= max_size
    return masks[keep], sizes[keep], sums[keep]
