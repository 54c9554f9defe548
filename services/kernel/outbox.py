"""Transactional-outbox relay: publishes a schema's `outbox` rows to SQS FIFO, packed per group.

Every context that emits messages has an `outbox` table (id, message_group, payload, traceparent,
published_at) written in the same transaction as its business change. The relay locks unpublished
rows (SKIP LOCKED, so relays can run side by side), packs the rows of one message group into as few
messages as the size limit allows (order kept), sends them to every target queue and marks the rows
published in the same transaction. A crash between send and commit re-sends the same message with
the same deduplication id; consumers are idempotent in any case.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.runtime import sleep_or_stop
from services.kernel.sqs import MAX_BATCH, OutgoingMessage, SqsClient
from services.kernel.telemetry import context_from_traceparent, inject_message_attributes

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    message_group: str
    payload: bytes
    traceparent: str


Packer = Callable[[Sequence[bytes]], bytes]


# SQS takes 256 KiB per message; base64 makes bytes 4/3 larger, and attributes need room too.
MAX_PAYLOAD_BYTES = 180_000


def pack_rows(rows: Sequence[OutboxRow], per_message: int, max_bytes: int = MAX_PAYLOAD_BYTES) -> list[list[OutboxRow]]:
    """Groups rows by message group (first-seen order), each group cut into chunks of at most
    `per_message` rows and `max_bytes` of payload (a single larger row travels alone)."""
    groups: dict[str, list[OutboxRow]] = {}
    for row in rows:
        groups.setdefault(row.message_group, []).append(row)
    chunks: list[list[OutboxRow]] = []
    for group_rows in groups.values():
        chunk: list[OutboxRow] = []
        size = 0
        for row in group_rows:
            if chunk and (len(chunk) == per_message or size + len(row.payload) > max_bytes):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(row)
            size += len(row.payload)
        if chunk:
            chunks.append(chunk)
    return chunks


def deduplication_id(source: str, chunk: Sequence[OutboxRow]) -> str:
    digest = hashlib.sha256(",".join(str(r.id) for r in chunk).encode()).hexdigest()[:40]
    return f"{source}-{chunk[0].id}-{digest}"


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        sqs: SqsClient,
        *,
        source: str,
        queues: Sequence[str],
        pack: Packer,
        rows_per_poll: int = 1000,
        rows_per_message: int = 100,
        idle_seconds: float = 0.05,
        max_idle_seconds: float = 0.5,
    ) -> None:
        self._engine = engine
        self._sqs = sqs
        self._source = source
        self._queues = list(queues)
        self._pack = pack
        self._rows_per_poll = rows_per_poll
        self._rows_per_message = rows_per_message
        self._idle_seconds = idle_seconds
        self._max_idle_seconds = max_idle_seconds

    async def relay_once(self) -> int:
        """Publishes one poll's worth of rows; returns how many rows were published."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "SELECT id, message_group, payload, traceparent FROM outbox"
                    " WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
                ),
                {"limit": self._rows_per_poll},
            )
            rows = [OutboxRow(r.id, r.message_group, bytes(r.payload), r.traceparent) for r in result]
            if not rows:
                return 0
            chunks = pack_rows(rows, self._rows_per_message)
            links = [
                trace.Link(trace.get_current_span(context_from_traceparent(r.traceparent)).get_span_context())
                for r in rows[:32]
                if r.traceparent
            ]
            with tracer.start_as_current_span(
                f"outbox publish {self._source}", links=links, kind=trace.SpanKind.PRODUCER
            ) as span:
                span.set_attribute("messaging.batch.message_count", len(chunks))
                span.set_attribute("payrecon.outbox.rows", len(rows))
                attributes = inject_message_attributes()
                messages = [
                    OutgoingMessage(
                        self._pack([r.payload for r in chunk]),
                        chunk[0].message_group,
                        deduplication_id(self._source, chunk),
                        attributes,
                    )
                    for chunk in chunks
                ]
                for queue in self._queues:
                    sends = [
                        self._sqs.send_batch(queue, messages[i : i + MAX_BATCH])
                        for i in range(0, len(messages), MAX_BATCH)
                    ]
                    await asyncio.gather(*sends)
            await conn.execute(
                text("UPDATE outbox SET published_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"),
                {"ids": [r.id for r in rows]},
            )
            return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until `stop` is set, backing off (up to 5 s) while SQS or the database fails.

        Between polls it waits `idle_seconds`, doubling up to `max_idle_seconds` while there is
        nothing to publish: rows arriving meanwhile travel together in fewer, fuller SQS messages,
        and an idle service does not spend its CPU polling.
        """
        backoff = 0.0
        idle = self._idle_seconds
        while not stop.is_set():
            try:
                published = await self.relay_once()
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                backoff = min(5.0, max(0.1, backoff * 2))
                log.warning(
                    "outbox relay failed; retrying",
                    extra={"fields": {"source": self._source, "error": repr(error), "backoff": backoff}},
                )
                await sleep_or_stop(stop, backoff)
                continue
            if published >= self._rows_per_poll:
                continue
            idle = self._idle_seconds if published else min(self._max_idle_seconds, idle * 2)
            await sleep_or_stop(stop, idle)
