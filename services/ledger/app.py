"""Wires the ledger: the gRPC server with its outbox relay, and the SQS posting worker with its health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from opentelemetry.metrics import Counter, Meter
from payrecon.ledger.v1 import ledger_pb2_grpc

from services.kernel.consumer import Message, consume
from services.kernel.db import create_engine
from services.kernel.grpc_server import create_probe_server, create_server, scopes_for
from services.kernel.health import (
    OUTBOX_FLUSH_SECONDS,
    RPC_GRACE_SECONDS,
    all_reachable,
    drain,
    watch_dependencies,
)
from services.kernel.metrics import outbox_backlog_gauge, payrecon_meter, queue_depth_gauge
from services.kernel.outbox import OutboxRelay
from services.kernel.runtime import background, run_periodically
from services.kernel.sqs import SqsClient, decode_body
from services.ledger.adapters.repository import SqlLedgerUnitOfWork
from services.ledger.api.errors import LEDGER_ERRORS, SCOPES, SERVICE_NAME, WORKER_SERVICE_NAME
from services.ledger.api.servicer import LedgerServicer
from services.ledger.codecs import event_batch_bytes, instructions_from_batch
from services.ledger.config import LedgerSettings
from services.ledger.service.ledger import LedgerService

log = logging.getLogger(__name__)
SCHEMA = "ledger"


def postings_counter(meter: Meter) -> Counter:
    """Transfers posted (entries committed), by the worker from the queue and by the batch API alike:
    its rate is the ledger's postings per second."""
    posted = meter.create_counter(
        "payrecon.ledger.transfers.posted",
        description="Transfers posted to the ledger (debit and credit entries committed)",
    )
    posted.add(0)  # served as 0 from the start: rate() needs a series before the first increment
    return posted


RECEIVE_WAIT_SECONDS = 1  # long poll of each receive: also the longest a stopping worker waits for one
SHUTDOWN_GRACE_SECONDS = 8.0  # a poll, then posting what it brought; below the 10 s a supervisor allows


@contextlib.asynccontextmanager
async def running(settings: LedgerSettings, stop: asyncio.Event, address: str | None = None) -> AsyncIterator[int]:
    """The ledger gRPC server and its event relay; yields the bound port."""
    common = settings.common
    engine = create_engine(common.database_url, SCHEMA)
    try:
        async with SqsClient.connect(endpoint_url=common.sqs_endpoint_url, region=common.aws_region) as sqs:
            meter = payrecon_meter()
            ledger = LedgerService(
                SqlLedgerUnitOfWork(engine, on_posted=postings_counter(meter).add),
                settings.default_currency,
                settings.auto_create_accounts,
            )
            servicer = LedgerServicer(ledger)
            server, port, health = await create_server(
                address or settings.address,
                service_names=[SERVICE_NAME],
                register=[lambda s: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s)],
                tokens=common.api_tokens,
                scopes=scopes_for(SERVICE_NAME, SCOPES),
                errors=LEDGER_ERRORS,
            )
            relay = OutboxRelay(
                engine,
                sqs,
                source="ledger",
                queues=list(settings.event_queues),
                pack=event_batch_bytes,
            )

            async def can_serve() -> None:
                # The database, which every call needs. Not the queue: while SQS is down, balances,
                # accounts, holds and postings still work and the events wait in the outbox; taking
                # the ledger out of rotation would only fail those calls too.
                await ledger.ping()

            backlog = outbox_backlog_gauge(meter, "ledger", relay.unpublished)
            await server.start()
            log.info("ledger listening", extra={"fields": {"port": port}})
            async with background(
                relay.run(stop),
                backlog.refresh_until(stop),
                # Indexes a version declared but an interrupted build left missing (see index_metadata).
                ledger.index_metadata(),
                run_periodically(
                    ledger.expire_due_holds, stop, settings.hold_expiry_interval_seconds, what="expiring holds"
                ),
                watch_dependencies(health, [SERVICE_NAME], can_serve, stop),
                # The relay finishes the publish it has in flight rather than leave it half sent.
                grace_seconds=OUTBOX_FLUSH_SECONDS,
            ):
                try:
                    yield port
                finally:
                    stop.set()
                    await drain(server, health, RPC_GRACE_SECONDS)
                    await relay.flush(OUTBOX_FLUSH_SECONDS)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def worker(settings: LedgerSettings, stop: asyncio.Event, address: str | None = None) -> AsyncIterator[int]:
    """Consumes transfers.fifo and posts each message's batch in one database transaction; serves
    its health (WORKER_SERVICE_NAME) on LEDGER_WORKER_ADDRESS. Yields the health port."""
    common = settings.common
    engine = create_engine(common.database_url, SCHEMA, pool_size=settings.worker_receivers + 2)
    try:
        async with SqsClient.connect(endpoint_url=common.sqs_endpoint_url, region=common.aws_region) as sqs:
            meter = payrecon_meter()
            ledger = LedgerService(
                SqlLedgerUnitOfWork(engine, on_posted=postings_counter(meter).add),
                settings.default_currency,
                settings.auto_create_accounts,
            )
            depth = queue_depth_gauge(meter, sqs, [settings.transfers_queue])

            async def post(messages: Sequence[Message]) -> Sequence[Message]:
                deliveries, received = [], []
                for message in messages:
                    attributes = message.get("Attributes", {})
                    message_id = attributes.get("MessageDeduplicationId") or message["MessageId"]
                    try:
                        transfers = instructions_from_batch(decode_body(message))
                    except Exception:
                        log.exception(
                            "undecodable message; it will reach the dead-letter queue",
                            extra={"fields": {"message_id": message_id}},
                        )
                        continue
                    last_delivery = int(attributes.get("ApproximateReceiveCount", 1)) >= common.sqs_max_receives
                    deliveries.append((message_id, transfers, last_delivery))
                    received.append(message)
                if not deliveries:
                    return []
                finished = await ledger.handle_deliveries(deliveries)
                # The others stay undeleted: redelivered, or moved to the dead-letter queue.
                return [m for m, done in zip(received, finished, strict=True) if done]

            async def can_post() -> None:
                # Posting needs the database; receiving and deleting need the queue.
                await all_reachable(ledger.ping(), sqs.attributes(settings.transfers_queue))

            probes, port, health = await create_probe_server(
                address or settings.worker_address, service_names=[WORKER_SERVICE_NAME]
            )
            await probes.start()
            log.info(
                "ledger worker consuming",
                extra={"fields": {"queue": settings.transfers_queue, "health_port": port}},
            )
            try:
                # On the way out each receiver finishes its long poll and posts what it brings (see
                # consume): a receive cancelled mid-poll is not withdrawn from the queue, so the server
                # would still hand it the next messages, invisible for the whole visibility timeout (a
                # worker restart held a backlog back for 60 s that way). Cancelled only past the grace.
                async with background(
                    consume(
                        sqs,
                        settings.transfers_queue,
                        post,
                        stop,
                        receivers=settings.worker_receivers,
                        wait_seconds=RECEIVE_WAIT_SECONDS,
                        visibility_seconds=settings.common.sqs_visibility_seconds,
                    ),
                    watch_dependencies(health, [WORKER_SERVICE_NAME], can_post, stop),
                    depth.refresh_until(stop),
                    grace_seconds=SHUTDOWN_GRACE_SECONDS,
                ):
                    try:
                        yield port
                    finally:
                        stop.set()
                        # NOT_SERVING for the whole drain, not only once the receivers are done.
                        await health.enter_graceful_shutdown()
            finally:
                await drain(probes, health, 0)
    finally:
        await engine.dispose()
