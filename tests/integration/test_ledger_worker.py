"""The ledger's SQS worker against real PostgreSQL and a real SQS server: what it does when it stops."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import messages_pb2

from services.kernel.config import Env
from services.kernel.sqs import OutgoingMessage, SqsClient
from services.ledger.app import worker
from services.ledger.config import LedgerSettings
from services.provisioning import create_queues, migrate_all

pytestmark = pytest.mark.integration


async def worker_settings(database_url: str, sqs_endpoint: str, run: str) -> LedgerSettings:
    """Settings of a worker on queues of its own, its schema migrated."""
    env = {
        "PAYRECON_ENV": "development",
        "PAYRECON_DATABASE_URL": database_url,
        "PAYRECON_SQS_ENDPOINT_URL": sqs_endpoint,
        "PAYRECON_TRANSFERS_QUEUE": f"wk-{run}.fifo",
        "PAYRECON_INGEST_EVENTS_QUEUE": f"wk-{run}-ingest.fifo",
        "PAYRECON_RECON_EVENTS_QUEUE": f"wk-{run}-recon.fifo",
    }
    await migrate_all(env)
    await create_queues(env)
    return LedgerSettings.from_env(Env(env))


async def test_a_stopping_worker_posts_what_its_last_long_polls_bring(database_url: str, sqs_endpoint: str) -> None:
    """A receive abandoned mid-poll still takes messages on the server, which then stay invisible for
    the visibility timeout (60 s): a restarted worker found a backlog held back that long. Stopping,
    the worker lets its polls finish and posts what they bring."""
    run = uuid.uuid4().hex[:8]
    settings = await worker_settings(database_url, sqs_endpoint, run)
    batch = messages_pb2.TransferBatch(
        transfers=[
            messages_pb2.TransferRequest(
                transfer_id=f"wk-{run}-1",
                debit_account_id=f"wk-{run}-a",
                credit_account_id=f"wk-{run}-b",
                amount=money_pb2.Money(minor_units=250, currency="USD"),
            )
        ]
    )
    message = OutgoingMessage(batch.SerializeToString(), "g-0000", f"wk-{run}-m", {})
    async with SqsClient.connect(endpoint_url=sqs_endpoint, region="us-east-1") as sqs:

        async def send_while_stopping() -> None:
            await asyncio.sleep(0.05)
            await sqs.send_batch(settings.transfers_queue, [message])

        stop = asyncio.Event()
        async with worker(settings, stop):
            await asyncio.sleep(1.5)  # every receiver is now in a long poll of the empty queue
            sending = asyncio.create_task(send_while_stopping())
        await sending
        left = await sqs.receive(settings.transfers_queue, wait_seconds=1)

    conn = await asyncpg.connect(database_url)
    try:
        applied = await conn.fetchval("SELECT count(*) FROM ledger.processed_messages WHERE id = $1", f"wk-{run}-m")
        status = await conn.fetchval("SELECT status FROM ledger.transfers WHERE id = $1", f"wk-{run}-1")
    finally:
        await conn.close()
    assert (applied, status) == (1, "POSTED")
    assert left == []  # posted and deleted, not left in flight
