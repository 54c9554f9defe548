"""Ordering, de-duplicating and numbering integer keys at a million rows.

On the 2-core machine, for 3M random int64 values: np.sort takes 0.16 s (SIMD), np.argsort 1.3 s,
np.lexsort of two keys 3.7 s, np.unique 14 s. So keys are packed, whenever they fit in 63 bits, into
one int64 per row — each key offset by its minimum, then the row number in the low bits — and sorted
with np.sort, which gives the order (low bits) and the runs of equal keys (high bits) at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]
PACKED_BITS = 63


def _packed(keys: Sequence[I64]) -> tuple[I64, int] | None:
    """The rows' keys and row numbers as one sorted int64 each, and how many low bits hold the row;
    None when they do not fit."""
    size = keys[0].size
    row_bits = max(size - 1, 1).bit_length()
    spans = []
    for key in keys:
        low, high = (int(key.min()), int(key.max())) if size else (0, 0)
        spans.append((low, high - low + 1))
    total = 1
    for _, span in spans:
        total *= span
    if total.bit_length() + row_bits > PACKED_BITS:
        return None
    packed = np.zeros(size, dtype=np.int64)
    for key, (low, span) in zip(keys, spans, strict=True):
        packed *= span
        packed += key - low
    packed <<= row_bits
    packed |= np.arange(size, dtype=np.int64)
    packed.sort()
    return packed, row_bits


def order_by(keys: Sequence[I64]) -> I64:
    """The stable order sorting rows by keys[0], then keys[1], ..."""
    found = _packed(keys)
    if found is not None:
        packed, row_bits = found
        return packed & ((1 << row_bits) - 1)
    order = np.argsort(keys[-1], kind="stable")
    for key in reversed(keys[:-1]):
        order = order[np.argsort(key[order], kind="stable")]
    return order.astype(np.int64)


def starts_of_runs(sorted_keys: Sequence[I64]) -> Bools:
    """For rows already in key order: True where a row's keys differ from the previous row's."""
    size = sorted_keys[0].size
    new = np.zeros(size, dtype=np.bool_)
    if size:
        new[0] = True
    for key in sorted_keys:
        new[1:] |= key[1:] != key[:-1]
    return new


def factorize(keys: Sequence[I64]) -> tuple[I64, I64]:
    """Numbers the distinct key tuples 0.. in key order. Returns each row's number, and for each
    number the first row (in row order) holding it."""
    found = _packed(keys)
    if found is not None:
        packed, row_bits = found
        order = packed & ((1 << row_bits) - 1)
        high = packed >> row_bits
        new = starts_of_runs([high])
    else:
        order = order_by(keys)
        new = starts_of_runs([key[order] for key in keys])
    codes = np.empty(order.size, dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes, order[new]


def distinct(values: I64) -> I64:
    """The distinct values, sorted."""
    ordered = np.sort(values)
    return ordered[starts_of_runs([ordered])].astype(np.int64)
