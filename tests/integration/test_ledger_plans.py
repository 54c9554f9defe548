"""Against real PostgreSQL: posting's lookup of known transfers stays a key probe per id, whatever
the planner's cost estimates say.

A posting batch asks which of its (thousands of) transfer ids are stored already. Asked as a plain
join on the ids, the planner was free to hash the whole transfers table instead, and did, whenever
its estimates made that look cheaper (a young table with stale statistics, as in `make bench`):
every batch then read every transfer ever posted.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ledger.adapters.repository import SqlLedgerRepository
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration

STORED = 100_000
ASKED = 5_000


def stored_id(n: int) -> str:
    return "big-" + hashlib.md5(str(n).encode()).hexdigest()


@pytest.fixture(scope="module")
async def large_ledger(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "ledger", "ledger_large") as engine:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount_minor, currency, status)"
                    " SELECT 'big-' || md5(g::text), 'big-a', 'big-b', 1, 'USD', 'POSTED'"
                    " FROM generate_series(1, :n) g"
                ),
                {"n": STORED},
            )
        async with engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("ANALYZE transfers"))
        yield engine


async def scans(conn: AsyncConnection, table: str) -> tuple[int, int]:
    """(sequential scans, index scans) of `table` in this transaction so far."""
    row = (
        await conn.execute(
            text(
                "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables"
                " WHERE schemaname = current_schema() AND relname = :t"
            ),
            {"t": table},
        )
    ).one()
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("lock", [False, True])
async def test_known_transfers_are_looked_up_by_key_even_where_reading_the_table_looks_cheaper(
    large_ledger: AsyncEngine, lock: bool
) -> None:
    stored = [stored_id(17), stored_id(54_321)]
    asked = [f"new-{i}" for i in range(ASKED)] + stored
    async with large_ledger.begin() as conn:
        # Random reads priced far above sequential ones: the estimates under which the planner
        # preferred hashing the table to probing its key.
        await conn.execute(text("SET LOCAL random_page_cost = 1000"))
        before = await scans(conn, "transfers")
        known = await SqlLedgerRepository(conn).transfer_records(asked, lock=lock)
        seq, idx = (after - then for after, then in zip(await scans(conn, "transfers"), before, strict=True))
    assert sorted(known) == sorted(stored)
    assert seq == 0, f"the lookup read the whole table of {STORED:,} transfers"
    assert idx >= len(stored)
