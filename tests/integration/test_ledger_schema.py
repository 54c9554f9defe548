"""Against real PostgreSQL: schema versions kept for ever, enforced on posting, never rewriting the past."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.money import Money
from services.ledger.adapters.repository import SqlLedgerUnitOfWork, metadata_conditions
from services.ledger.domain.events import TransferPosted, TransferRejected
from services.ledger.domain.model import TransferInstruction
from services.ledger.domain.schema import SchemaStrandsAccounts
from services.ledger.service.ledger import LedgerService, NewAccount
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration

MARKETPLACE = (Path(__file__).parents[2] / "deploy" / "schema" / "marketplace.schema.yaml").read_text()


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    # A schema of its own: the stranded-accounts check sees every account, and other tests open many.
    async with migrated_engine(database_url, "ledger", "ledger_schema_it") as engine:
        yield engine


def t(tid: str, debit: str, credit: str, minor: int, code: str, **metadata: str) -> TransferInstruction:
    return TransferInstruction(tid, debit, credit, Money(minor, "USD"), dict(metadata), code=code)


async def test_the_schema_in_force_is_enforced_and_kept(engine: AsyncEngine) -> None:
    ledger = LedgerService(SqlLedgerUnitOfWork(engine))
    plan = await ledger.apply_schema(MARKETPLACE, applied_by="ops")
    assert plan.applied is not None and plan.applied.version == 1
    await ledger.create_account(NewAccount("bank:operating", "USD", "", False, None, {}))
    await ledger.create_account(NewAccount("merchant:shop", "USD", "", False, None, {"country": "FR"}))
    await ledger.apply_messages(
        [
            (
                "schema-m1",
                [
                    t("s-top", "bank:operating", "wallet:alice", 10_000, "TOPUP"),
                    t("s-buy", "wallet:alice", "merchant:shop", 2_500, "PURCHASE", orderId="o1"),
                    t("s-p2p", "wallet:alice", "wallet:bob", 500, "PURCHASE", orderId="o2"),
                ],
            )
        ]
    )
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT id, transfer_type, schema_version FROM transfers ORDER BY id"))).all()
        assert [tuple(r) for r in stored] == [("s-buy", "PURCHASE", 1), ("s-top", "TOPUP", 1)]  # s-p2p: nothing
        classes = dict((await conn.execute(text("SELECT id, account_class FROM accounts"))).all())
        assert classes == {"bank:operating": "bank", "merchant:shop": "merchant", "wallet:alice": "wallet"}
        with pytest.raises(DBAPIError, match="kept for ever"):
            await conn.execute(text("UPDATE schema_versions SET applied_by = 'someone else'"))
    wallet = await ledger.account("wallet:alice")
    assert (wallet.balance_minor, wallet.allow_overdraft, wallet.account_class) == (7_500, False, "wallet")
    # The batch API answers the same refusal in place; the id stays free.
    (refused,) = await ledger.post_transfers([t("s-p2p", "wallet:alice", "wallet:bob", 500, "PURCHASE", orderId="o")])
    assert isinstance(refused, TransferRejected) and refused.code == "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT"

    # A version whose wallets hold only EUR would strand wallet:alice (USD): refused, listed, nothing changed.
    eur_wallets = MARKETPLACE.replace(
        '    currencies: [USD, EUR]\n    overdraft: forbidden\n    idPattern: "wallet:{userId}"',
        '    currencies: [EUR]\n    overdraft: forbidden\n    idPattern: "wallet:{userId}"',
    )
    assert eur_wallets != MARKETPLACE
    with pytest.raises(SchemaStrandsAccounts) as stranded:
        await ledger.apply_schema(eur_wallets, applied_by="ops")
    assert [v[0] for v in stranded.value.violations] == ["accounts/wallet:alice"]
    assert [a.version for a in await ledger.schema_history()] == [1]


async def test_a_new_version_waits_for_postings_in_flight_and_applies_to_the_next_ones(engine: AsyncEngine) -> None:
    ledger = LedgerService(SqlLedgerUnitOfWork(engine))
    await ledger.apply_schema(MARKETPLACE, applied_by="ops")  # the same document: no new version
    raised = MARKETPLACE.replace("min: 100, max: 1000000}\n      EUR", "min: 5000, max: 1000000}\n      EUR")
    batches = [
        ledger.post_transfers([t(f"c-top-{i}", "bank:operating", "wallet:alice", 200, "TOPUP")]) for i in range(20)
    ]
    results = await asyncio.gather(ledger.apply_schema(raised, applied_by="ops", expected_version=1), *batches)
    plan = results[0]
    assert plan.applied is not None and plan.applied.version == 2
    told = [e for batch in results[1:] for e in batch]
    # Each posting was checked against the version in force when it ran: 200 passes v1, fails v2.
    assert all(isinstance(e, TransferPosted) or e.code == "SCHEMA_AMOUNT_BELOW_MINIMUM" for e in told)
    async with engine.connect() as conn:
        versions = dict(
            (await conn.execute(text("SELECT id, schema_version FROM transfers WHERE id LIKE 'c-top-%'"))).all()
        )
    assert set(versions.values()) <= {1}
    (late,) = await ledger.post_transfers([t("c-late", "bank:operating", "wallet:alice", 200, "TOPUP")])
    assert isinstance(late, TransferRejected) and late.code == "SCHEMA_AMOUNT_BELOW_MINIMUM"


async def test_applying_waits_for_postings_in_flight_and_postings_after_it_read_the_new_version(
    engine: AsyncEngine,
) -> None:
    uow = SqlLedgerUnitOfWork(engine)
    ledger = LedgerService(uow)

    async def version_a_posting_reads() -> int:
        async with uow.transaction() as repo:
            return await repo.schema_version_in_force()

    async with uow.transaction() as posting:  # a posting in flight
        in_force = await posting.schema_version_in_force()
        assert await asyncio.wait_for(version_a_posting_reads(), 5) == in_force  # postings share the lock
        changed = MARKETPLACE + "  REFUND:\n    debit: [merchant]\n    credit: [wallet]\n"
        applying = asyncio.create_task(ledger.apply_schema(changed, applied_by="ops"))
        await asyncio.sleep(0.5)
        assert not applying.done()  # waits for the posting
    plan = await asyncio.wait_for(applying, 10)
    assert plan.applied is not None and plan.applied.version == in_force + 1

    async with uow.transaction() as applier:  # a version being applied
        current = await applier.lock_schema()
        reader = asyncio.create_task(version_a_posting_reads())
        await asyncio.sleep(0.5)
        assert not reader.done()  # held back until the version is in
        await applier.add_schema_version(current + 1, json.dumps({"accountClasses": {}, "transferTypes": {}}), "t")
    assert await asyncio.wait_for(reader, 10) == current + 1


async def test_metadata_filters_are_served_by_the_indexes_a_version_declares(database_url: str) -> None:
    async with migrated_engine(database_url, "ledger", "ledger_metadata_it") as engine:
        ledger = LedgerService(SqlLedgerUnitOfWork(engine))
        assert (await ledger.apply_schema(MARKETPLACE, applied_by="ops")).applied is not None
        async with engine.connect() as conn:
            indexes = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                            " WHERE c.relnamespace = CAST(current_schema() AS regnamespace)"
                            " AND c.relname LIKE '%metadata%'"
                        )
                    )
                ).all()
            )
        assert indexes == {
            "accounts_metadata_country": True,
            "accounts_metadata_iban": True,
            "transfers_metadata_orderId": True,
        }
        await ledger.create_account(NewAccount("bank:operating", "USD", "", False, None, {}))
        for country in ("FR", "DE"):
            await ledger.create_account(NewAccount(f"merchant:{country}", "USD", "", False, None, {"country": country}))
        await ledger.post_transfers([t("m-top", "bank:operating", "wallet:alice", 100_000, "TOPUP")])
        await ledger.post_transfers(
            [t(f"m-buy{n}", "wallet:alice", "merchant:FR", 100, "PURCHASE", orderId=f"o{n % 3}") for n in range(9)]
        )
        seen, cursor = [], ""
        while True:  # pages of 2 through the filter
            _, page, cursor = await ledger.history("merchant:FR", limit=2, cursor=cursor, metadata=["orderId:o1"])
            seen += [e.transfer_id for e in page]
            if not cursor:
                break
        assert seen == ["m-buy7", "m-buy4", "m-buy1"]
        accounts, _ = await ledger.accounts(limit=10, cursor="", metadata=["country:DE"])
        assert [a.id for a in accounts] == ["merchant:DE"]
        # The filters' expressions are the indexes' (a key sent as a parameter would not match them).
        async with engine.connect() as conn:
            await conn.execute(text("SET enable_seqscan = off"))
            plans = []
            for table, alias, filters in (
                ("accounts", "accounts", {"country": "DE"}),
                ("transfers", "t", {"orderId": "o1"}),
            ):
                where, params = metadata_conditions(alias, filters)
                rows = await conn.execute(text(f"EXPLAIN SELECT id FROM {table} {alias} WHERE true{where}"), params)
                plans.append(" ".join(r[0] for r in rows))
        assert "accounts_metadata_country" in plans[0] and "transfers_metadata_orderId" in plans[1], plans
        # An index a failed CONCURRENTLY build left INVALID is built again (at start, or the next apply).
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = CAST(:i AS regclass)"),
                {"i": '"transfers_metadata_orderId"'},
            )
        await ledger.index_metadata()
        async with engine.connect() as conn:
            valid = await conn.execute(
                text("SELECT indisvalid FROM pg_index WHERE indexrelid = CAST(:i AS regclass)"),
                {"i": '"transfers_metadata_orderId"'},
            )
            assert valid.scalar_one() is True
