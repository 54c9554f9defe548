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
from services.kernel.errors import machine_code_of

pytestmark = pytest.mark.e2e
TOKEN = (("authorization", "Bearer demo-token-for-testing"),)


async def test_submit_and_read_over_grpc_through_envoy(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.options.http_port}") as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        accepted = await ingest.SubmitTransaction(ingest_pb2.SubmitTransactionRequest(
            idempotency_key=f"grpc-{run}",
            transaction=ingest_pb2.TransactionInput(source_account_id=f"g-src-{run}",
                                                    destination_account_id=f"g-dst-{run}",
                                                    amount=struct_pb2.Value(string_value="12.34"), currency="EUR"),
        ), metadata=TOKEN)
        assert accepted.status == "ACCEPTED"
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = await ingest.GetTransactionStatus(
                ingest_pb2.GetTransactionStatusRequest(idempotency_key=f"grpc-{run}"), metadata=TOKEN)
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
