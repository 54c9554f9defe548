"""Every ledger use case against the in-memory unit of work: no database, milliseconds each."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.kernel.errors import Unavailable, ValidationError
from services.kernel.money import Money
from services.ledger.domain import events
from services.ledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    HoldAlreadyResolved,
    NotReversible,
    TransferExists,
    TransferNotFound,
    TransferRejected,
)
from services.ledger.domain.model import INSUFFICIENT_FUNDS, TransferInstruction, TransferStatus
from services.ledger.service.ledger import LedgerService, NewAccount, NewHold
from services.ledger.service.unit_of_work import ConcurrentWrite
from tests.unit.fakes.ledger import FakeLedgerRepository, FakeLedgerUnitOfWork


def service(*, auto_create: bool = True) -> tuple[LedgerService, FakeLedgerUnitOfWork]:
    uow = FakeLedgerUnitOfWork()
    return LedgerService(uow, "USD", auto_create, clock=lambda: uow.state.clock), uow


def t(tid: str, debit: str, credit: str, minor: int, currency: str = "USD") -> TransferInstruction:
    return TransferInstruction(tid, debit, credit, Money(minor, currency))


def hold(key: str, source: str = "wallet", destination: str = "shop", amount: object = "30.00") -> NewHold:
    return NewHold(key, source, destination, amount, "USD", None, {})


# -- posting -------------------------------------------------------------------------------------


async def test_post_transfers_posts_each_id_once_and_auto_creates_accounts() -> None:
    ledger, uow = service()
    told = await ledger.post_transfers([t("a", "x", "y", 100), t("b", "x", "y", 50), t("a", "x", "y", 100)])
    assert [type(e) for e in told] == [events.TransferPosted] * 3
    assert told[0] is told[2]
    assert uow.balance("x") == -150 and uow.balance("y") == 150
    assert len(uow.state.entries) == 4
    assert [e.transfer_id for e in uow.state.events] == ["a", "b"]


async def test_a_known_id_is_told_its_outcome_again_or_refused_when_reused() -> None:
    ledger, uow = service()
    (first,) = await ledger.post_transfers([t("a", "x", "y", 100)])
    (same,) = await ledger.post_transfers([t("a", "x", "y", 100)])
    (other,) = await ledger.post_transfers([t("a", "x", "y", 999)])
    assert same == first
    assert isinstance(other, events.TransferRejected) and other.code == "LEDGER_TRANSFER_EXISTS"
    assert uow.balance("y") == 100
    assert len(uow.state.events) == 3  # the repeats are told again, through the outbox


async def test_insufficient_funds_is_an_outcome_recorded_once() -> None:
    ledger, uow = service()
    uow.open("alice")
    uow.open("bob")
    (told,) = await ledger.post_transfers([t("a", "alice", "bob", 100)])
    assert isinstance(told, events.TransferRejected) and told.code == INSUFFICIENT_FUNDS
    assert uow.state.transfers["a"].status is TransferStatus.REJECTED
    assert uow.balance("alice") == 0


async def test_without_auto_creation_an_unknown_account_rejects_the_transfer() -> None:
    ledger, uow = service(auto_create=False)
    (told,) = await ledger.post_transfers([t("a", "ghost", "nobody", 100)])
    assert isinstance(told, events.TransferRejected) and told.code == "LEDGER_ACCOUNT_NOT_FOUND"
    assert not uow.state.accounts


async def test_a_message_applied_twice_changes_nothing_the_second_time() -> None:
    ledger, uow = service()
    assert await ledger.apply_messages([("m1", [t("a", "x", "y", 100)]), ("m2", [t("b", "x", "y", 1)])])
    assert not await ledger.apply_messages([("m1", [t("a", "x", "y", 100)]), ("m2", [t("b", "x", "y", 1)])])
    assert uow.balance("y") == 101


class CountingRepository(FakeLedgerRepository):
    """Counts the lookups of transfer ids (the costliest read of a posting batch)."""

    lookups = 0

    async def transfer_records(self, transfer_ids, *, lock=False):  # type: ignore[no-untyped-def]
        CountingRepository.lookups += 1
        return await super().transfer_records(transfer_ids, lock=lock)


async def test_queued_transfers_are_posted_as_new_without_looking_their_ids_up() -> None:
    ledger, uow = service()
    uow.repository_class = CountingRepository
    CountingRepository.lookups = 0
    assert await ledger.apply_messages([("m1", [t("a", "x", "y", 100)]), ("m2", [t("b", "x", "y", 1)])])
    assert CountingRepository.lookups == 0
    assert uow.commits == 1 and uow.balance("y") == 101


async def test_a_stored_transfer_in_a_new_message_is_told_again_and_the_rest_posted() -> None:
    """A resend (a new message id) of a transfer posted before: the insert-as-new refuses the batch, and
    the batch is posted again reading what is stored: the known transfer told its recorded outcome,
    the new one posted, nothing posted twice."""
    ledger, uow = service()
    await ledger.apply_messages([("m1", [t("a", "x", "y", 100)])])
    told_before = len(uow.state.events)
    assert await ledger.apply_messages([("m2", [t("a", "x", "y", 100), t("b", "x", "y", 7)])])
    assert uow.balance("y") == 107
    assert [e.transfer_id for e in uow.state.events[told_before:]] == ["b", "a"]
    assert all(isinstance(e, events.TransferPosted) for e in uow.state.events)
    assert uow.state.messages == {"m1", "m2"}


class CopiesInFlightRepository(FakeLedgerRepository):
    """Refuses the first `refusals` inserts as a unique key would, as if another transaction were
    committing a copy of a transfer each time: not readable before, refused once it commits."""

    refusals = 0

    async def insert_transfers(self, outcomes, at, *, reverses=None, reason=None, schema_version=None):  # type: ignore[no-untyped-def]
        if CopiesInFlightRepository.refusals:
            CopiesInFlightRepository.refusals -= 1
            raise ConcurrentWrite("duplicate key value violates unique constraint")
        await super().insert_transfers(outcomes, at, reverses=reverses, reason=reason, schema_version=schema_version)


async def test_a_batch_meeting_a_copy_committed_meanwhile_is_tried_again_then_left_to_the_fallbacks() -> None:
    ledger, uow = service()
    uow.repository_class = CopiesInFlightRepository
    CopiesInFlightRepository.refusals = 2  # as new, then reading: both refused by copies in flight
    assert await ledger.apply_messages([("m1", [t("a", "x", "y", 100)])])
    assert uow.balance("y") == 100 and uow.state.messages == {"m1"}
    CopiesInFlightRepository.refusals = 3
    with pytest.raises(ConcurrentWrite):
        await ledger.apply_messages([("m2", [t("b", "x", "y", 1)])])
    assert uow.balance("y") == 100 and uow.state.messages == {"m1"}


class PoisonRepository(FakeLedgerRepository):
    """Refuses any transfer whose id starts with 'poison', like a database refusing a row."""

    async def insert_transfers(self, outcomes, at, *, reverses=None, reason=None):  # type: ignore[no-untyped-def]
        if any(o.transfer.transfer_id.startswith("poison") and not hasattr(o, "code") for o in outcomes):
            raise RuntimeError("row refused")
        await super().insert_transfers(outcomes, at, reverses=reverses, reason=reason)


async def test_a_poison_transfer_holds_back_nothing_and_is_given_up_on_its_last_delivery() -> None:
    ledger, uow = service()
    uow.repository_class = PoisonRepository
    batch = [t("good", "x", "y", 100), t("poison-1", "x", "y", 5)]
    assert await ledger.handle_deliveries([("m", batch, False)]) == [False]
    assert uow.state.transfers["good"].status is TransferStatus.POSTED
    assert "poison-1" not in uow.state.transfers
    assert await ledger.handle_deliveries([("m", batch, True)]) == [False]
    given_up = uow.state.transfers["poison-1"]
    assert given_up.status is TransferStatus.REJECTED and given_up.reject_code == "LEDGER_POSTING_FAILED"
    assert uow.balance("y") == 100


# -- accounts ------------------------------------------------------------------------------------


async def test_create_account_is_idempotent_by_definition() -> None:
    ledger, _ = service()
    new = NewAccount("wallet-1", "usd", "liability", False, "10.00", {"owner": "ann"})
    account, created = await ledger.create_account(new)
    assert created and account.currency == "USD" and account.overdraft_limit_minor == 1000
    again, created_again = await ledger.create_account(new)
    assert not created_again and again.id == "wallet-1"
    with pytest.raises(AccountExists):
        await ledger.create_account(NewAccount("wallet-1", "USD", "ASSET", False, None, {}))


@pytest.mark.parametrize(
    ("new", "code"),
    [
        (NewAccount("", "USD", "ASSET", False, None, {}), "MISSING_FIELD"),
        (NewAccount("a b", "USD", "ASSET", False, None, {}), "INVALID_ACCOUNT_ID"),
        (NewAccount("a", "ZZZ", "ASSET", False, None, {}), "UNKNOWN_CURRENCY"),
        (NewAccount("a", "USD", "CASH", False, None, {}), "INVALID_ACCOUNT_TYPE"),
        (NewAccount("a", "USD", "ASSET", False, "-1.00", {}), "INVALID_AMOUNT"),
        (NewAccount("a", "USD", "ASSET", False, "1.001", {}), "AMOUNT_PRECISION"),
        (NewAccount("a", "USD", "ASSET", False, None, {"k": "\x00"}), "INVALID_METADATA"),
    ],
)
async def test_create_account_refuses_bad_input(new: NewAccount, code: str) -> None:
    ledger, uow = service()
    with pytest.raises(ValidationError) as refused:
        await ledger.create_account(new)
    assert refused.value.code == code
    assert not uow.state.accounts


async def test_accounts_are_listed_in_pages_with_a_cursor() -> None:
    ledger, uow = service()
    for name in ("c", "a", "b"):
        uow.open(name)
    page, cursor = await ledger.accounts(limit=2, cursor="")
    assert [a.id for a in page] == ["a", "b"] and cursor
    rest, end = await ledger.accounts(limit=2, cursor=cursor)
    assert [a.id for a in rest] == ["c"] and end == ""
    with pytest.raises(ValidationError):
        await ledger.accounts(limit=2, cursor="not-ours")
    with pytest.raises(ValidationError):
        await ledger.accounts(limit=501, cursor="")
    with pytest.raises(AccountNotFound):
        await ledger.account("nope")


# -- holds ---------------------------------------------------------------------------------------


async def funded(amount: int = 10_000) -> tuple[LedgerService, FakeLedgerUnitOfWork]:
    ledger, uow = service()
    uow.open("wallet")
    uow.open("shop")
    await ledger.post_transfers([t("fund", "bank", "wallet", amount)])
    return ledger, uow


async def test_a_hold_reserves_then_posts_part_and_releases_the_rest() -> None:
    ledger, uow = await funded()
    record = await ledger.create_hold(hold("h1"))
    assert record.status is TransferStatus.PENDING
    assert uow.state.accounts["wallet"].available_minor == 7_000
    posted = await ledger.post_hold("h1", "10.00")
    assert posted.status is TransferStatus.POSTED and posted.posted_amount.minor_units == 1_000
    assert uow.balance("wallet") == 9_000 and uow.state.accounts["wallet"].pending_minor == 0
    assert await ledger.post_hold("h1", "10.00") == posted  # the same request again
    with pytest.raises(HoldAlreadyResolved):
        await ledger.post_hold("h1", "20.00")
    with pytest.raises(HoldAlreadyResolved):
        await ledger.void_hold("h1")
    kinds = [type(e) for e in uow.state.events]
    assert kinds[-3:] == [events.HoldCreated, events.HoldPosted, events.TransferPosted]


async def test_a_hold_beyond_the_available_funds_is_refused() -> None:
    ledger, _ = await funded(1_000)
    with pytest.raises(TransferRejected) as refused:
        await ledger.create_hold(hold("h1"))
    assert refused.value.code == INSUFFICIENT_FUNDS
    with pytest.raises(TransferExists):
        await ledger.create_hold(hold("fund"))  # the key names another transfer


async def test_void_releases_and_expiry_lapses_a_hold() -> None:
    ledger, uow = await funded()
    await ledger.create_hold(hold("h1"))
    voided = await ledger.void_hold("h1")
    assert voided.status is TransferStatus.VOIDED
    assert uow.state.accounts["wallet"].available_minor == 10_000
    with pytest.raises(HoldAlreadyResolved):
        await ledger.post_hold("h1", None)

    due = hold("h2")
    await ledger.create_hold(NewHold(*[*due.__dict__.values()][:5], uow.state.clock + timedelta(minutes=5), {}))
    assert await ledger.expire_due_holds() == 0
    uow.advance(600)
    assert await ledger.expire_due_holds() == 1
    assert (await ledger.hold("h2")).status is TransferStatus.EXPIRED
    with pytest.raises(HoldAlreadyResolved) as refused:
        await ledger.post_hold("h2", None)
    assert refused.value.code == "LEDGER_HOLD_EXPIRED"
    assert uow.state.accounts["wallet"].available_minor == 10_000


async def test_hold_input_is_checked_before_anything_is_stored() -> None:
    ledger, uow = await funded()
    for bad, code in [
        (hold("h1", destination="wallet"), "SAME_ACCOUNT"),
        (hold("h1", amount="0"), "INVALID_AMOUNT"),
        (hold("h1", amount=None), "MISSING_FIELD"),
        (hold("bad key"), "INVALID_IDEMPOTENCY_KEY"),
    ]:
        with pytest.raises(ValidationError) as refused:
            await ledger.create_hold(bad)
        assert refused.value.code == code
    await ledger.create_hold(hold("h1"))
    with pytest.raises(ValidationError) as refused:
        await ledger.post_hold("h1", "30.01")
    assert refused.value.code == "LEDGER_AMOUNT_EXCEEDS_HOLD"
    with pytest.raises(TransferNotFound):
        await ledger.post_hold("fund", None)  # a transfer, not a hold
    assert set(uow.state.transfers) == {"fund", "h1"}


# -- reversals -----------------------------------------------------------------------------------


async def test_a_posted_transfer_is_reversed_once_and_the_reversal_replays() -> None:
    ledger, uow = await funded()
    reversal = await ledger.reverse("fund", "refund-1", "customer refund")
    assert not reversal.replayed and reversal.record.reverses_transfer_id == "fund"
    assert uow.balance("wallet") == 0
    assert uow.state.transfers["fund"].reversed_by == "refund-1"
    again = await ledger.reverse("fund", "refund-1", "customer refund")
    assert again.replayed and again.record.id == "refund-1"
    with pytest.raises(NotReversible):
        await ledger.reverse("fund", "refund-2", "")
    with pytest.raises(NotReversible):
        await ledger.reverse("refund-1", "refund-3", "")  # a reversal is not reversed
    with pytest.raises(TransferExists):
        await ledger.reverse("fund", "fund", "")
    with pytest.raises(TransferNotFound):
        await ledger.reverse("nope", "refund-4", "")
    assert [type(e) for e in uow.state.events][-2:] == [events.TransferPosted, events.TransferReversed]


async def test_a_reversal_that_would_overdraw_is_refused_and_changes_nothing() -> None:
    ledger, uow = await funded()
    await ledger.post_transfers([t("spend", "wallet", "shop", 10_000)])
    await ledger.post_transfers([t("out", "shop", "bank", 10_000)])
    uow.state.accounts["shop"].allow_overdraft = False
    with pytest.raises(TransferRejected):
        await ledger.reverse("spend", "refund-1", "")
    assert "refund-1" not in uow.state.transfers and uow.state.transfers["spend"].reversed_by is None


async def test_reversal_input_is_checked() -> None:
    ledger, _ = await funded()
    with pytest.raises(ValidationError):
        await ledger.reverse("fund", "bad key", "")
    with pytest.raises(ValidationError):
        await ledger.reverse("fund", "r", "x" * 501)


# -- reads ---------------------------------------------------------------------------------------


async def test_balance_now_and_as_of_an_earlier_instant() -> None:
    ledger, uow = await funded(5_000)
    before = uow.state.clock
    uow.advance(60)
    await ledger.post_transfers([t("spend", "wallet", "shop", 1_000)])
    assert (await ledger.balance("wallet")).balance_minor == 4_000
    assert (await ledger.balance("wallet", before)).balance_minor == 5_000
    with pytest.raises(AccountNotFound):
        await ledger.balance("nope")


async def test_history_pages_newest_first_within_a_window() -> None:
    ledger, uow = await funded()
    start = uow.state.clock
    for i in range(5):
        uow.advance(60)
        await ledger.post_transfers([t(f"s{i}", "wallet", "shop", 100)])
    account, page, cursor = await ledger.history("shop", limit=2, cursor="")
    assert [e.transfer_id for e in page] == ["s4", "s3"] and cursor
    assert all(e.signed_minor(account) == 100 for e in page)
    _, rest, _ = await ledger.history("shop", limit=10, cursor=cursor)
    assert [e.transfer_id for e in rest] == ["s2", "s1", "s0"]
    since = (start + timedelta(seconds=90)).isoformat()
    until = (start + timedelta(seconds=250)).isoformat()
    _, window, _ = await ledger.history("shop", limit=10, cursor="", since=since, until=until)
    assert [e.transfer_id for e in window] == ["s3", "s2", "s1"]
    with pytest.raises(ValidationError):
        await ledger.history("shop", limit=10, cursor="", since=until, until=since)
    with pytest.raises(ValidationError):
        await ledger.history("shop", limit=0, cursor="e-not-ours")


class DownRepository(FakeLedgerRepository):
    """A database that cannot be reached: what the SQL adapter raises as Unavailable."""

    attempts = 0

    async def now(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        DownRepository.attempts += 1
        raise Unavailable("the database is unavailable", code="SERVICE_UNAVAILABLE")

    claim_messages = transfer_records = now  # type: ignore[assignment]


async def test_an_outage_leaves_the_messages_for_redelivery_and_gives_up_on_nothing() -> None:
    ledger, uow = service()
    uow.repository_class = DownRepository
    batch = [t("a", "x", "y", 100), t("b", "x", "y", 5)]
    assert await ledger.handle_deliveries([("m1", batch, True), ("m2", batch, True)]) == [False, False]
    assert DownRepository.attempts == 1  # no message-by-message or transfer-by-transfer retry, no give-up
    uow.repository_class = FakeLedgerRepository  # the database is back: the redelivery posts them
    assert await ledger.handle_deliveries([("m1", batch, False)]) == [True]
    assert uow.balance("y") == 105
