"""Transactional-outbox relay: publishes a schema's `outbox` rows to SQS FIFO, packed per group.

Every context that emits messages has an `outbox` table (id, message_group, payload, traceparent,
published_at) written in the same transaction as its business change. Order per message group holds
whatever the number of relays: a relay first claims message groups with PostgreSQL advisory locks
held until its transaction ends, so one group is sent by one relay at a time, always from its oldest
unpublished row. It packs each claimed group's rows into as few messages as the size limit allows,
sends them with never two calls of one group in flight (groups concurrently, one group's calls one
after the other, so SQS FIFO receives them in outbox order), and marks the rows published in the
same transaction. A crash between send and commit releases the claim and the next
relay re-sends from the same oldest row: the same message with the same deduplication id, or, when
the cut differs, transfers the consumer already applied (consumers are idempotent in any case).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.runtime import sleep_or_stop
from services.kernel.sqs import MAX_BATCH, OutgoingMessage, SqsClient
from services.kernel.telemetry import batch_span, context_from_traceparent, inject_message_attributes

log = logging.getLogger(__name__)


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


def send_rounds(messages: Sequence[OutgoingMessage], per_call: int = MAX_BATCH) -> list[list[list[OutgoingMessage]]]:
    """Plans the SendMessageBatch calls: rounds go one after the other, the calls of a round
    concurrently. Each group's messages keep their order and sit in at most one call per round (SQS
    FIFO enqueues one call's messages in order), so a group never has two calls in flight."""
    by_group: dict[str, list[OutgoingMessage]] = {}
    for message in messages:
        by_group.setdefault(message.group_id, []).append(message)
    rounds: list[list[list[OutgoingMessage]]] = []
    for group_messages in by_group.values():
        for index, start in enumerate(range(0, len(group_messages), per_call)):
            piece = group_messages[start : start + per_call]
            if index == len(rounds):
                rounds.append([])
            call = next((c for c in rounds[index] if len(c) + len(piece) <= per_call), None)
            if call is None:
                rounds[index].append(list(piece))
            else:
                call.extend(piece)
    return rounds


def claim_namespace(source: str) -> int:
    """First key (int4) of this relay's advisory locks: the ingest and ledger relays share a database
    but never each other's locks. (Two groups of one source sharing a hash only wait for each other.)"""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "big", signed=True)


# The groups of the oldest unpublished rows, oldest first, that this transaction could lock: another
# relay holds the rest until it commits. The locks are taken before the rows are read (in the next
# statement), so the rows are read with the other relay's commit visible.
_CLAIM_GROUPS = text(
    "SELECT message_group FROM ("
    "  SELECT message_group, min(id) AS first_id FROM ("
    "    SELECT message_group, id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :scan"
    "  ) AS oldest GROUP BY message_group"
    ") AS candidates"
    " WHERE pg_try_advisory_xact_lock(:namespace, hashtext(message_group))"
    " ORDER BY first_id"
)

# A prefix of every claimed group's unpublished rows, in outbox order.
_CLAIMED_ROWS = text(
    "SELECT id, message_group, payload, traceparent FROM outbox"
    " WHERE published_at IS NULL AND message_group = ANY(CAST(:groups AS text[]))"
    " ORDER BY id LIMIT :limit"
)


async def _settle_all(sends: Sequence[Awaitable[object]]) -> None:
    """Awaits every send, then raises the first failure: no send of a group may still be in flight
    once the claim is given up, or it could land after the next relay's."""
    results = await asyncio.gather(*sends, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


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
        # 0.2 s between polls under load rather than 0.05: a quarter as many SQS messages (one per
        # message group per poll) and calls, each costing the queue and every consumer CPU (the ledger
        # worker's receives, deletes and posting transactions), for 150 ms more between a commit and its
        # publish. The caller's 202 does not wait for the relay; its COMPLETED does.
        idle_seconds: float = 0.2,
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
        self._claim_namespace = claim_namespace(source)

    async def relay_once(self) -> int:
        """Publishes one poll's worth of rows of the groups it could claim; returns how many."""
        async with self._engine.begin() as conn:
            groups = list(
                (
                    await conn.execute(_CLAIM_GROUPS, {"scan": self._rows_per_poll, "namespace": self._claim_namespace})
                ).scalars()
            )
            if not groups:
                return 0
            result = await conn.execute(_CLAIMED_ROWS, {"groups": groups, "limit": self._rows_per_poll})
            rows = [OutboxRow(r.id, r.message_group, bytes(r.payload), r.traceparent) for r in result]
            if not rows:
                return 0
            chunks = pack_rows(rows, self._rows_per_message)
            # The rows' traces (the requests that wrote them) lead to the publish; the messages carry
            # the publish's context on to their consumers.
            with batch_span(
                f"{self._source} outbox publish",
                (context_from_traceparent(r.traceparent) for r in rows if r.traceparent),
                kind=trace.SpanKind.PRODUCER,
            ) as span:
                if span.is_recording():
                    span.set_attribute("messaging.system", "aws_sqs")
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
                rounds = send_rounds(messages)
                for queue in self._queues:
                    for calls in rounds:
                        await _settle_all([self._sqs.send_batch(queue, call) for call in calls])
                await conn.execute(
                    text("UPDATE outbox SET published_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"),
                    {"ids": [r.id for r in rows]},
                )
            return len(rows)

    async def unpublished(self) -> int:
        """Rows written but not yet published (the backlog a metric reports); the partial index on
        unpublished rows keeps this a short scan while the relay keeps up."""
        async with self._engine.connect() as conn:
            return int(
                (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one()
            )

    async def flush(self, seconds: float) -> int:
        """One last poll on the way out, once the server has drained: publishes what is committed
        (up to one poll's rows) within `seconds`; returns how many. What it leaves stays in the
        outbox for the next relay — the outbox is durable, so a flush that fails loses nothing."""
        try:
            return await asyncio.wait_for(self.relay_once(), seconds)
        except Exception as error:
            log.warning(
                "final outbox flush incomplete; the next relay publishes the rest",
                extra={"fields": {"source": self._source, "error": repr(error)}},
            )
            return 0

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
