"""The ledger validates its own input, on its own port: the internal batch RPC answers each malformed
transfer with a rejection and a stable code, posts the well-formed ones beside it, and opens no
account and stores no row for what it refused."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc, messages_pb2

from services.devstack.stack import Stack

pytestmark = pytest.mark.e2e


async def test_post_transfers_rejects_malformed_transfers_one_by_one_and_stores_nothing_of_them(stack: Stack) -> None:
    from tests.conftest import INTERNAL_TOKEN

    run = uuid.uuid4().hex[:8]

    def transfer(tid: str, debit: str, credit: str, minor: int = 100, currency: str = "USD", **extra: object):
        return messages_pb2.TransferRequest(
            transfer_id=tid,
            debit_account_id=debit,
            credit_account_id=credit,
            amount=money_pb2.Money(minor_units=minor, currency=currency),
            **extra,  # type: ignore[arg-type]
        )

    bad = [
        (transfer(f"zzz-{run}", f"zzz-a-{run}", f"zzz-b-{run}", currency="ZZZ"), "UNKNOWN_CURRENCY"),
        (transfer(f"lower-{run}", f"lower-a-{run}", f"lower-b-{run}", currency="usd"), "INVALID_CURRENCY"),
        (transfer(f"zero-{run}", f"zero-a-{run}", f"zero-b-{run}", minor=0), "INVALID_AMOUNT"),
        (transfer(f"neg-{run}", f"neg-a-{run}", f"neg-b-{run}", minor=-1), "INVALID_AMOUNT"),
        (transfer(f"same-{run}", f"same-a-{run}", f"same-a-{run}"), "SAME_ACCOUNT"),
        (transfer("", f"noid-a-{run}", f"noid-b-{run}"), "MISSING_FIELD"),
        (transfer("k" * 300 + run, f"long-a-{run}", f"long-b-{run}"), "INVALID_IDEMPOTENCY_KEY"),
        (transfer(f"nul\x00{run}", f"nul-a-{run}", f"nul-b-{run}"), "INVALID_IDEMPOTENCY_KEY"),
        (transfer(f"acct-{run}", f"bad acct {run}", f"acct-b-{run}"), "INVALID_ACCOUNT_ID"),
        (transfer(f"meta-{run}", f"meta-a-{run}", f"meta-b-{run}", metadata={"k": "a\x00b"}), "INVALID_METADATA"),
    ]
    good = transfer(f"good-{run}", f"good-a-{run}", f"good-b-{run}")
    async with grpc.aio.insecure_channel(stack.addresses["ledger"]) as channel:
        response = await ledger_pb2_grpc.LedgerServiceStub(channel).PostTransfers(
            ledger_pb2.PostTransfersRequest(transfers=[t for t, _ in bad] + [good]),
            metadata=(("authorization", f"Bearer {INTERNAL_TOKEN}"),),
            timeout=30,
        )
    outcomes = list(response.outcomes)
    assert [o.WhichOneof("event") for o in outcomes] == ["transfer_rejected"] * len(bad) + ["transfer_posted"]
    assert [o.transfer_rejected.code for o in outcomes[:-1]] == [code for _, code in bad]
    assert all(o.transfer_rejected.message for o in outcomes[:-1])

    conn = await asyncpg.connect(stack.env["PAYRECON_DATABASE_URL"])
    try:
        stored = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM ledger.accounts WHERE id LIKE '%' || $1 || '%') AS accounts,"
            " (SELECT count(*) FROM ledger.transfers WHERE id LIKE '%' || $1 || '%') AS transfers,"
            " (SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE '%' || $1 || '%') AS entries",
            run,
        )
    finally:
        await conn.close()
    # Only the well-formed transfer left rows: its two accounts, itself, its two entries.
    assert (stored["accounts"], stored["transfers"], stored["entries"]) == (2, 1, 2)
