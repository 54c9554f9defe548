"""Set-based candidate generation: which statement rows may pair with which ledger rows, found by
sorting and searching integer keys (numpy), never by looking at every pair.

- references: an equi-join on reference codes;
- amount + date: rows grouped by (currency, amount) and joined within the date band, or, with an
  amount tolerance, grouped by (currency, day) and joined within the amount band for each day apart;
- group windows: for each target, the slice of the other side with the same currency and sign within
  a number of days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.reconciliation.domain.matching_columns import NO_CODE
from services.reconciliation.domain.sorted_keys import distinct, factorize, order_by

I64 = NDArray[np.int64]


@dataclass(frozen=True)
class ReferenceJoin:
    statement: I64
    ledger: I64
    skipped_keys: int  # references shared by too many pairs to identify anything


def expand_ranges(left: I64, first: I64, last: I64) -> tuple[I64, I64]:
    """For each i, pairs (left[i], p) for p in first[i]..last[i]-1: positions into a sorted array."""
    counts = np.maximum(last - first, 0)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts - first, counts)
    return np.repeat(left, counts), positions


def keyed_rows(rows: I64, columns: list[I64]) -> tuple[I64, I64]:
    """(row, key) for every present key of the given rows, each key once per row: a reference equal to
    the transfer id is one key, not two."""
    found_rows: list[I64] = []
    found_keys: list[I64] = []
    for i, keys in enumerate(columns):
        present = keys != NO_CODE
        for earlier in columns[:i]:
            present &= keys != earlier
        found_rows.append(rows[present])
        found_keys.append(keys[present])
    return np.concatenate(found_rows), np.concatenate(found_keys)


def join_references(
    statement_rows: I64, statement_keys: I64, ledger_rows: I64, ledger_keys: I64, max_pairs_per_key: int
) -> ReferenceJoin:
    """Distinct (statement, ledger) row pairs sharing a key; (row, key) pairs are distinct on each side
    (see keyed_rows). A sorted merge: both sides sorted by key, each statement key's run of equal ledger
    keys found by a search in key order."""
    order = order_by([statement_keys])
    s_keys, s_rows = statement_keys[order], statement_rows[order]
    order = order_by([ledger_keys])
    l_keys, l_rows = ledger_keys[order], ledger_rows[order]
    del order
    first = np.searchsorted(l_keys, s_keys, side="left")
    last = np.searchsorted(l_keys, s_keys, side="right")
    # A key shared by many statement rows and many ledger rows makes their cross product: skip it.
    s_count = _run_lengths(s_keys)
    per_key = np.repeat(s_count, s_count) * (last - first)
    crowded = per_key > max_pairs_per_key
    skipped = int(distinct(s_keys[crowded]).size)
    last[crowded] = first[crowded]
    left, positions = expand_ranges(s_rows, first, last)
    pair_s, pair_l = _distinct(left, l_rows[positions])
    return ReferenceJoin(pair_s, pair_l, skipped)


def _run_lengths(sorted_keys: I64) -> I64:
    """How long each run of equal keys in a sorted array is."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    return np.diff(np.concatenate([starts, [sorted_keys.size]])).astype(np.int64)


def join_amount_date(
    statement: tuple[I64, I64, I64, I64],
    ledger: tuple[I64, I64, I64, I64],
    amount_tolerance: int,
    day_tolerance: int,
) -> tuple[I64, I64]:
    """Pairs with the same currency and sign, amounts within the tolerance and days within the tolerance.
    Each side is (rows, currency codes, amounts, days)."""
    s_rows, s_cur, s_amount, s_day = statement
    l_rows, l_cur, l_amount, l_day = ledger
    if s_rows.size == 0 or l_rows.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    day_base = min(int(s_day.min()), int(l_day.min())) - day_tolerance - 1
    n_days = max(int(s_day.max()), int(l_day.max())) + day_tolerance + 2 - day_base
    cur_codes, _ = factorize([np.concatenate([s_cur, l_cur])])
    s_c, l_c = cur_codes[: s_cur.size], cur_codes[s_cur.size :]

    found_s: list[I64] = []  # positions into the statement arrays
    found_l: list[I64] = []  # positions into the ledger arrays
    if amount_tolerance == 0:
        # One sorted key (currency, amount, day): each row's candidates are one contiguous slice.
        amount_codes, amounts = factorize([np.concatenate([s_amount, l_amount])])
        s_a, l_a = amount_codes[: s_amount.size], amount_codes[s_amount.size :]
        group = np.int64(amounts.size)
        l_key = (l_c * group + l_a) * n_days + (l_day - day_base)
        s_key = (s_c * group + s_a) * n_days + (s_day - day_base)
        order = order_by([l_key])
        l_sorted = l_key[order]
        # Queries in key order walk the sorted keys forward instead of jumping around memory.
        queries = order_by([s_key])
        first = np.searchsorted(l_sorted, s_key[queries] - day_tolerance, side="left")
        last = np.searchsorted(l_sorted, s_key[queries] + day_tolerance, side="right")
        left, positions = expand_ranges(queries, first, last)
        found_s.append(left)
        found_l.append(order[positions])
    else:
        # Key (currency, day, amount rank) for each day apart; amounts ranked together with the band
        # edges so that the band is a contiguous range of ranks.
        values = np.concatenate([l_amount, s_amount - amount_tolerance, s_amount + amount_tolerance])
        ranked, ranks_of = factorize([values])
        l_r = ranked[: l_amount.size]
        lo_r = ranked[l_amount.size : l_amount.size + s_amount.size]
        hi_r = ranked[l_amount.size + s_amount.size :]
        width = np.int64(ranks_of.size)
        l_key = (l_c * n_days + (l_day - day_base)) * width + l_r
        order = order_by([l_key])
        l_sorted = l_key[order]
        for offset in range(-day_tolerance, day_tolerance + 1):
            s_base = (s_c * n_days + (s_day + offset - day_base)) * width
            first = np.searchsorted(l_sorted, s_base + lo_r, side="left")
            last = np.searchsorted(l_sorted, s_base + hi_r, side="right")
            left, positions = expand_ranges(np.arange(s_rows.size, dtype=np.int64), first, last)
            found_s.append(left)
            found_l.append(order[positions])
    # Each pair is found once: an entry's day is one offset away from a line's, never several.
    pos_s, pos_l = np.concatenate(found_s), np.concatenate(found_l)
    same_sign = np.sign(s_amount[pos_s]) == np.sign(l_amount[pos_l])
    return s_rows[pos_s[same_sign]], l_rows[pos_l[same_sign]]


def window_slices(target: tuple[I64, I64, I64], other: tuple[I64, I64, I64], days: int) -> tuple[I64, I64, I64]:
    """For each target (currency code, sign, day), the slice [first, last) of the other side's rows,
    sorted by (currency, sign, day), with the same currency and sign within `days`. Returns the other
    side's sort order and the bounds."""
    t_cur, t_sign, t_day = target
    o_cur, o_sign, o_day = other
    if t_cur.size == 0 or o_cur.size == 0:
        empty = np.zeros(t_cur.size, dtype=np.int64)
        return np.zeros(0, dtype=np.int64), empty, empty
    currency, _ = factorize([np.concatenate([t_cur, o_cur])])
    t_c, o_c = currency[: t_cur.size], currency[t_cur.size :]
    base = min(int(t_day.min()), int(o_day.min())) - days - 1
    n_days = max(int(t_day.max()), int(o_day.max())) + days + 2 - base
    o_key = (o_c * 3 + (o_sign + 1)) * n_days + (o_day - base)
    t_key = (t_c * 3 + (t_sign + 1)) * n_days + (t_day - base)
    order = order_by([o_key])
    o_sorted = o_key[order]
    first = np.searchsorted(o_sorted, t_key - days, side="left").astype(np.int64)
    last = np.searchsorted(o_sorted, t_key + days, side="right").astype(np.int64)
    return order, first, last


def _distinct(first: I64, second: I64) -> tuple[I64, I64]:
    """Distinct (first, second) pairs of non-negative integers, sorted, by sorting one combined integer
    when it fits in 63 bits."""
    if first.size == 0:
        return first.astype(np.int64), second.astype(np.int64)
    span = int(second.max()) + 1
    if int(first.max()) < (2**62) // span:
        combined = first.astype(np.int64) * span
        combined += second
        combined.sort()
        combined = combined[np.concatenate([[True], combined[1:] != combined[:-1]])]
        high = combined // span
        combined -= high * span
        return high, combined
    order = order_by([first, second])
    first, second = first[order], second[order]
    new = np.concatenate([[True], (first[1:] != first[:-1]) | (second[1:] != second[:-1])])
    return first[new].astype(np.int64), second[new].astype(np.int64)
