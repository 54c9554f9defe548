"""Scale check of the matching engine (not a test): `python -m tests.bench.matching_scale 1000000`.

Generates N ledger items and a statement mirroring them with realistic noise — 2% of each break kind,
2% of lines without a reference, 5% of ledger items paid out in batches (one statement line for 2-6
items, less a fee; 80% of payouts carry the payout id on both sides, 20% do not) — then times the
engine and prints peak RSS, and how many of the injected breaks it found.

`--without-references` drops every statement reference: a stress case where all of it goes through
amount + date (log-uniform amounts collide often, so candidates and ties abound).

Wall time on a shared machine says little; CPU time of the process is printed next to it.

Two ways in, each measured in its own process so peak RSS is its own:
- columns: `match_columns` on integer columns, as a bulk caller with interned keys would call it;
- objects: `match_items` on StatementItem / LedgerItem objects with string ids and references,
  including the encoding into columns and the Match / Break objects of the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

from services.reconciliation.domain.matching import LedgerItem, StatementItem, match_items
from services.reconciliation.domain.matching_columns import (
    BREAK_KINDS,
    NO_CODE,
    BreakKind,
    ColumnarMatches,
    LedgerColumns,
    StatementColumns,
)
from services.reconciliation.domain.matching_engine import match_columns
from services.reconciliation.domain.matching_rules import MatchingRules

I64 = NDArray[np.int64]
FIRST_DAY = date(2026, 1, 1).toordinal()
DAYS = 30
CURRENCIES = ("USD", "EUR", "GBP", "JPY")
CURRENCY_SHARE = (0.6, 0.25, 0.1, 0.05)
NOISE = 0.02
PAYOUT_SHARE = 0.05
FEE_TOLERANCE = 50
RULES = MatchingRules(fee_tolerance_minor=FEE_TOLERANCE)

# What each statement row is, for scoring the engine's answer.
CLEAN, NO_REFERENCE, AMOUNT, CURRENCY, DATE, COPY, STATEMENT_ONLY, PAYOUT, BLIND_PAYOUT = range(9)


@dataclass
class Scenario:
    statement: StatementColumns
    ledger: LedgerColumns
    truth: I64  # per statement row, one of the kinds above
    source: I64  # per statement row, the ledger row it mirrors (or the original row for COPY, -1)
    dropped: I64  # ledger rows whose statement line was dropped


def generate(n: int, seed: int = 7) -> Scenario:
    rng = np.random.default_rng(seed)
    currency = rng.choice(len(CURRENCIES), size=n, p=CURRENCY_SHARE).astype(np.int64)
    sign = np.where(rng.random(n) < 0.7, 1, -1)
    amount = (sign * np.exp(rng.uniform(np.log(100), np.log(10_000_000), n))).astype(np.int64)
    amount[amount == 0] = 1
    posted = FIRST_DAY + rng.integers(0, DAYS, n)
    end_to_end = np.full(n, NO_CODE, dtype=np.int64)

    # Payouts: 5% of the ledger in groups of 2-6 sharing currency and sign, booked within 3 days.
    role = rng.permutation(n)
    n_payout_items = int(n * PAYOUT_SHARE)
    payout_items = role[:n_payout_items]
    sizes = rng.integers(2, 7, n_payout_items // 2)
    sizes = sizes[np.cumsum(sizes) <= n_payout_items]
    payout_items = payout_items[: int(sizes.sum())]
    payout_of = np.repeat(np.arange(sizes.size), sizes)
    head = np.cumsum(sizes) - sizes
    currency[payout_items] = currency[payout_items[head]][payout_of]
    amount[payout_items] = np.abs(amount[payout_items]) * np.sign(amount[payout_items[head]])[payout_of]
    payout_day = posted[payout_items[head]] + 3
    posted[payout_items] = payout_day[payout_of] - rng.integers(0, 4, payout_items.size)
    blind = rng.random(sizes.size) < 0.2
    payout_code = 3 * n + np.arange(sizes.size)
    end_to_end[payout_items] = np.where(blind[payout_of], NO_CODE, payout_code[payout_of])

    # The rest of the ledger: 2% never reach the statement, the others are mirrored.
    single = role[int(sizes.sum()) :]
    k = int(n * NOISE)
    dropped, mirrored = single[:k], single[k:]
    kinds = np.full(mirrored.size, CLEAN)
    for i, kind in enumerate((NO_REFERENCE, AMOUNT, CURRENCY, DATE)):
        kinds[i * k : (i + 1) * k] = kind
    kinds = rng.permutation(kinds)

    m_currency = currency[mirrored].copy()
    m_amount = amount[mirrored].copy()
    m_day = posted[mirrored] + rng.integers(0, 2, mirrored.size)
    m_reference = mirrored.copy()  # the bank carries the transfer id
    m_reference[kinds == NO_REFERENCE] = NO_CODE
    off = kinds == AMOUNT
    m_amount[off] += np.sign(m_amount[off]) * rng.integers(1, 1000, int(off.sum()))
    off = kinds == CURRENCY
    m_currency[off] = (m_currency[off] + 1) % len(CURRENCIES)
    off = kinds == DATE
    m_day[off] += rng.choice([-1, 1], int(off.sum())) * rng.integers(5, 20, int(off.sum()))

    copies = rng.choice(np.flatnonzero(kinds == CLEAN), k, replace=False)
    only = np.arange(k)
    o_sign = np.where(rng.random(k) < 0.7, 1, -1)
    payout_total = np.zeros(sizes.size, dtype=np.int64)
    np.add.at(payout_total, payout_of, amount[payout_items])
    fee = rng.integers(0, FEE_TOLERANCE + 1, sizes.size)

    parts = {
        "amount": [m_amount, m_amount[copies], (o_sign * rng.integers(100, 10_000_000, k)), payout_total - fee],
        "currency": [m_currency, m_currency[copies], rng.choice(len(CURRENCIES), k), currency[payout_items[head]]],
        "day": [m_day, m_day[copies], FIRST_DAY + rng.integers(0, DAYS, k), payout_day],
        "reference": [m_reference, m_reference[copies], 2 * n + only, np.where(blind, NO_CODE, payout_code)],
        "truth": [kinds, np.full(k, COPY), np.full(k, STATEMENT_ONLY), np.where(blind, BLIND_PAYOUT, PAYOUT)],
        "source": [mirrored, copies, np.full(k, -1), payout_items[head]],
    }
    columns = {name: np.concatenate(p).astype(np.int64) for name, p in parts.items()}
    shuffle = rng.permutation(columns["amount"].size)
    position = np.empty_like(shuffle)
    position[shuffle] = np.arange(shuffle.size)
    columns = {name: c[shuffle] for name, c in columns.items()}
    copy_rows = columns["truth"] == COPY
    columns["source"][copy_rows] = position[columns["source"][copy_rows]]  # copies point at their original row
    size = columns["amount"].size
    statement = StatementColumns(
        amount_minor=columns["amount"],
        currency=columns["currency"],
        value_day=columns["day"],
        booking_day=np.full(size, NO_CODE),
        reference=columns["reference"],
        end_to_end_id=np.full(size, NO_CODE),
        description=np.zeros(size, dtype=np.int64),
    )
    ledger = LedgerColumns(
        amount_minor=amount,
        currency=currency,
        posted_day=posted,
        reference=np.arange(n, dtype=np.int64),
        end_to_end_id=end_to_end,
        transfer_id=np.arange(n, dtype=np.int64),
    )
    return Scenario(statement, ledger, columns["truth"], columns["source"], dropped)


def as_objects(scenario: Scenario) -> tuple[list[StatementItem], list[LedgerItem]]:
    def text(code: int, prefix: str) -> str | None:
        return None if code == NO_CODE else f"{prefix}{code:08x}"

    s, led = scenario.statement, scenario.ledger
    days = {d: date.fromordinal(d) for d in range(FIRST_DAY - 40, FIRST_DAY + DAYS + 40)}
    statement = [
        StatementItem(f"S{i:08d}", a, CURRENCIES[c], days[d], None, text(r, "T"), None, "card settlement")
        for i, (a, c, d, r) in enumerate(
            zip(s.amount_minor.tolist(), s.currency.tolist(), s.value_day.tolist(), s.reference.tolist(), strict=True)
        )
    ]
    ledger = [
        LedgerItem(f"L{i:08d}", f"T{i:08x}", a, CURRENCIES[c], days[d], f"T{i:08x}", text(e, "T"))
        for i, (a, c, d, e) in enumerate(
            zip(
                led.amount_minor.tolist(),
                led.currency.tolist(),
                led.posted_day.tolist(),
                led.end_to_end_id.tolist(),
                strict=True,
            )
        )
    ]
    return statement, ledger


def score(scenario: Scenario, found: ColumnarMatches) -> list[str]:
    """Injected breaks found, and what was reported beyond them."""
    truth = scenario.truth
    by_kind: dict[BreakKind, set[int]] = {}
    for kind_index, row in zip(found.break_kind.tolist(), found.break_statement.tolist(), strict=True):
        by_kind.setdefault(BREAK_KINDS[kind_index], set()).add(row)
    for b in found.breaks:
        rows = b.statement[-1:] if b.kind is BreakKind.DUPLICATE else b.statement
        by_kind.setdefault(b.kind, set()).update(rows)
    by_kind.setdefault(BreakKind.MISSING_IN_LEDGER, set()).update(found.missing_in_ledger.tolist())
    lines = []
    for kind, injected in (
        (BreakKind.AMOUNT_MISMATCH, AMOUNT),
        (BreakKind.CURRENCY_MISMATCH, CURRENCY),
        (BreakKind.DATE_OUT_OF_TOLERANCE, DATE),
        (BreakKind.MISSING_IN_LEDGER, STATEMENT_ONLY),
    ):
        expected = set(np.flatnonzero(truth == injected).tolist())
        reported = by_kind.get(kind, set())
        lines.append(f"{kind}: {len(expected & reported)}/{len(expected)} found, {len(reported - expected)} other")
    copies = np.flatnonzero(truth == COPY)
    pairs = {frozenset((int(c), int(scenario.source[c]))) for c in copies}
    reported_pairs = {frozenset(b.statement) for b in found.breaks if b.kind is BreakKind.DUPLICATE}
    lines.append(f"DUPLICATE: {len(pairs & reported_pairs)}/{len(pairs)} found, {len(reported_pairs - pairs)} other")
    expected_missing = set(scenario.dropped.tolist())
    reported_missing = set(found.missing_in_statement.tolist())
    lines.append(
        f"MISSING_IN_STATEMENT: {len(expected_missing & reported_missing)}/{len(expected_missing)} found, "
        f"{len(reported_missing - expected_missing)} other (members of payouts not found)"
    )
    ambiguous = [b for b in found.breaks if b.kind is BreakKind.AMBIGUOUS]
    lines.append(f"AMBIGUOUS: {len(ambiguous)} cases")
    # A copy matched in place of its original is as right as the original would have been.
    source = scenario.source[found.pair_statement]
    copy = truth[found.pair_statement] == COPY
    source[copy] = scenario.source[source[copy]]
    wrong = int((source != found.pair_ledger).sum())
    lines.append(f"one-to-one matches: {found.pair_statement.size:,} ({wrong} not the injected pair)")
    for label, payout_kind in (("payouts with reference", PAYOUT), ("payouts without reference", BLIND_PAYOUT)):
        payout_rows = set(np.flatnonzero(truth == payout_kind).tolist())
        matched = sum(1 for g in found.groups if g.statement[0] in payout_rows)
        lines.append(f"{label}: {matched}/{len(payout_rows)} matched as groups")
    lines.append(f"diagnostics: {found.diagnostics}")
    return lines


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run(n: int, mode: str, without_references: bool) -> None:
    started = time.perf_counter()
    scenario = generate(n)
    if without_references:
        no_reference = np.full(len(scenario.statement), NO_CODE, dtype=np.int64)
        scenario.statement = dataclasses.replace(scenario.statement, reference=no_reference)
    if mode == "objects":
        statement, ledger = as_objects(scenario)
    generated = time.perf_counter() - started
    before = rss_mb()
    peak_before = peak_rss_mb()
    started = time.perf_counter()
    cpu_started = time.process_time()
    if mode == "objects":
        result = match_items(statement, ledger, RULES)
    else:
        found = match_columns(scenario.statement, scenario.ledger, RULES)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(f"[{mode}] {len(scenario.statement):,} statement lines x {len(scenario.ledger):,} ledger items")
    print(
        f"[{mode}] inputs generated in {generated:.1f} s, RSS with inputs {before:.0f} MB (peak so far {peak_before:.0f} MB)"
    )
    print(f"[{mode}] engine: {elapsed:.2f} s wall, {cpu:.2f} s CPU, peak RSS {peak_rss_mb():.0f} MB")
    if mode == "objects":
        print(f"[{mode}] {len(result.matches):,} matches, {len(result.breaks):,} breaks")
    else:
        for line in score(scenario, found):
            print(f"[{mode}]   {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1_000_000, help="ledger items (the statement mirrors them)")
    parser.add_argument("--mode", choices=("columns", "objects", "both"), default="both")
    parser.add_argument("--without-references", action="store_true", help="no statement line carries a reference")
    args = parser.parse_args()
    if args.mode != "both":
        run(args.n, args.mode, args.without_references)
        return
    extra = ["--without-references"] if args.without_references else []
    for mode in ("columns", "objects"):
        command = [sys.executable, "-m", "tests.bench.matching_scale", str(args.n), "--mode", mode, *extra]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
