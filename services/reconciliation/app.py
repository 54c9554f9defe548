"""Wires reconciliation: gRPC server plus the ledger-event projection consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC

from opentelemetry.metrics import Meter
from payrecon.ledger.v1 import messages_pb2
from payrecon.reconciliation.v1 import reconciliation_pb2_grpc

from services.kernel.consumer import LONG_POLL_SECONDS, Message, consume
from services.kernel.db import create_engine
from services.kernel.grpc_server import create_server, scopes_for
from services.kernel.health import RPC_GRACE_SECONDS, drain, watch_dependencies
from services.kernel.metrics import BackgroundGauge, Reading, payrecon_meter, queue_depth_gauge
from services.kernel.runtime import background, run_periodically
from services.kernel.sqs import SqsClient, decode_body
from services.reconciliation.adapters.ingest_client import IngestClient
from services.reconciliation.adapters.ledger_client import LedgerClient
from services.reconciliation.adapters.statement_parser import FileStatementParser
from services.reconciliation.adapters.store import OPEN_CASE_AGE_BANDS, ReconciliationStore
from services.reconciliation.api.errors import RECONCILIATION_ERRORS, SCOPES, SERVICE_NAME
from services.reconciliation.api.servicer import ReconciliationServicer
from services.reconciliation.config import ReconciliationSettings
from services.reconciliation.domain.cases import SEVERITY
from services.reconciliation.service.reconcile import ReconciliationService

log = logging.getLogger(__name__)
SCHEMA = "reconciliation"


def open_discrepancies_gauge(
    meter: Meter, counts: Callable[[], Awaitable[Sequence[tuple[str, str, int]]]]
) -> BackgroundGauge:
    """`payrecon.reconciliation.open.discrepancies{kind, age}` from (kind, age band, count) readings:
    every known kind in every band, zeros included, so a dashboard shows 0 and an alert finds a series."""

    async def read() -> Reading:
        found = {(kind, age): n for kind, age, n in await counts()}
        kinds = sorted({*SEVERITY, *(kind for kind, _ in found)})
        return [
            (found.get((kind, age), 0), {"kind": kind, "age": age}) for kind in kinds for age in OPEN_CASE_AGE_BANDS
        ]

    return BackgroundGauge(
        meter,
        "payrecon.reconciliation.open.discrepancies",
        read,
        description="Discrepancy cases not resolved yet (OPEN or ACKNOWLEDGED), by kind and age band since opened",
    )


@contextlib.asynccontextmanager
async def running(
    settings: ReconciliationSettings, stop: asyncio.Event, address: str | None = None
) -> AsyncIterator[int]:
    common = settings.common
    engine = create_engine(common.database_url, SCHEMA)
    ledger = LedgerClient(settings.ledger_address, settings.ledger_token)
    ingest = IngestClient(settings.ingest_address, settings.ledger_token)
    try:
        async with SqsClient.connect(endpoint_url=common.sqs_endpoint_url, region=common.aws_region) as sqs:
            store = ReconciliationStore(engine)
            service = ReconciliationService(
                store,
                ledger,
                FileStatementParser(),
                settings.watermark_wait_seconds,
                settings.suspense_account,
                ingest,
                settings.not_posted_after_seconds,
            )
            servicer = ReconciliationServicer(service)
            server, port, health = await create_server(
                address or settings.address,
                service_names=[SERVICE_NAME],
                register=[lambda s: reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server(servicer, s)],
                tokens=common.api_tokens,
                scopes=scopes_for(SERVICE_NAME, SCOPES),
                errors=RECONCILIATION_ERRORS,
            )

            async def project(messages: Sequence[Message]) -> Sequence[Message]:
                events = [e for m in messages for e in messages_pb2.LedgerEventBatch.FromString(decode_body(m)).events]
                await store.project_events(events)
                service.ledger_entries_arrived(
                    [
                        (account, e.transfer_posted.posted_at.ToDatetime(tzinfo=UTC))
                        for e in events
                        if e.WhichOneof("event") == "transfer_posted"
                        for account in (e.transfer_posted.debit_account_id, e.transfer_posted.credit_account_id)
                    ]
                )
                return messages

            async def can_serve() -> None:
                # The database, which every call needs. Not the queue: while SQS is down, imports,
                # cases and reports still work, and a report says how far the ledger's events had
                # reached (its watermark) rather than show breaks that are only in flight.
                await store.ping()

            meter = payrecon_meter()

            gauges = [
                queue_depth_gauge(meter, sqs, [settings.events_queue]),
                open_discrepancies_gauge(meter, store.unresolved_case_counts),
            ]
            await server.start()
            log.info("reconciliation listening", extra={"fields": {"port": port}})
            async with background(
                # One receiver lingering 0.1 s after a partial batch: fewer, fuller receives and
                # deletes (the queue's own CPU) for at most 0.1 s more before the batch is applied.
                consume(
                    sqs,
                    settings.events_queue,
                    project,
                    stop,
                    receivers=1,
                    linger_seconds=0.1,
                    visibility_seconds=common.sqs_visibility_seconds,
                ),
                run_periodically(
                    service.match_touched, stop, settings.continuous_interval_seconds, what="continuous matching"
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
    finally:
        await ledger.close()
        await ingest.close()
        await engine.dispose()
