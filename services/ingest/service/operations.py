"""Operational views: queue and cache statistics, readiness of database, cache and queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.ingest.service.ports import (
    CacheStatistics,
    IdempotencyCache,
    QueueInspector,
    RedriveStatistics,
    RequestStore,
)
from services.kernel.queues import QueueAttributes, dead_letter_queue_name

READY = "ready"


@dataclass(frozen=True)
class QueueStatistics:
    queue: QueueAttributes
    dlq_url: str
    dlq_messages: int
    outbox_pending: int
    redrive: RedriveStatistics


@dataclass(frozen=True)
class ReadinessReport:
    database: str
    cache: str
    queue: str

    @property
    def ready(self) -> bool:
        # The cache is a fast path only: losing it degrades speed, not correctness.
        return self.database == READY and self.queue == READY


@dataclass
class OperationsService:
    store: RequestStore
    cache: IdempotencyCache
    sqs: QueueInspector
    transfers_queue: str
    redrive_after_seconds: int

    async def queue_statistics(self) -> QueueStatistics:
        queue, dlq, pending, redrive = await asyncio.gather(
            self.sqs.attributes(self.transfers_queue),
            self.sqs.attributes(dead_letter_queue_name(self.transfers_queue)),
            self.store.outbox_pending(),
            self.store.redrive_statistics(self.redrive_after_seconds),
        )
        return QueueStatistics(queue, dlq.url, dlq.messages, pending, redrive)

    async def cache_statistics(self) -> CacheStatistics:
        return await self.cache.statistics()

    async def readiness(self, probe_seconds: float = 2.0) -> ReadinessReport:
        async def check(probe: object) -> str:
            try:
                await asyncio.wait_for(probe, probe_seconds)  # type: ignore[arg-type]
                return READY
            except Exception as error:
                return f"unavailable: {type(error).__name__}"

        database, cache, queue = await asyncio.gather(
            check(self.store.ping()),
            check(self.cache.ping()),
            check(self.sqs.attributes(self.transfers_queue)),
        )
        if cache != READY:
            cache = f"degraded ({cache})"
        return ReadinessReport(database, cache, queue)
