"""Against real PostgreSQL: a reconcile matched on columns (large windows) stores the same matches, the
same cases and the same report as one matched on objects, and keeps the case lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reconciliation.adapters.store import ReconciliationStore, _coded_query, _Text
from services.reconciliation.domain.cases import CaseState, CaseStatus
from services.reconciliation.domain.model import Window
from services.reconciliation.service.ports import REPORT_LISTS_AT_MOST, CaseFilter
from services.reconciliation.service.reconcile import ReconciliationService, StoredReport
from tests.bench.reconcile_scale import END, START, ProjectionLedger, seed
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration

ON_OBJECTS, ON_COLUMNS = 10**9, 0


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "reconciliation") as engine:
        yield engine


def service(engine: AsyncEngine, columnar_from_lines: int) -> ReconciliationService:
    store = ReconciliationStore(engine)
    return ReconciliationService(store, ProjectionLedger(engine), columnar_from_lines=columnar_from_lines)


async def add_awkward_rows(engine: AsyncEngine, account: str) -> None:
    """What the generator does not make: a reference in other case and spacing, a booking date, an
    end-to-end id, amounts beyond the engine's range on both sides; texts that are not plain ASCII,
    whose stripping and case-folding the server leaves to Python (a no-break space, a Kelvin sign that
    folds to k, an ß that folds to ss, a tab at the end of a description); and rows stored out of id order (an
    update writes a new row version at the end of the table), since columns are read unsorted."""
    async with engine.begin() as conn:
        for table in ("statement_lines", "ledger_entries"):
            await conn.execute(
                text(f"UPDATE {table} SET reference = reference WHERE account_id = :a AND amount_minor % 3 = 0"),
                {"a": account},
            )
        statement, import_id = (
            await conn.execute(
                text("SELECT id, import_id FROM statements WHERE account_id = :a ORDER BY id LIMIT 1"), {"a": account}
            )
        ).one()
        day = date(2026, 1, 10)
        rows = [
            (f" {account}:T00000003 ".upper(), None, 12345, date(2026, 1, 11)),
            (None, f"{account}:E2E-X", 777, None),
            (f"{account}:HUGE", None, 10**16, None),
            (f"{account}:T00000005", None, -(10**16), None),
            (f"\u00a0{account}:T00000007\u2003", None, 4242, None),
            (f"{account}:\u212aELVIN", None, 888, None),
            (f"{account}:STRASSE", None, 999, None),
        ]
        for n, (reference, e2e, amount, booked) in enumerate(rows):
            await conn.execute(
                text(
                    "INSERT INTO statement_lines (import_id, statement_id, account_id, line_no, amount_minor, currency,"
                    " booking_date, value_date, reference, end_to_end_id, description)"
                    " VALUES (:i, :s, :a, :n, :m, 'EUR', :b, :d, :r, :e, :x)"
                ),
                {"i": import_id, "s": statement, "a": account, "n": 10_000 + n, "m": amount, "b": booked, "d": day}
                | {"r": reference, "e": e2e, "x": "odd one" if n % 2 else "Zahlung für Miete\t"},
            )
        for entry_id, transfer, amount, e2e in (
            (10**7 + 1, f"{account}:E2E-X-t", 777, f"{account}:e2e-x"),
            (10**7 + 3, f"{account}:BIG", 9 * 10**17, None),
            (10**7 + 5, f"{account}:K-t", 888, f"{account}:kelvin"),
            (10**7 + 7, f"{account}:\u00dfe-t", 999, f"{account}:stra\u00dfe "),
        ):
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transfer_id, account_id, direction, amount_minor, currency, entry_id,"
                    " posted_at, reference, end_to_end_id) VALUES (:t, :a, 'DEBIT', :m, 'EUR', :e, :p, NULL, :x)"
                ),
                {"t": transfer, "a": account, "m": amount, "e": entry_id, "p": datetime(2026, 1, 10, 9, tzinfo=UTC)}
                | {"x": e2e},
            )
        # Currencies that differ only in their first letter (EUR, MUR: once one code on columns), and a
        # posting time with microseconds (the evidence's postedAt keeps them, as isoformat() does).
        await conn.execute(
            text(
                "INSERT INTO statement_lines (import_id, statement_id, account_id, line_no, amount_minor, currency,"
                " value_date, reference) VALUES (:i, :s, :a, 20000, 4321, 'MUR', :d, :r)"
            ),
            {"i": import_id, "s": statement, "a": account, "d": day, "r": f"{account}:PAID-MUR"},
        )
        await conn.execute(
            text(
                "INSERT INTO ledger_entries (transfer_id, account_id, direction, amount_minor, currency, entry_id,"
                " posted_at, reference) VALUES (:t, :a, 'DEBIT', 4321, 'EUR', :e, :p, :r)"
            ),
            {"t": f"{account}:MUR-t", "a": account, "e": 10**7 + 9, "r": f"{account}:PAID-MUR"}
            | {"p": datetime(2026, 1, 10, 9, 30, 1, 123456, tzinfo=UTC)},
        )


async def snapshot(engine: AsyncEngine, account: str, stored: StoredReport) -> dict[str, Any]:
    # Matches as the store gives them back (one per row or, for a large run, pairs in columns).
    matches = [
        dataclasses.astuple(m)
        for batch in [b async for b in ReconciliationStore(engine).run_matches(stored.run_id)]
        for m in batch
    ]
    store = ReconciliationStore(engine)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id::text, fingerprint, kind, status, severity, message, amount_minor, currency,"
                    " window_start, window_end FROM cases WHERE account_id = :a ORDER BY fingerprint"
                ),
                {"a": account},
            )
        ).all()
    # Evidence as a reader gets it (records named by id are rendered then).
    read = {c.id: c for c in await store.cases(CaseFilter(account_id=account), None, len(rows) + 1)}
    cases = [(*row[:7], json.dumps(read[case_id].evidence, sort_keys=True), *row[7:]) for case_id, *row in rows]
    # The stored report is the answer's, its discrepancies a row each.
    kept = await store.run(stored.run_id)
    assert kept is not None
    assert json.loads(json.dumps(kept.report, default=str)) == json.loads(json.dumps(stored.rendered, default=str))
    assert stored.rendered["discrepancies"]
    report = {k: v for k, v in stored.rendered.items() if k not in ("report_id", "case_ids")}
    # Every discrepancy the run stored (an answer lists the first REPORT_LISTS_AT_MOST), as exported.
    listed = [dataclasses.astuple(c)[1:] for batch in [b async for b in store.run_cases(stored.run_id)] for c in batch]
    assert len(listed) == stored.rendered["discrepancy_count"] >= len(stored.rendered["discrepancies"])
    assert stored.rendered["discrepancies_truncated"] == (len(listed) > REPORT_LISTS_AT_MOST)
    report["discrepancies"] = [json.dumps(d, sort_keys=True, default=str) for d in listed]
    return {
        "matches": sorted(json.dumps(m, sort_keys=True, default=str) for m in matches),
        "cases": [tuple(c) for c in cases],
        "report": report,
    }


async def forget_run(engine: AsyncEngine, account: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM case_events WHERE case_id IN (SELECT id FROM cases WHERE account_id = :a)"),
            {"a": account},
        )
        await conn.execute(
            text("DELETE FROM run_discrepancies WHERE run_id IN (SELECT id FROM runs WHERE account_id = :a)"),
            {"a": account},
        )
        for table in ("cases", "matches", "match_pairs", "runs"):
            await conn.execute(text(f"DELETE FROM {table} WHERE account_id = :a"), {"a": account})


# 20,000 lines: enough breaks (a few thousand) that the evidence the store renders, the cases and the
# report are compared at volume, not only on the awkward rows.
@pytest.mark.parametrize("size", [3000, 20_000])
async def test_columns_and_objects_store_the_same_matches_cases_and_report(
    engine: AsyncEngine, database_url: str, size: int
) -> None:
    account = f"cols-vs-objects-{size}"
    injected = await seed(database_url, size, seed=11, account_id=account)
    await add_awkward_rows(engine, account)
    on_objects = await service(engine, ON_OBJECTS).reconcile_account(account, START, END)
    objects = await snapshot(engine, account, on_objects)
    await forget_run(engine, account)
    on_columns = await service(engine, ON_COLUMNS).reconcile_account(account, START, END)
    columns = await snapshot(engine, account, on_columns)
    if size > 10_000:  # thousands of breaks: the answer lists the first ones, the run stores them all
        assert on_columns.rendered["discrepancies_truncated"]
        assert len(on_columns.rendered["discrepancies"]) == len(on_columns.rendered["case_ids"]) == REPORT_LISTS_AT_MOST

    assert columns["report"] == objects["report"]
    assert columns["matches"] == objects["matches"]
    assert columns["cases"] == objects["cases"]
    # Not vacuous: every kind of break the generator injects is there, and most lines matched.
    kinds = {json.loads(d)[0] for d in objects["report"]["discrepancies"]}
    assert set(injected) <= kinds, (injected, kinds)
    assert objects["report"]["matched"] > size * 0.8
    assert {json.loads(m)[0] for m in objects["matches"]} >= {"ONE_TO_ONE", "ONE_TO_MANY"}
    evidence = [json.loads(c[7]) for c in objects["cases"] if c[1] == "MISSING_IN_LEDGER"]
    assert any(e["statementLines"][0]["amount"] == "100000000000000.00" for e in evidence)
    mismatched = [json.loads(c[7]) for c in objects["cases"] if c[1] == "CURRENCY_MISMATCH"]
    assert any(
        e["statementLines"][0]["currency"] == "MUR"
        and e["ledgerEntries"][0]["postedAt"] == "2026-01-10T09:30:01.123456+00:00"
        for e in mismatched
    )


async def test_a_columnar_rerun_keeps_cases_and_resolves_what_late_data_explains(
    engine: AsyncEngine, database_url: str
) -> None:
    account = "cols-lifecycle"
    await seed(database_url, 1500, seed=5, account_id=account)
    run = service(engine, ON_COLUMNS)
    first = await run.reconcile_account(account, START, END)
    store = ReconciliationStore(engine)
    rows = await store.cases(CaseFilter(account_id=account, status=CaseStatus.OPEN), None, 10**6)
    assert len(rows) == len(set(first.rendered["case_ids"])) > 0
    missing = next(r for r in rows if r.kind == "MISSING_IN_LEDGER")
    line = missing.evidence["statementLines"][0]
    acknowledged = next(r for r in rows if r.id != missing.id)
    await store.transition_case(acknowledged.id, CaseStatus.ACKNOWLEDGED, "ACKNOWLEDGED", "ops", "looking")

    # The ledger catches up: a transfer (both sides) explaining the line the bank booked.
    amount = int(line["amount"].replace(".", ""))
    ours, theirs = ("DEBIT", "CREDIT") if amount > 0 else ("CREDIT", "DEBIT")
    async with engine.begin() as conn:
        for side, entry_account, entry_id in ((ours, account, 10**8), (theirs, "bench-customers", 10**8 + 1)):
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transfer_id, account_id, direction, amount_minor, currency, entry_id,"
                    " posted_at, reference) VALUES (:t, :a, :d, :m, 'EUR', :e, :p, :r)"
                ),
                {
                    "t": f"{account}:late",
                    "a": entry_account,
                    "d": side,
                    "m": abs(amount),
                    "e": entry_id,
                    "p": datetime.fromisoformat(line["valueDate"]).replace(hour=8, tzinfo=UTC),
                    "r": line["reference"],
                },
            )
    second = await run.reconcile_account(account, START, END)
    async with engine.connect() as conn:
        status = dict(
            (await conn.execute(text("SELECT id::text, status FROM cases WHERE account_id = :a"), {"a": account})).all()
        )
    resolved = await store.case(missing.id)
    assert resolved is not None
    events = [(e.action, e.actor) for e in resolved.history]
    assert status[missing.id] == "RESOLVED" and events == [
        ("OPENED", "system"),
        ("RESOLVED", "system"),
    ]
    assert status[acknowledged.id] == "ACKNOWLEDGED"  # found again: left as the person set it, not reopened
    assert set(status) == {r.id for r in rows}  # nothing opened twice, nothing new
    assert missing.id not in second.rendered["case_ids"]


async def test_codes_stored_with_the_rows_equal_the_codes_computed_on_read(
    engine: AsyncEngine, database_url: str
) -> None:
    # Matching reads the codes stored by migration 0005 where the rules' normalisation is theirs: they
    # must be what coding the texts on read gives (awkward texts included: spaces, case, non-ASCII).
    account = "stored-codes"
    await seed(database_url, 200, seed=3, account_id=account)
    await add_awkward_rows(engine, account)
    store = ReconciliationStore(engine)
    for table, key, texts in (
        ("statement_lines", "id", (("reference", "reference"), ("end_to_end_id", "end_to_end"))),
        ("ledger_entries", "entry_id", (("reference", "reference"), ("end_to_end_id", "end_to_end"))),
    ):
        for column, stored in texts + (
            (("description", "description"),) if table == "statement_lines" else (("transfer_id", "transfer"),)
        ):
            fold = column != "description"
            read, computed = [
                await store._int8_copy(
                    _coded_query(
                        f"{key}::bigint",
                        1,
                        [_Text(column, fold, stored, fold if use else not fold)],
                        table + " WHERE account_id = $1",
                    ),
                    (account,),
                    3,
                )
                for use in (True, False)
            ]
            order_read, order_computed = np.argsort(read[0]), np.argsort(computed[0])
            assert read[0].size > 0
            for r, c in zip(read, computed, strict=True):
                assert r[order_read].tolist() == c[order_computed].tolist(), (table, column)


async def test_runs_of_one_account_at_once_open_each_case_once(engine: AsyncEngine, database_url: str) -> None:
    # New cases are written by COPY, without ON CONFLICT: a run whose view of the account's cases is out
    # of date (another run wrote some meanwhile) must plan again, not fail or open a case twice.
    account = "concurrent-runs"
    await seed(database_url, 1500, seed=9, account_id=account)

    class StaleOnce(ReconciliationStore):
        stale = True

        async def cases_of(self, account_id: str, window: Window) -> tuple[dict[str, CaseState], list[str]]:
            if self.stale:  # as read just before another run committed its cases
                self.stale = False
                return {}, []
            return await super().cases_of(account_id, window)

    first = await service(engine, ON_COLUMNS).reconcile_account(account, START, END)
    stale = ReconciliationService(StaleOnce(engine), ProjectionLedger(engine), columnar_from_lines=ON_COLUMNS)
    second = await stale.reconcile_account(account, START, END)
    assert second.rendered["case_ids"] == first.rendered["case_ids"]  # planned again: the same cases
    together = await asyncio.gather(*(service(engine, ON_COLUMNS).reconcile_account(account, START, END) for _ in "ab"))
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                text("SELECT count(*), count(DISTINCT fingerprint) FROM cases WHERE account_id = :a"), {"a": account}
            )
        ).one()
    assert counts[0] == counts[1] == len(first.rendered["case_ids"]) > 0
    assert all(r.rendered["case_ids"] == first.rendered["case_ids"] for r in together)
