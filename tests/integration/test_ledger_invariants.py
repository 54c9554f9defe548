"""The ledger's invariants against real PostgreSQL, under random sequences of everything it does:
transfers, holds, posts, voids, expiries, reversals, duplicate ids and redelivered messages in any
order. After every step: Σ debits = Σ credits per currency, every balance = Σ its entries, pending
= Σ open holds, no account past its overdraft limit, each id posted at most once, hash chains
intact (the same audit `payrecon ledger verify` runs)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.devstack.stack import create_database, drop_database
from services.kernel.db import create_engine
from services.kernel.migrations import migrate
from services.kernel.money import Money
from services.ledger.adapters.audit import audit_ledger
from services.ledger.adapters.repository import EVENT_GROUPS, SqlLedgerUnitOfWork
from services.ledger.domain.events import HoldCreated
from services.ledger.domain.model import TransferInstruction
from services.ledger.service.ledger import LedgerService, NewAccount, NewHold

pytestmark = pytest.mark.integration

# id suffix → (type, allow_overdraft, overdraft limit in cents, currency)
ACCOUNTS = {
    "alice": ("LIABILITY", False, 0, "USD"),
    "bob": ("LIABILITY", False, 0, "USD"),
    "carol": ("LIABILITY", False, 500, "USD"),
    "bank": ("ASSET", True, 0, "USD"),
    "equity": ("EQUITY", True, 0, "USD"),
    "euro": ("LIABILITY", False, 0, "EUR"),
}


@pytest.fixture
def ledger_database(server_database_url: str) -> str:
    name = f"payrecon_ledger_{uuid.uuid4().hex[:8]}"
    url = create_database(server_database_url, name)

    async def prepare() -> None:
        engine = create_engine(url, "ledger", pool_size=1)
        try:
            await migrate(engine, "ledger", "services.ledger.migrations")
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    yield url
    drop_database(server_database_url, name)


async def check_invariants(engine) -> None:  # type: ignore[no-untyped-def]
    report = await audit_ledger(engine)
    assert report.ok, str(report.breach)
    async with engine.connect() as conn:
        overdrawn = (
            await conn.execute(
                text(
                    "SELECT id FROM accounts WHERE NOT allow_overdraft AND"
                    " (CASE WHEN type IN ('ASSET', 'EXPENSE') THEN debits_posted - credits_posted - credits_pending"
                    "       ELSE credits_posted - debits_posted - debits_pending END) < -overdraft_limit_minor"
                )
            )
        ).all()
        assert overdrawn == [], overdrawn
        twice = (
            await conn.execute(
                text("SELECT transfer_id FROM entries GROUP BY transfer_id, direction HAVING count(*) > 1")
            )
        ).all()
        assert twice == []


def test_invariants_hold_under_random_operations(ledger_database: str) -> None:
    class LedgerMachine(RuleBasedStateMachine):
        transfers = Bundle("transfers")
        holds = Bundle("holds")
        messages = Bundle("messages")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.engine = create_engine(ledger_database, "ledger", pool_size=4)
            self.ledger = LedgerService(SqlLedgerUnitOfWork(self.engine), auto_create_accounts=False)
            self.run_id = uuid.uuid4().hex[:8]
            self.counter = 0

        def run(self, coroutine):  # type: ignore[no-untyped-def]
            return self.loop.run_until_complete(coroutine)

        def teardown(self) -> None:
            self.run(self.engine.dispose())
            self.loop.close()

        def account(self, name: str) -> str:
            return f"{self.run_id}-{name}"

        def next_id(self, kind: str) -> str:
            self.counter += 1
            return f"{self.run_id}-{kind}-{self.counter}"

        @initialize()
        def open_accounts(self) -> None:
            for name, (kind, overdraft, limit, currency) in ACCOUNTS.items():
                self.run(
                    self.ledger.create_account(
                        NewAccount(self.account(name), currency, kind, overdraft, f"{limit / 100:.2f}", {})
                    )
                )
            # Fund the customers from equity so there is something to move.
            self.run(
                self.ledger.post_transfers(
                    [
                        TransferInstruction(
                            self.next_id("fund"), self.account("equity"), self.account(name), Money(10_000, "USD")
                        )
                        for name in ("alice", "bob", "carol")
                    ]
                )
            )

        @rule(
            target=messages,
            moves=st.lists(
                st.tuples(st.sampled_from(sorted(ACCOUNTS)), st.sampled_from(sorted(ACCOUNTS)), st.integers(1, 6_000)),
                min_size=1,
                max_size=6,
            ),
        )
        def post_a_message(self, moves: list[tuple[str, str, int]]) -> tuple[str, list[TransferInstruction]]:
            batch = [
                TransferInstruction(self.next_id("t"), self.account(a), self.account(b), Money(amount, "USD"))
                for a, b, amount in moves
                if a != b
            ]
            message_id = self.next_id("msg")
            self.run(self.ledger.apply_message(batch, message_id))
            return message_id, batch

        @rule(message=messages)
        def redeliver_a_message(self, message: tuple[str, list[TransferInstruction]]) -> None:
            message_id, batch = message
            self.run(self.ledger.apply_message(batch, message_id))  # same message again: no effect

        @rule(message=messages, data=st.data())
        def resend_transfers_in_a_new_message_out_of_order(
            self, message: tuple[str, list[TransferInstruction]], data: st.DataObject
        ) -> None:
            _, batch = message
            shuffled = data.draw(st.permutations(batch))
            events = self.run(self.ledger.post_transfers(shuffled, message_id=self.next_id("msg")))
            assert not any(isinstance(e, HoldCreated) for e in events)

        @rule(
            target=transfers,
            source=st.sampled_from(["alice", "bob", "carol", "bank"]),
            destination=st.sampled_from(["alice", "bob", "carol", "euro"]),
            amount=st.integers(1, 8_000),
        )
        def post_one_transfer(self, source: str, destination: str, amount: int) -> str:
            transfer_id = self.next_id("t")
            if source != destination:
                self.run(
                    self.ledger.post_transfers(
                        [
                            TransferInstruction(
                                transfer_id, self.account(source), self.account(destination), Money(amount, "USD")
                            )
                        ]
                    )
                )
            return transfer_id

        @rule(
            target=holds,
            source=st.sampled_from(["alice", "bob", "carol"]),
            destination=st.sampled_from(["bank", "equity"]),
            amount=st.integers(1, 9_000),
            expires=st.booleans(),
        )
        def place_a_hold(self, source: str, destination: str, amount: int, expires: bool) -> str:
            key = self.next_id("h")
            expires_at = datetime.now(UTC) + timedelta(milliseconds=300) if expires else None
            try:
                self.run(
                    self.ledger.create_hold(
                        NewHold(
                            key,
                            self.account(source),
                            self.account(destination),
                            f"{amount / 100:.2f}",
                            "USD",
                            expires_at,
                            {},
                        )
                    )
                )
            except Exception as error:  # insufficient funds is a legitimate outcome
                assert getattr(error, "code", "") == "LEDGER_INSUFFICIENT_FUNDS", error
            return key

        @rule(hold=holds, fraction=st.sampled_from([None, 1, 2, 3]))
        def post_a_hold(self, hold: str, fraction: int | None) -> None:
            try:
                record = self.run(self.ledger.hold(hold))
                held = record.instruction.amount.minor_units
                amount = None if fraction is None else f"{max(1, held // fraction) / 100:.2f}"
                self.run(self.ledger.post_hold(hold, amount))
            except Exception as error:
                assert getattr(error, "code", "") in {
                    "LEDGER_HOLD_NOT_FOUND",
                    "LEDGER_HOLD_ALREADY_RESOLVED",
                    "LEDGER_HOLD_EXPIRED",
                }, error

        @rule(hold=holds)
        def void_a_hold(self, hold: str) -> None:
            try:
                self.run(self.ledger.void_hold(hold))
            except Exception as error:
                assert getattr(error, "code", "") in {
                    "LEDGER_HOLD_NOT_FOUND",
                    "LEDGER_HOLD_ALREADY_RESOLVED",
                    "LEDGER_HOLD_EXPIRED",
                }, error

        @rule()
        def expire_due_holds(self) -> None:
            self.run(self.ledger.expire_due_holds())

        @rule(transfer=consumes(transfers))
        def reverse_a_transfer(self, transfer: str) -> None:
            try:
                reversal = self.run(self.ledger.reverse(transfer, self.next_id("rev"), "customer refund"))
                assert reversal.record.reverses_transfer_id == transfer
            except Exception as error:
                assert getattr(error, "code", "") in {
                    "LEDGER_TRANSFER_NOT_FOUND",
                    "LEDGER_NOT_REVERSIBLE",
                    "LEDGER_INSUFFICIENT_FUNDS",
                }, error

        @rule(transfer=transfers)
        def reverse_twice(self, transfer: str) -> None:
            for _ in range(2):
                try:
                    self.run(self.ledger.reverse(transfer, self.next_id("rev"), ""))
                except Exception as error:
                    assert getattr(error, "code", "") in {
                        "LEDGER_TRANSFER_NOT_FOUND",
                        "LEDGER_NOT_REVERSIBLE",
                        "LEDGER_INSUFFICIENT_FUNDS",
                    }, error

        @invariant()
        def the_books_balance(self) -> None:
            self.run(check_invariants(self.engine))

    LedgerMachine.TestCase.settings = settings(
        max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
    )
    LedgerMachine.TestCase().runTest()


def test_verify_names_the_first_broken_record(ledger_database: str) -> None:
    """Tampering with an entry (even with the append-only trigger switched off) is caught."""

    async def scenario() -> None:
        engine = create_engine(ledger_database, "ledger", pool_size=2)
        try:
            ledger = LedgerService(SqlLedgerUnitOfWork(engine))
            run = uuid.uuid4().hex[:8]
            await ledger.post_transfers(
                [TransferInstruction(f"{run}-t{i}", f"{run}-a", f"{run}-b", Money(100 + i, "USD")) for i in range(3)]
            )
            async with engine.begin() as conn:
                with pytest.raises(Exception, match="append-only"):
                    async with conn.begin_nested():
                        await conn.execute(
                            text("UPDATE entries SET amount_minor = 1 WHERE transfer_id = :t"), {"t": f"{run}-t1"}
                        )
            assert (await audit_ledger(engine)).ok
            async with engine.begin() as conn:
                # Back-date one entry: totals, amounts and Σ debits = Σ credits all still agree; only
                # the hash chain can tell.
                await conn.execute(text("ALTER TABLE entries DISABLE TRIGGER entries_append_only"))
                await conn.execute(
                    text(
                        "UPDATE entries SET created_at = created_at - interval '1 day'"
                        " WHERE transfer_id = :t AND direction = 'CREDIT'"
                    ),
                    {"t": f"{run}-t1"},
                )
                await conn.execute(text("ALTER TABLE entries ENABLE TRIGGER entries_append_only"))
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "ledger", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, "PAYRECON_DATABASE_URL": ledger_database},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stderr and "hash does not match" in result.stderr, result.stderr


async def refuse_poison(engine: AsyncEngine) -> None:
    """Makes the database refuse to post or hold any transfer whose id contains 'poison' (recording it
    REJECTED still works): a failure the ledger's rules cannot foresee, as a full disk would be. The
    ledger validates its input itself now, so no well-formed transfer is refused otherwise."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.id LIKE '%poison%' AND NEW.status <> 'REJECTED' THEN"
                " RAISE EXCEPTION 'refused for the test: %', NEW.id; END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE OR REPLACE TRIGGER refuse_poison BEFORE INSERT ON transfers"
                " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        )


def test_a_transfer_that_fails_every_delivery_is_given_up_as_failed_and_spares_its_batch(ledger_database: str) -> None:
    async def scenario() -> None:
        engine = create_engine(ledger_database, "ledger", pool_size=2)
        try:
            await refuse_poison(engine)
            ledger = LedgerService(SqlLedgerUnitOfWork(engine))
            run = uuid.uuid4().hex[:8]
            good = TransferInstruction(f"{run}-good", f"{run}-a", f"{run}-b", Money(500, "USD"))
            poison = TransferInstruction(f"{run}-poison", f"{run}-a", f"{run}-b", Money(700, "USD"))
            batch = [good, poison]
            assert await ledger.handle_delivery(batch, f"{run}-m", last_delivery=False) is False
            assert await ledger.handle_delivery(batch, f"{run}-m", last_delivery=True) is False
            good_record = await ledger.transfer(good.transfer_id)
            poison_record = await ledger.transfer(poison.transfer_id)
            assert good_record.status.value == "POSTED"  # posted once, despite the failing batch-mate
            assert (poison_record.status.value, poison_record.reject_code) == ("REJECTED", "LEDGER_POSTING_FAILED")
            assert (await ledger.balance(f"{run}-b")).balance_minor == 500
            # A redrive from the dead-letter queue now finds both decided: nothing moves again.
            assert await ledger.handle_delivery(batch, f"{run}-m2", last_delivery=False) is True
            assert (await ledger.balance(f"{run}-b")).balance_minor == 500
            async with engine.connect() as conn:
                told = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM outbox WHERE position(CAST(:id AS bytea) in payload) > 0"
                            " AND position('LEDGER_POSTING_FAILED'::bytea in payload) > 0"
                        ),
                        {"id": poison.transfer_id.encode()},
                    )
                ).scalar_one()
            assert told >= 1  # ingest hears FAILED for it
            assert (await audit_ledger(engine)).ok
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_one_receive_is_posted_in_one_transaction_and_a_bad_message_does_not_sink_the_others(
    ledger_database: str,
) -> None:
    async def scenario() -> None:
        engine = create_engine(ledger_database, "ledger", pool_size=2)
        try:
            await refuse_poison(engine)
            ledger = LedgerService(SqlLedgerUnitOfWork(engine))
            run = uuid.uuid4().hex[:8]

            def message(n: int, poison: bool = False) -> tuple[str, list[TransferInstruction], bool]:
                kind = "poison" if poison else "t"
                return (
                    f"{run}-m{n}",
                    [
                        TransferInstruction(f"{run}-m{n}-{kind}{i}", f"{run}-a", f"{run}-b", Money(100, "USD"))
                        for i in range(3)
                    ],
                    False,
                )

            assert await ledger.handle_deliveries([message(1), message(2)]) == [True, True]
            # m2 again (redelivered), m3 fresh, m4 carries a transfer the database refuses.
            assert await ledger.handle_deliveries([message(2), message(3), message(4, poison=True)]) == [
                True,
                True,
                False,
            ]
            assert (await ledger.balance(f"{run}-b")).balance_minor == 9 * 100  # m1, m2, m3 once each
            assert (await audit_ledger(engine)).ok
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_posting_transactions_events_travel_in_one_outbox_row_per_event_group(ledger_database: str) -> None:
    """The SQS cost of the events: one row per group touched, never one per account or transfer."""

    async def scenario() -> None:
        engine = create_engine(ledger_database, "ledger", pool_size=2)
        try:
            ledger = LedgerService(SqlLedgerUnitOfWork(engine))
            run = uuid.uuid4().hex[:8]
            transfers = [
                TransferInstruction(f"{run}-{n}", f"{run}-from-{n}", f"{run}-to-{n}", Money(100, "USD"))
                for n in range(64)
            ]
            assert await ledger.handle_delivery(transfers, f"{run}-m", last_delivery=False) is True
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT message_group FROM outbox"))).scalars().all()
            assert 1 <= len(rows) <= EVENT_GROUPS == 4  # 128 accounts, yet at most 4 rows
            assert len(set(rows)) == len(rows)
        finally:
            await engine.dispose()

    asyncio.run(scenario())
