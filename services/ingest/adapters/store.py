"""PostgreSQL persistence of the ingest schema: accepted requests, the outbox, recorded outcomes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.codecs import transfer_request_bytes
from services.ingest.domain.model import (
    PendingRequest,
    RequestStatus,
    StoredRequest,
    TransferOutcome,
    TransferSubmission,
)
from services.ingest.service.ports import KeyBinding, NewRequest, Recorded, RedriveStatistics
from services.kernel.db import driver_connection, is_outage, outages_as_unavailable
from services.kernel.money import Money
from services.kernel.telemetry import current_traceparent


@dataclass(frozen=True)
class StuckRequest:
    """A request still PROCESSING past the redrive age: what publishing it again is built from."""

    submission: TransferSubmission
    accepted_at: datetime


_SELECT_REQUEST = """
SELECT idempotency_key, fingerprint, message_id::text AS message_id, source_account_id,
       destination_account_id, amount_minor, currency, status, error_code, error_message,
       accepted_at, expires_at, completed_at
FROM requests WHERE idempotency_key = $1
"""


# Requests are inserted in key order, so two batches sharing keys wait for each other in one order
# and cannot deadlock; outbox rows keep the given order.
_RECORD_REQUESTS = """
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::text[], $11::bytea[], $12::text[], $13::text[])
    WITH ORDINALITY AS i(key, fp, mid, src, dst, amount, cur, meta, exp, grp, payload, tp, ttype, ord)),
request AS (
  INSERT INTO requests (idempotency_key, fingerprint, message_id, source_account_id, destination_account_id,
                        amount_minor, currency, metadata, expires_at, transfer_type)
  SELECT key, fp, CAST(mid AS uuid), src, dst, amount, cur, CAST(meta AS jsonb), exp, NULLIF(ttype, '')
  FROM input ORDER BY key
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING idempotency_key),
queued AS (
  INSERT INTO outbox (idempotency_key, message_group, payload, traceparent)
  SELECT i.key, i.grp, i.payload, i.tp FROM input i JOIN request r ON r.idempotency_key = i.key ORDER BY i.ord)
SELECT idempotency_key FROM request
"""

_BINDINGS = (
    "SELECT idempotency_key, fingerprint, message_id::text, expires_at FROM requests"
    " WHERE idempotency_key = ANY($1::text[])"
)


def _to_request(r: Mapping[str, Any]) -> StoredRequest:
    return StoredRequest(
        idempotency_key=r["idempotency_key"],
        fingerprint=r["fingerprint"],
        message_id=r["message_id"],
        source_account_id=r["source_account_id"],
        destination_account_id=r["destination_account_id"],
        amount=Money(r["amount_minor"], r["currency"]),
        status=RequestStatus(r["status"]),
        error_code=r["error_code"],
        error_message=r["error_message"],
        accepted_at=r["accepted_at"],
        expires_at=r["expires_at"],
        completed_at=r["completed_at"],
    )


class IngestStore:
    """Every method raises Unavailable when the database cannot be reached (outages_as_unavailable)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """A pooled connection's asyncpg driver, for the hot statements: asyncpg prepares each once
        per connection and reuses it, and nothing is built per call in SQLAlchemy."""
        async with outages_as_unavailable(), self._engine.connect() as conn:
            driver = await driver_connection(conn)
            try:
                yield driver
            except Exception as error:
                # SQLAlchemy did not see this failure: a broken connection must not go back to its pool.
                if driver.is_closed() or is_outage(error):
                    await conn.invalidate()
                    if not is_outage(error):
                        raise ConnectionError("the database connection is closed") from error
                raise

    async def record_requests(self, requests: Sequence[NewRequest]) -> list[Recorded]:
        """Inserts the requests whose key is new and their outbox rows (the TransferRequest to publish,
        with the caller's trace context) in one statement, so one transaction and one round trip; a
        second statement reads what the other keys are bound to."""
        if not requests:
            return []
        keys = [r.submission.idempotency_key for r in requests]
        if len(set(keys)) != len(keys):
            raise ValueError("record_requests takes distinct idempotency keys")
        async with self._driver() as driver:
            created = {
                row[0]
                for row in await driver.fetch(
                    _RECORD_REQUESTS,
                    keys,
                    [r.fingerprint for r in requests],
                    [r.message_id for r in requests],
                    [r.submission.source_account_id for r in requests],
                    [r.submission.destination_account_id for r in requests],
                    [r.submission.amount.minor_units for r in requests],
                    [r.submission.amount.currency for r in requests],
                    [json.dumps(r.submission.metadata) for r in requests],
                    [r.expires_at for r in requests],
                    [r.message_group for r in requests],
                    [transfer_request_bytes(r.submission, r.accepted_at) for r in requests],
                    [r.context.run(current_traceparent) for r in requests],
                    [r.submission.code for r in requests],
                )
            }
            taken = [key for key in keys if key not in created]
            # A new statement, so a new snapshot: it sees the rows whose commit the insert waited for.
            bound = (
                {row[0]: KeyBinding(row[1], row[2], row[3]) for row in await driver.fetch(_BINDINGS, taken)}
                if taken
                else {}
            )
        return [
            Recorded(True, r.binding) if key in created else Recorded(False, bound.get(key))
            for key, r in zip(keys, requests, strict=True)
        ]

    async def record_accepted(
        self,
        submission: TransferSubmission,
        *,
        message_id: str,
        accepted_at: datetime,
        expires_at: datetime,
        message_group: str,
    ) -> StoredRequest | None:
        """One request alone (tools and tests): the stored request, or None when the key exists."""
        request = NewRequest(submission, submission.fingerprint(), message_id, accepted_at, expires_at, message_group)
        (recorded,) = await self.record_requests([request])
        return await self.get(submission.idempotency_key) if recorded.created else None

    async def get(self, idempotency_key: str) -> StoredRequest | None:
        """What status polling reads: on the driver, like the submits."""
        async with self._driver() as driver:
            row = await driver.fetchrow(_SELECT_REQUEST, idempotency_key)
        return _to_request(row) if row is not None else None

    async def record_outcomes(self, outcomes: Sequence[TransferOutcome]) -> int:
        """Records ledger verdicts on requests still PROCESSING; repeats are no-ops. Returns rows changed."""
        if not outcomes:
            return 0
        async with outages_as_unavailable(), self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE requests AS r SET status = o.status, error_code = NULLIF(o.code, ''),"
                    " error_message = NULLIF(o.message, ''), completed_at = o.at"
                    " FROM unnest(CAST(:keys AS text[]), CAST(:statuses AS text[]), CAST(:codes AS text[]),"
                    "             CAST(:messages AS text[]), CAST(:ats AS timestamptz[]))"
                    "      AS o(key, status, code, message, at)"
                    " WHERE r.idempotency_key = o.key AND r.status = 'PROCESSING'"
                ),
                {
                    "keys": [o.transfer_id for o in outcomes],
                    "statuses": [o.status.value for o in outcomes],
                    "codes": [o.error_code for o in outcomes],
                    "messages": [o.error_message for o in outcomes],
                    "ats": [o.completed_at for o in outcomes],
                },
            )
            return int(result.rowcount or 0)

    async def purge_expired(self, now: datetime, limit: int) -> int:
        """Deletes up to `limit` requests past `expires_at` that have an outcome, with their outbox rows."""
        async with outages_as_unavailable(), self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "WITH expired AS ("
                    "  SELECT idempotency_key FROM requests"
                    "  WHERE expires_at < :now AND status <> 'PROCESSING'"
                    "  ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED),"
                    " dropped_outbox AS ("
                    "  DELETE FROM outbox o USING expired e"
                    "  WHERE o.idempotency_key = e.idempotency_key AND o.published_at IS NOT NULL)"
                    " DELETE FROM requests r USING expired e WHERE r.idempotency_key = e.idempotency_key"
                    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.idempotency_key = r.idempotency_key"
                    "                 AND o.published_at IS NULL)"
                ),
                {"now": now, "limit": limit},
            )
            return int(result.rowcount or 0)

    async def redrive_stuck(self, *, after_seconds: float, limit: int, group_of: Callable[[str], str]) -> int:
        """Queues a new outbox row for up to `limit` requests (oldest first) still PROCESSING
        `after_seconds` after they were accepted and after their last redrive, and counts the
        redrive on each, in one transaction. Requests with an outbox row not yet published are left
        alone: their message has not even gone out. Returns how many were queued."""
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT idempotency_key, source_account_id, destination_account_id, amount_minor, currency,"
                        " metadata, accepted_at, transfer_type FROM requests r"
                        " WHERE status = 'PROCESSING' AND accepted_at < now() - make_interval(secs => :age)"
                        " AND (redriven_at IS NULL OR redriven_at < now() - make_interval(secs => :age))"
                        " AND NOT EXISTS (SELECT 1 FROM outbox o"
                        "                 WHERE o.idempotency_key = r.idempotency_key AND o.published_at IS NULL)"
                        " ORDER BY accepted_at LIMIT :limit FOR UPDATE SKIP LOCKED"
                    ),
                    {"age": float(after_seconds), "limit": limit},
                )
            ).all()
            if not rows:
                return 0
            stuck = [
                StuckRequest(
                    TransferSubmission(
                        r.idempotency_key,
                        r.source_account_id,
                        r.destination_account_id,
                        Money(r.amount_minor, r.currency),
                        dict(json.loads(r.metadata) if isinstance(r.metadata, str) else r.metadata),
                        r.transfer_type or "",
                    ),
                    r.accepted_at,
                )
                for r in rows
            ]
            entries = [
                (group_of(r.submission.source_account_id), transfer_request_bytes(r.submission, r.accepted_at))
                for r in stuck
            ]
            await conn.execute(
                text(
                    "WITH queued AS ("
                    "  INSERT INTO outbox (idempotency_key, message_group, payload)"
                    "  SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:groups AS text[]), CAST(:payloads AS bytea[])))"
                    " UPDATE requests SET redrive_count = redrive_count + 1, redriven_at = now()"
                    " WHERE idempotency_key = ANY(CAST(:keys AS text[]))"
                ),
                {
                    "keys": [r.submission.idempotency_key for r in stuck],
                    "groups": [group for group, _ in entries],
                    "payloads": [payload for _, payload in entries],
                },
            )
            return len(stuck)

    async def pending(self, account_id: str | None, accepted_before: datetime, limit: int) -> list[PendingRequest]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT idempotency_key, source_account_id, destination_account_id, amount_minor, currency,"
                    " accepted_at, redrive_count FROM requests WHERE status = 'PROCESSING' AND accepted_at < :before"
                    " AND (CAST(:a AS text) IS NULL OR source_account_id = :a OR destination_account_id = :a)"
                    " ORDER BY accepted_at LIMIT :n"
                ),
                {"a": account_id, "before": accepted_before, "n": limit},
            )
            return [
                PendingRequest(
                    r.idempotency_key,
                    r.source_account_id,
                    r.destination_account_id,
                    Money(r.amount_minor, r.currency),
                    r.accepted_at,
                    r.redrive_count,
                )
                for r in rows
            ]

    async def redrive_statistics(self, after_seconds: float) -> RedriveStatistics:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT (SELECT coalesce(sum(redrive_count), 0) FROM requests WHERE redrive_count > 0)"
                        "        AS redriven,"
                        " (SELECT count(*) FROM requests"
                        "  WHERE status = 'PROCESSING' AND accepted_at < now() - make_interval(secs => :age)) AS stuck"
                    ),
                    {"age": float(after_seconds)},
                )
            ).one()
            return RedriveStatistics(int(row.redriven), int(row.stuck))

    async def oldest_processing_age_seconds(self) -> float:
        """How long the oldest request still PROCESSING has waited since its 202 (0 when none): the
        delay the relay, the queue, the ledger worker and the outcome's trip back add up to, as the
        caller polling its status sees it. Read on the partial index of PROCESSING requests."""
        async with outages_as_unavailable(), self._engine.connect() as conn:
            age = (
                await conn.execute(
                    text(
                        "SELECT coalesce(extract(epoch FROM now() - min(accepted_at)), 0)"
                        " FROM requests WHERE status = 'PROCESSING'"
                    )
                )
            ).scalar_one()
            return max(0.0, float(age))

    async def outbox_pending(self) -> int:
        async with outages_as_unavailable(), self._engine.connect() as conn:
            return int(
                (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one()
            )

    async def ping(self) -> None:
        async with outages_as_unavailable(), self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
