"""The ledger validates every transfer it is asked to post, whoever sends it: the batch RPC
(PostTransfers) answers each bad transfer with a rejection and stores nothing; the queue worker tells
ingest the rejection (FAILED with the code) and stores nothing else. No account is ever opened for a
transfer the ledger refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.kernel.money import Money
from services.ledger.domain import events
from services.ledger.domain.model import TransferInstruction, TransferStatus
from services.ledger.service.ledger import LedgerService
from tests.unit.fakes.ledger import FakeLedgerUnitOfWork

GOOD = TransferInstruction("good-1", "payer", "payee", Money(100, "USD"))

BAD = [
    ("unknown currency", replace(GOOD, amount=Money(100, "ZZZ")), "UNKNOWN_CURRENCY"),
    ("lower-case currency", replace(GOOD, amount=Money(100, "usd")), "INVALID_CURRENCY"),
    ("zero amount", replace(GOOD, amount=Money(0, "USD")), "INVALID_AMOUNT"),
    ("negative amount", replace(GOOD, amount=Money(-5, "USD")), "INVALID_AMOUNT"),
    ("beyond int64", replace(GOOD, amount=Money(2**63, "USD")), "AMOUNT_OUT_OF_RANGE"),
    ("same accounts", replace(GOOD, credit_account_id="payer"), "SAME_ACCOUNT"),
    ("empty id", replace(GOOD, transfer_id=""), "MISSING_FIELD"),
    ("oversized id", replace(GOOD, transfer_id="k" * 256), "INVALID_IDEMPOTENCY_KEY"),
    ("id with a slash", replace(GOOD, transfer_id="a/b"), "INVALID_IDEMPOTENCY_KEY"),
    ("id with NUL", replace(GOOD, transfer_id="a\x00b"), "INVALID_IDEMPOTENCY_KEY"),
    ("empty account", replace(GOOD, debit_account_id=""), "MISSING_FIELD"),
    ("oversized account", replace(GOOD, credit_account_id="a" * 129), "INVALID_ACCOUNT_ID"),
    ("account with a space", replace(GOOD, debit_account_id="pay er"), "INVALID_ACCOUNT_ID"),
    ("metadata control character", replace(GOOD, metadata={"note": "a\x00b"}), "INVALID_METADATA"),
    ("metadata too many entries", replace(GOOD, metadata={f"k{i}": "v" for i in range(33)}), "INVALID_METADATA"),
    ("metadata value too long", replace(GOOD, metadata={"note": "v" * 513}), "INVALID_METADATA"),
]


def stored_nothing(uow: FakeLedgerUnitOfWork) -> bool:
    return not (uow.state.accounts or uow.state.transfers or uow.state.entries)


@pytest.mark.parametrize(("case", "bad", "code"), BAD, ids=[c[0] for c in BAD])
async def test_the_batch_rpc_rejects_a_bad_transfer_and_stores_nothing(
    case: str, bad: TransferInstruction, code: str
) -> None:
    uow = FakeLedgerUnitOfWork()
    (told,) = await LedgerService(uow).post_transfers([bad])
    assert isinstance(told, events.TransferRejected) and told.code == code, told
    assert told.message
    assert stored_nothing(uow) and not uow.state.events


async def test_bad_transfers_hold_back_nothing_and_each_answers_in_its_place() -> None:
    uow = FakeLedgerUnitOfWork()
    zzz = replace(GOOD, transfer_id="zzz-1", amount=Money(5, "ZZZ"))
    # The same id twice: once malformed (not stored, so it cannot claim the id), once well-formed.
    usd_lower = replace(GOOD, amount=Money(100, "usd"))
    told = await LedgerService(uow).post_transfers([zzz, usd_lower, GOOD])
    assert [type(e).__name__ for e in told] == ["TransferRejected", "TransferRejected", "TransferPosted"]
    assert [getattr(e, "code", "") for e in told] == ["UNKNOWN_CURRENCY", "INVALID_CURRENCY", ""]
    assert set(uow.state.accounts) == {"payer", "payee"} and set(uow.state.transfers) == {"good-1"}


@pytest.mark.parametrize(("case", "bad", "code"), BAD, ids=[c[0] for c in BAD])
async def test_the_worker_tells_the_rejection_and_opens_no_account(
    case: str, bad: TransferInstruction, code: str
) -> None:
    uow = FakeLedgerUnitOfWork()
    ledger = LedgerService(uow)
    good = replace(GOOD, transfer_id="good-2", debit_account_id="other-payer", credit_account_id="other-payee")
    assert await ledger.handle_deliveries([("m1", [bad, good], False)]) == [True]
    assert set(uow.state.accounts) == {"other-payer", "other-payee"}
    assert set(uow.state.transfers) == {"good-2"} and uow.state.transfers["good-2"].status is TransferStatus.POSTED
    rejections = [e for e in uow.state.events if isinstance(e, events.TransferRejected)]
    if bad.transfer_id != GOOD.transfer_id:
        assert rejections == []  # no request can be waiting on an id nobody accepts: nothing to tell
    else:
        # Told through the outbox, so ingest marks the request FAILED with the code.
        assert [(e.transfer_id, e.code) for e in rejections] == [(bad.transfer_id, code)]
        assert rejections[0].transfer.metadata == {}  # refused metadata is not carried along
    # Redelivered: the message was applied, nothing changes.
    assert await ledger.handle_deliveries([("m1", [bad, good], True)]) == [True]
    assert set(uow.state.transfers) == {"good-2"}


async def test_a_hold_through_the_batch_rpc_is_validated_too() -> None:
    uow = FakeLedgerUnitOfWork()
    (told,) = await LedgerService(uow).post_transfers([replace(GOOD, pending=True, amount=Money(1, "zzz"))])
    assert isinstance(told, events.TransferRejected) and told.code == "INVALID_CURRENCY"
    assert stored_nothing(uow)
