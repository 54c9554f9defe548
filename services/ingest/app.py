"""Wires the ingest service: gRPC server, outbox relay and ledger-outcome consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import redis.asyncio as redis
from opentelemetry.metrics import Meter
from payrecon.ingest.v1 import ingest_pb2_grpc

from services.ingest.adapters.cache import RedisIdempotencyCache
from services.ingest.adapters.ledger_client import LedgerSchemaChecker
from services.ingest.adapters.store import IngestStore
from services.ingest.api.errors import INGEST_ERRORS, PUBLIC_METHODS, SCOPES, SERVICE_NAME
from services.ingest.api.servicer import IngestServicer
from services.ingest.codecs import outcomes_from_event_batch, transfer_batch_bytes
from services.ingest.config import IngestSettings
from services.ingest.service.group_commit import GroupCommit
from services.ingest.service.operations import OperationsService
from services.ingest.service.redrive import RedriveService
from services.ingest.service.schema_gate import SchemaGate
from services.ingest.service.transactions import TransactionService
from services.kernel.consumer import LONG_POLL_SECONDS, Message, consume
from services.kernel.db import create_engine
from services.kernel.grpc_server import create_server, scopes_for
from services.kernel.health import OUTBOX_FLUSH_SECONDS, RPC_GRACE_SECONDS, drain, watch_dependencies
from services.kernel.leadership import run_while_leader
from services.kernel.metrics import (
    BackgroundGauge,
    Reading,
    outbox_backlog_gauge,
    payrecon_meter,
    queue_depth_gauge,
)
from services.kernel.outbox import OutboxRelay
from services.kernel.runtime import background, run_periodically
from services.kernel.sqs import SqsClient, decode_body
from services.kernel.telemetry import batch_span, trace_context_of

log = logging.getLogger(__name__)
SCHEMA = "ingest"


def oldest_processing_gauge(meter: Meter, age_seconds: Callable[[], Awaitable[float]]) -> BackgroundGauge:
    """`payrecon.ingest.oldest.processing.age`: how long the oldest request still PROCESSING has
    waited since its 202. SQS tells no message age for FIFO queues; this is the age that matters to
    a caller polling its status (outbox, queue, worker and the outcome's way back together)."""

    async def read() -> Reading:
        return [(await age_seconds(), {})]

    return BackgroundGauge(
        meter,
        "payrecon.ingest.oldest.processing.age",
        read,
        unit="s",
        description="Age of the oldest request accepted (202) whose outcome ingest has not learnt yet",
    )


@contextlib.asynccontextmanager
async def running(settings: IngestSettings, stop: asyncio.Event, address: str | None = None) -> AsyncIterator[int]:
    """Starts everything; yields the bound gRPC port; stops it all on exit."""
    common = settings.common
    engine = create_engine(common.database_url, SCHEMA)
    redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    ledger = LedgerSchemaChecker(settings.ledger_address, settings.ledger_token)
    try:
        async with SqsClient.connect(endpoint_url=common.sqs_endpoint_url, region=common.aws_region) as sqs:
            store = IngestStore(engine)
            cache = RedisIdempotencyCache(
                redis_client, prefix=settings.cache_prefix, ttl_seconds=settings.idempotency_ttl_seconds
            )
            schema_gate = SchemaGate(
                ledger,
                timeout_seconds=settings.schema_check_timeout_ms / 1000,
                refresh_seconds=settings.schema_refresh_ms / 1000,
            )
            commits = GroupCommit(
                store,
                cache,
                window_seconds=settings.group_commit_window_ms / 1000,
                max_rows=settings.group_commit_max_rows,
                max_writes=settings.group_commit_max_writes,
                # One span per write, in the first caller's trace, linked to the others'.
                around_write=lambda requests: batch_span(
                    "ingest group commit", (trace_context_of(r.context) for r in requests)
                ),
                schema_gate=schema_gate,
            )
            transactions = TransactionService(
                store,
                cache,
                settings.idempotency_ttl_seconds,
                settings.default_currency,
                common.message_groups,
                commits,
            )
            operations = OperationsService(store, cache, sqs, settings.transfers_queue, settings.redrive_after_seconds)

            redrive = RedriveService(
                store, settings.redrive_after_seconds, settings.redrive_batch, common.message_groups
            )
            servicer = IngestServicer(transactions, operations, settings.public_base_path)
            server, port, health = await create_server(
                address or settings.address,
                service_names=[SERVICE_NAME],
                register=[lambda s: ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, s)],
                tokens=common.api_tokens,
                scopes=scopes_for(SERVICE_NAME, SCOPES),
                errors=INGEST_ERRORS,
                public_methods=[f"/{SERVICE_NAME}/{method}" for method in PUBLIC_METHODS],
            )
            # Up to 500 transfers per message (about 40 KB): under load the ledger worker then posts
            # thousands per transaction (it takes up to 10 messages per receive).
            relay = OutboxRelay(
                engine,
                sqs,
                source="ingest",
                queues=[settings.transfers_queue],
                pack=transfer_batch_bytes,
                rows_per_message=500,
            )

            meter = payrecon_meter()
            gauges = [
                # The queue this service feeds and the one it consumes.
                queue_depth_gauge(meter, sqs, [settings.transfers_queue, settings.events_queue]),
                outbox_backlog_gauge(meter, "ingest", relay.unpublished),
                oldest_processing_gauge(meter, store.oldest_processing_age_seconds),
            ]

            async def can_serve() -> bool:
                return (await operations.readiness()).ready  # the database and the queue

            async def record(messages: Sequence[Message]) -> Sequence[Message]:
                outcomes = [o for m in messages for o in outcomes_from_event_batch(decode_body(m))]
                await transactions.record_outcomes(outcomes)
                return messages

            await server.start()
            log.info("ingest listening", extra={"fields": {"port": port}})

            async def relay_and_record(resign: asyncio.Event) -> None:
                await asyncio.gather(
                    relay.run(resign),
                    # One receiver lingering 0.1 s after a partial batch: fewer, fuller receives and
                    # deletes (the queue's own CPU) for at most 0.1 s more before the batch is applied.
                    consume(
                        sqs,
                        settings.events_queue,
                        record,
                        resign,
                        receivers=1,
                        linger_seconds=0.1,
                        visibility_seconds=common.sqs_visibility_seconds,
                    ),
                )

            async with background(
                # The outbox relay and the outcome consumer run in one ingest process at a time (the
                # leader; another takes over within a second of its end). Each relay polls on its own,
                # so N of them cut the outbox into N times as many (smaller) SQS messages, and N
                # consumers split each batch of outcomes into N smaller receives and deletes. Several
                # would still be correct: message groups are claimed by advisory locks (see
                # OutboxRelay), and recording an outcome is idempotent.
                run_while_leader(engine, "ingest-outbox-relay", relay_and_record, stop),
                run_periodically(
                    transactions.purge_expired,
                    stop,
                    settings.purge_interval_seconds,
                    what="purging expired idempotency keys",
                ),
                run_periodically(
                    schema_gate.refresh,
                    stop,
                    schema_gate.refresh_seconds,
                    what="learning the ledger's schema version in force",
                ),
                run_periodically(
                    redrive.redrive_stuck,
                    stop,
                    redrive.interval_seconds,
                    what="re-publishing requests stuck in PROCESSING",
                ),
                watch_dependencies(health, [SERVICE_NAME], can_serve, stop),
                *(gauge.refresh_until(stop) for gauge in gauges),
                # The events consumer finishes the receive it has in flight (see consume).
                grace_seconds=LONG_POLL_SECONDS + 1,
            ):
                try:
                    yield port
                finally:
                    stop.set()
                    await drain(server, health, RPC_GRACE_SECONDS)
                    # What the drained calls committed goes out now rather than with the next relay.
                    await relay.flush(OUTBOX_FLUSH_SECONDS)
    finally:
        await ledger.close()
        await redis_client.aclose()
        await engine.dispose()
