"""The ledger's SQS worker against real PostgreSQL and a real SQS server: what it does when it stops,
and what its health says."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import messages_pb2

from services.devstack.processes import free_port
from services.kernel.config import Env
from services.kernel.sqs import OutgoingMessage, SqsClient
from services.ledger.api.errors import WORKER_SERVICE_NAME
from services.ledger.app import worker
from services.ledger.config import LedgerSettings
from services.provisioning import create_queues, migrate_all

pytestmark = pytest.mark.integration
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


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
    # What must never happen: a poll abandoned mid-way took the message, so it is neither posted nor
    # receivable (invisible for the visibility timeout). On a loaded machine the send can land after
    # the last poll ended; then the message simply waits in the queue for the next worker.
    if left:
        assert (applied, status, len(left)) == (0, None, 1)
    else:
        assert (applied, status) == (1, "POSTED")  # posted and deleted, not left in flight


async def worker_health(port: int) -> AsyncIterator[int]:
    """The statuses the worker's health reports, as a Watch on its service name streams them."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=WORKER_SERVICE_NAME)
        async for update in health_pb2_grpc.HealthStub(channel).Watch(request, timeout=30):
            yield int(update.status)


@pytest.mark.parametrize("missing", ["database", "queue"])
async def test_the_worker_is_not_serving_while_its_database_or_queue_cannot_be_reached(
    database_url: str, sqs_endpoint: str, missing: str
) -> None:
    settings = await worker_settings(database_url, sqs_endpoint, uuid.uuid4().hex[:8])
    nowhere = f"127.0.0.1:{free_port()}"
    common = settings.common
    if missing == "database":
        common = dataclasses.replace(common, database_url=f"postgresql://postgres@{nowhere}/postgres")
    else:
        common = dataclasses.replace(common, sqs_endpoint_url=f"http://{nowhere}")
    stop = asyncio.Event()
    async with worker(dataclasses.replace(settings, common=common), stop, address="127.0.0.1:0") as port:
        statuses = worker_health(port)
        seen = [await anext(statuses)]
        if seen[-1] == SERVING:  # the status it starts with, unless its first probe came first
            seen.append(await anext(statuses))
        assert seen[-1] == NOT_SERVING
        await statuses.aclose()


async def until_a_session_waits_for_a_lock(conn: asyncpg.Connection, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.05)):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing waited for a lock within {seconds}s")


async def test_the_worker_says_not_serving_from_the_start_of_its_drain_and_posts_the_batch_in_hand(
    database_url: str, sqs_endpoint: str
) -> None:
    """The batch in hand is held up by a lock the test keeps on the ledger's transfers: the worker,
    told to stop meanwhile, already answers NOT_SERVING while it waits, then posts the batch."""
    run = uuid.uuid4().hex[:8]
    settings = await worker_settings(database_url, sqs_endpoint, run)
    batch = messages_pb2.TransferBatch(
        transfers=[
            messages_pb2.TransferRequest(
                transfer_id=f"wk-{run}-held",
                debit_account_id=f"wk-{run}-a",
                credit_account_id=f"wk-{run}-b",
                amount=money_pb2.Money(minor_units=700, currency="USD"),
            )
        ]
    )
    locker = await asyncpg.connect(database_url)
    stop = asyncio.Event()
    running = worker(settings, stop, address="127.0.0.1:0")
    port = await running.__aenter__()
    stopping: asyncio.Task[bool | None] | None = None
    try:
        statuses = worker_health(port)
        assert await anext(statuses) == SERVING  # its database and queue are there
        locked = locker.transaction()
        await locked.start()
        await locker.execute("LOCK TABLE ledger.transfers IN ACCESS EXCLUSIVE MODE")
        async with SqsClient.connect(endpoint_url=sqs_endpoint, region="us-east-1") as sqs:
            message = OutgoingMessage(batch.SerializeToString(), "g-0000", f"wk-{run}-held-m", {})
            await sqs.send_batch(settings.transfers_queue, [message])
        await until_a_session_waits_for_a_lock(locker)  # the worker's posting of that batch

        stopping = asyncio.create_task(running.__aexit__(None, None, None))
        assert await anext(statuses) == NOT_SERVING
        assert not stopping.done()  # still draining: its batch is waiting for the lock
        await locked.rollback()
        await statuses.aclose()
        await stopping
    finally:
        if stopping is None:
            stop.set()
            await running.__aexit__(None, None, None)
        await locker.close()

    conn = await asyncpg.connect(database_url)
    try:
        status = await conn.fetchval("SELECT status FROM ledger.transfers WHERE id = $1", f"wk-{run}-held")
    finally:
        await conn.close()
    assert status == "POSTED"
