"""Order per message group with two ingest replicas, so two outbox relays share one outbox: a
no-overdraft wallet funded and then spent thousands of times is never refused, because no debit
overtakes the credit that funds it."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from payrecon.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from services.devstack.stack import Stack
from services.ingest.domain.model import message_group_for
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH

pytestmark = pytest.mark.e2e
TOKEN = (("authorization", "Bearer demo-token-for-testing"),)
WALLETS = 16
PAIRS_PER_WALLET = 125  # 16 x 125 = 2,000 credit/debit pairs, 4,000 requests


@pytest.fixture(scope="module")
def two_relay_stack(two_ingest_stack: Stack) -> Stack:
    """The e2e package's stack with two ingest processes (tests/e2e/conftest.py)."""
    return two_ingest_stack


def funder_in_group_of(wallet: str, run: str, groups: int) -> str:
    """A funding account whose transfers travel in the wallet's message group.

    Order is kept per message group (the debited account's); a credit from an account of another
    group is not ordered against the wallet's own debits, so the funder is chosen to share it.
    """
    target = message_group_for(wallet, groups)
    return next(
        name
        for n in itertools.count()
        if message_group_for(name := f"order-funder-{run}-{n}", groups) == target and name != wallet
    )


def test_a_no_overdraft_wallet_funded_then_spent_through_two_relays_is_never_refused(
    two_relay_stack: Stack,
) -> None:
    stack = two_relay_stack
    run = uuid.uuid4().hex[:8]
    groups = int(stack.env.get("PAYRECON_MESSAGE_GROUPS", "16"))
    wallets = [f"order-wallet-{run}-{i:02d}" for i in range(WALLETS)]
    funders = {w: funder_in_group_of(w, run, groups) for w in wallets}
    shop = f"order-shop-{run}"
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as client:
        for wallet in wallets:
            created = client.post(
                "/api/v1/accounts",
                json={"id": wallet, "currency": "USD", "type": "LIABILITY", "allowOverdraft": False},
            )
            assert created.status_code == 201, created.text

    replicas = [stack.addresses["ingest"], stack.addresses["ingest-2"]]

    async def submit_all() -> None:
        channels = [grpc.aio.insecure_channel(address) for address in replicas]
        stubs = [ingest_pb2_grpc.IngestServiceStub(channel) for channel in channels]
        turn = itertools.count()

        async def submit(key: str, source: str, destination: str) -> None:
            # Alternating replicas, as a load balancer would: the order is the outbox's, not a process's.
            accepted = await stubs[next(turn) % len(stubs)].SubmitTransaction(
                ingest_pb2.SubmitTransactionRequest(
                    idempotency_key=key,
                    transaction=ingest_pb2.TransactionInput(
                        source_account_id=source,
                        destination_account_id=destination,
                        amount=struct_pb2.Value(string_value="1.00"),
                    ),
                ),
                metadata=TOKEN,
                timeout=30,
            )
            assert accepted.status == "ACCEPTED"

        async def fund_then_spend(wallet: str) -> None:
            # Each request is submitted once the previous one is accepted (durable): that is the order.
            for n in range(PAIRS_PER_WALLET):
                await submit(f"order-{run}-{wallet[-2:]}-{n:04d}-credit", funders[wallet], wallet)
                await submit(f"order-{run}-{wallet[-2:]}-{n:04d}-debit", wallet, shop)

        try:
            await asyncio.gather(*(fund_then_spend(w) for w in wallets))
        finally:
            for channel in channels:
                await channel.close()

    started = time.monotonic()
    asyncio.run(submit_all())
    submitted = time.monotonic() - started

    total = WALLETS * PAIRS_PER_WALLET * 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts = {
            r["status"]: r["n"]
            for r in fetch(
                stack,
                "SELECT status, count(*) AS n FROM ingest.requests WHERE idempotency_key LIKE $1 GROUP BY status",
                f"order-{run}-%",
            )
        }
        if counts.get("PROCESSING", 0) == 0:
            break
        time.sleep(0.5)
    refused = fetch(
        stack,
        "SELECT error_code, count(*) AS n FROM ingest.requests"
        " WHERE idempotency_key LIKE $1 AND status = 'FAILED' GROUP BY error_code",
        f"order-{run}-%",
    )
    assert {r["error_code"]: r["n"] for r in refused} == {}, f"refused after {submitted:.0f}s of submitting"
    assert counts == {"COMPLETED": total}, counts

    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as client:
        for wallet in wallets:
            assert client.get(f"/api/v1/accounts/{wallet}/balance").json()["balance"] == "0.00"
        assert client.get(f"/api/v1/accounts/{shop}/balance").json()["balance"] == f"{total // 2}.00"
