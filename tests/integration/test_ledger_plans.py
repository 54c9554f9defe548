"""Against real PostgreSQL: posting's reads and writes by key stay a key probe per id, whatever the
planner's cost estimates say.

A posting batch asks which of its (thousands of) transfer ids are stored already, locks its accounts
and writes their totals back. Asked as a plain join on the ids, the planner was free to hash the whole
table instead, and did whenever its estimates made that look cheaper (a connection's first five
executions, which are planned for the values given; a young table with stale statistics, as in `make
bench`): every batch then read every transfer ever posted, or every account.
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
ACCOUNTS = 100_000


def stored_id(n: int, prefix: str = "big-") -> str:
    return prefix + hashlib.md5(str(n).encode()).hexdigest()


# Random reads priced far above sequential ones: the estimates under which the planner prefers
# hashing a table to probing its key.
PREFER_READING_THE_TABLE = "SET LOCAL random_page_cost = 1000"


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
            await conn.execute(
                text(
                    "INSERT INTO accounts (id, currency, type, allow_overdraft)"
                    " SELECT 'acct-' || md5(g::text), 'USD', 'ASSET', true FROM generate_series(1, :n) g"
                ),
                {"n": ACCOUNTS},
            )
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("ANALYZE transfers"))
            await autocommit.execute(text("ANALYZE accounts"))
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
        await conn.execute(text(PREFER_READING_THE_TABLE))
        before = await scans(conn, "transfers")
        known = await SqlLedgerRepository(conn).transfer_records(asked, lock=lock)
        seq, idx = (after - then for after, then in zip(await scans(conn, "transfers"), before, strict=True))
    assert sorted(known) == sorted(stored)
    assert seq == 0, f"the lookup read the whole table of {STORED:,} transfers"
    assert idx >= len(stored)


async def test_a_batchs_accounts_are_read_locked_and_written_back_by_key(large_ledger: AsyncEngine) -> None:
    named = {stored_id(n, "acct-") for n in range(1, ASKED + 1)}
    async with large_ledger.begin() as conn:
        await conn.execute(text(PREFER_READING_THE_TABLE))
        repo = SqlLedgerRepository(conn)
        before = await scans(conn, "accounts")
        seen = await repo.accounts_by_id(named | {"acct-none"})
        locked = await repo.lock_accounts(named | {"acct-none"})
        for account in locked.values():
            account.debits_posted += 7
        await repo.save_accounts(await repo.now())
        seq, idx = (after - then for after, then in zip(await scans(conn, "accounts"), before, strict=True))
        written = (
            await conn.execute(
                text("SELECT count(*) FROM accounts WHERE debits_posted = 7 AND id = ANY(:ids)"), {"ids": sorted(named)}
            )
        ).scalar_one()
    assert set(seen) == set(locked) == named
    assert written == len(named)
    assert seq == 0, f"a read or write of the batch's accounts read the whole table of {ACCOUNTS:,}"
    assert idx >= len(named)
