"""The same system as an internal gRPC client: through Envoy's port and straight to a service."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from google.protobuf import struct_pb2
from payrecon.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc

from services.devstack.stack import Stack
from services.kernel.grpc_errors import machine_code_of

pytestmark = pytest.mark.e2e
TOKEN = (("authorization", "Bearer demo-token-for-testing"),)


async def test_submit_and_read_over_grpc_through_envoy(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.options.http_port}") as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        accepted = await ingest.SubmitTransaction(
            ingest_pb2.SubmitTransactionRequest(
                idempotency_key=f"grpc-{run}",
                transaction=ingest_pb2.TransactionInput(
                    source_account_id=f"g-src-{run}",
                    destination_account_id=f"g-dst-{run}",
                    amount=struct_pb2.Value(string_value="12.34"),
                    currency="EUR",
                ),
            ),
            metadata=TOKEN,
        )
        assert accepted.status == "ACCEPTED"
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = await ingest.GetTransactionStatus(
                ingest_pb2.GetTransactionStatusRequest(idempotency_key=f"grpc-{run}"), metadata=TOKEN
            )
            if status.status != "PROCESSING":
                break
            await asyncio.sleep(0.1)
        assert status is not None and status.status == "COMPLETED"
        assert status.result.amount_minor == 1234 and status.result.currency == "EUR"
        balance = await ledger.GetBalance(ledger_pb2.GetBalanceRequest(account_id=f"g-dst-{run}"), metadata=TOKEN)
        assert (balance.balance_minor, balance.currency, balance.balance) == (1234, "EUR", "12.34")


async def test_grpc_errors_carry_the_machine_code(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.addresses["ledger"]) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await ledger.GetBalance(ledger_pb2.GetBalanceRequest(account_id="no-such-account"), metadata=TOKEN)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert machine_code_of(missing.value) == "LEDGER_ACCOUNT_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await ledger.GetBalance(ledger_pb2.GetBalanceRequest(account_id="x"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_internal_client_holds_posts_and_batches_over_grpc(stack: Stack) -> None:
    """A payments service talking to the ledger directly: open accounts, hold and post, post a batch."""
    from payrecon.common.v1 import money_pb2
    from payrecon.ledger.v1 import messages_pb2

    run = uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(stack.addresses["ledger"]) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        for account_id, kind, overdraft in ((f"cash-{run}", "ASSET", True), (f"wallet-{run}", "LIABILITY", False)):
            await ledger.CreateAccount(
                ledger_pb2.CreateAccountRequest(id=account_id, currency="GBP", type=kind, allow_overdraft=overdraft),
                metadata=TOKEN,
            )
        batch = await ledger.PostTransfers(
            ledger_pb2.PostTransfersRequest(
                transfers=[
                    messages_pb2.TransferRequest(
                        transfer_id=f"topup-{run}-{i}",
                        debit_account_id=f"cash-{run}",
                        credit_account_id=f"wallet-{run}",
                        amount=money_pb2.Money(minor_units=1000, currency="GBP"),
                    )
                    for i in range(3)
                ]
            ),
            metadata=TOKEN,
        )
        assert [o.WhichOneof("event") for o in batch.outcomes] == ["transfer_posted"] * 3
        overdraw = await ledger.PostTransfers(
            ledger_pb2.PostTransfersRequest(
                transfers=[
                    messages_pb2.TransferRequest(
                        transfer_id=f"spend-{run}",
                        debit_account_id=f"wallet-{run}",
                        credit_account_id=f"cash-{run}",
                        amount=money_pb2.Money(minor_units=5000, currency="GBP"),
                    )
                ]
            ),
            metadata=TOKEN,
        )
        assert overdraw.outcomes[0].transfer_rejected.code == "LEDGER_INSUFFICIENT_FUNDS"

        hold = await ledger.CreateHold(
            ledger_pb2.CreateHoldRequest(
                idempotency_key=f"h-{run}",
                source_account_id=f"wallet-{run}",
                destination_account_id=f"cash-{run}",
                amount=struct_pb2.Value(number_value=25.5),
                currency="GBP",
            ),
            metadata=TOKEN,
        )
        assert (hold.status, hold.amount_minor) == ("PENDING", 2550)
        posted = await ledger.PostHold(ledger_pb2.PostHoldRequest(hold_id=f"h-{run}"), metadata=TOKEN)
        assert (posted.status, posted.posted_amount_minor) == ("POSTED", 2550)
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await ledger.VoidHold(ledger_pb2.VoidHoldRequest(hold_id=f"h-{run}"), metadata=TOKEN)
        assert late.value.code() == grpc.StatusCode.ABORTED
        assert machine_code_of(late.value) == "LEDGER_HOLD_ALREADY_RESOLVED"
        wallet = await ledger.GetAccount(ledger_pb2.GetAccountRequest(account_id=f"wallet-{run}"), metadata=TOKEN)
        assert (wallet.balance_minor, wallet.available_minor) == (3000 - 2550, 3000 - 2550)
