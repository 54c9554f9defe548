"""Migration 0004 on data written before it: a run's discrepancies leave its report JSON for rows of
their own, and the cases' stored OPENED events give way to the opening read from the case itself."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text

from services.kernel.db import create_engine
from services.kernel.migrations import migrate
from services.reconciliation.adapters.store import ReconciliationStore

PACKAGE = "services.reconciliation.migrations"


async def test_a_run_and_a_case_stored_before_0004_read_the_same_after(database_url: str) -> None:
    schema = f"recon_migration_{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url, schema)
    try:
        assert await migrate(engine, schema, PACKAGE, until=3) == [1, 2, 3]
        async with engine.begin() as conn:
            run_id, case_id = uuid.uuid4(), uuid.uuid4()
            listed = [
                {
                    "type": "MISSING_IN_LEDGER",
                    "severity": "HIGH",
                    "message": "line 7 has no ledger entry",
                    "transaction_id": "",
                    "amount_minor": 1250,
                    "currency": "EUR",
                    "case_id": str(case_id),
                    "statement_line_ids": ["7"],
                    "ledger_transfer_ids": [],
                },
                {"type": "BALANCE_DRIFT", "severity": "CRITICAL", "message": "drift", "amount_minor": None},
            ]
            report = {"account_id": "acct", "currency": "EUR", "matched": 3, "discrepancies": listed}
            await conn.execute(
                text(
                    "INSERT INTO runs (id, account_id, period_start, period_end, transaction_count, discrepancy_count,"
                    " balanced, report) VALUES (:i, 'acct', '2026-01-01', '2026-02-01', 3, 2, false, CAST(:r AS jsonb))"
                ),
                {"i": run_id, "r": json.dumps(report)},
            )
            await conn.execute(
                text(
                    "INSERT INTO cases (id, account_id, kind, fingerprint, status, severity, message, currency, evidence)"
                    " VALUES (:i, 'acct', 'MISSING_IN_LEDGER', 'f1', 'OPEN', 'HIGH', 'm', 'EUR', '{\"rule\": \"r\"}')"
                ),
                {"i": case_id},
            )
            for action, actor, reason in (("OPENED", "system", "run found it"), ("ACKNOWLEDGED", "ops", "looking")):
                await conn.execute(
                    text("INSERT INTO case_events (case_id, action, actor, reason) VALUES (:i, :a, :w, :r)"),
                    {"i": case_id, "a": action, "w": actor, "r": reason},
                )

        assert 4 in await migrate(engine, schema, PACKAGE)

        store = ReconciliationStore(engine)
        run = await store.run(str(run_id))
        assert run is not None
        assert run.report["matched"] == 3
        assert run.report["discrepancies"][0] == listed[0]
        assert run.report["discrepancies"][1] == {
            "type": "BALANCE_DRIFT",
            "severity": "CRITICAL",
            "message": "drift",
            "transaction_id": "",
            "amount_minor": None,
            "currency": "",
            "case_id": "",
            "statement_line_ids": [],
            "ledger_transfer_ids": [],
        }
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT report FROM runs WHERE id = :i"), {"i": run_id})).scalar_one()
        assert "discrepancies" not in kept  # one place for them, not two
        case = await store.case(str(case_id))
        assert case is not None
        assert case.evidence == {"rule": "r"}
        assert [(e.action, e.actor, e.reason) for e in case.history] == [
            ("OPENED", "system", "run found it"),
            ("ACKNOWLEDGED", "ops", "looking"),
        ]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()
