"""In-memory stand-ins for ingest's ports (request store, idempotency cache, queue), for unit tests
of its use cases. The store keeps PostgreSQL's guarantees that matter: one row per key, and a batch
recorded all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.ingest.domain.model import (
    PendingRequest,
    RequestStatus,
    StoredRequest,
    TransferOutcome,
    TransferSubmission,
)
from services.ingest.service.ports import (
    CacheStatistics,
    KeyBinding,
    NewRequest,
    Recorded,
    RedriveStatistics,
    SchemaRefusal,
    SchemaVerdicts,
)
from services.kernel.errors import Unavailable
from services.kernel.queues import QueueAttributes


class FakeRequestStore:
    def __init__(self) -> None:
        self.requests: dict[str, StoredRequest] = {}
        self.outbox: list[tuple[str, str]] = []  # (message group, key), in order
        self.redriven = 0
        self.down = False
        self.batches: list[list[str]] = []  # the keys of each record_requests call, in order
        self.gate: asyncio.Event | None = None  # when set up, each write waits for it to open
        self.called = asyncio.Event()  # set by the first record_requests call

    def _check(self) -> None:
        if self.down:
            raise Unavailable("database down", code="SERVICE_UNAVAILABLE")

    async def record_requests(self, requests: Sequence[NewRequest]) -> list[Recorded]:
        keys = [r.submission.idempotency_key for r in requests]
        if len(set(keys)) != len(keys):
            raise ValueError("record_requests takes distinct idempotency keys")
        self.batches.append(keys)
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        self._check()
        answers = []
        for r in requests:
            existing = self.requests.get(r.submission.idempotency_key)
            if existing is not None:
                answers.append(
                    Recorded(False, KeyBinding(existing.fingerprint, existing.message_id, existing.expires_at))
                )
                continue
            s = r.submission
            self.requests[s.idempotency_key] = StoredRequest(
                s.idempotency_key,
                r.fingerprint,
                r.message_id,
                s.source_account_id,
                s.destination_account_id,
                s.amount,
                RequestStatus.PROCESSING,
                None,
                None,
                r.accepted_at,
                r.expires_at,
                None,
            )
            self.outbox.append((r.message_group, s.idempotency_key))
            answers.append(Recorded(True, r.binding))
        return answers

    async def get(self, idempotency_key: str) -> StoredRequest | None:
        self._check()
        return self.requests.get(idempotency_key)

    async def record_outcomes(self, outcomes: Sequence[TransferOutcome]) -> int:
        changed = 0
        for o in outcomes:
            stored = self.requests.get(o.transfer_id)
            if stored is not None and stored.status is RequestStatus.PROCESSING:
                self.requests[o.transfer_id] = replace(
                    stored,
                    status=o.status,
                    error_code=o.error_code or None,
                    error_message=o.error_message or None,
                    completed_at=o.completed_at,
                )
                changed += 1
        return changed

    async def purge_expired(self, now: datetime, limit: int) -> int:
        expired = [
            k for k, r in self.requests.items() if r.expires_at < now and r.status is not RequestStatus.PROCESSING
        ][:limit]
        for key in expired:
            del self.requests[key]
        return len(expired)

    async def outbox_pending(self) -> int:
        return len(self.outbox)

    async def redrive_stuck(self, *, after_seconds: float, limit: int, group_of: Callable[[str], str]) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=after_seconds)
        stuck = [r for r in self.requests.values() if r.status is RequestStatus.PROCESSING and r.accepted_at < cutoff][
            :limit
        ]
        self.outbox.extend((group_of(r.source_account_id), r.idempotency_key) for r in stuck)
        self.redriven += len(stuck)
        return len(stuck)

    async def pending(self, account_id: str | None, accepted_before: datetime, limit: int) -> list[PendingRequest]:
        return [
            PendingRequest(r.idempotency_key, r.source_account_id, r.destination_account_id, r.amount, r.accepted_at, 0)
            for r in sorted(self.requests.values(), key=lambda r: r.accepted_at)
            if r.status is RequestStatus.PROCESSING
            and r.accepted_at < accepted_before
            and account_id in (None, r.source_account_id, r.destination_account_id)
        ][:limit]

    async def redrive_statistics(self, after_seconds: float) -> RedriveStatistics:
        cutoff = datetime.now(UTC) - timedelta(seconds=after_seconds)
        stuck = sum(
            1 for r in self.requests.values() if r.status is RequestStatus.PROCESSING and r.accepted_at < cutoff
        )
        return RedriveStatistics(self.redriven, stuck)

    async def ping(self) -> None:
        self._check()


class FakeIdempotencyCache:
    def __init__(self) -> None:
        self.entries: dict[str, KeyBinding] = {}
        self.down = False
        self.writes = 0  # put_many calls: round trips

    async def get(self, key: str) -> KeyBinding | None:
        return None if self.down else self.entries.get(key)

    async def put_many(self, bindings: Mapping[str, KeyBinding]) -> None:
        if not self.down and bindings:
            self.writes += 1
            self.entries.update(bindings)

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("cache down")

    async def statistics(self) -> CacheStatistics:
        return CacheStatistics(not self.down, len(self.entries), "idempotency:", 86400, "1K")


class FakeQueue:
    def __init__(self) -> None:
        self.depth: dict[str, int] = {}
        self.down = False

    async def attributes(self, queue_name: str) -> QueueAttributes:
        if self.down:
            raise ConnectionError("queue down")
        return QueueAttributes(f"http://sqs/{queue_name}", self.depth.get(queue_name, 0), 0, 60, True, False)


class FakeSchemaChecker:
    """The ledger's CheckTransfers as ingest sees it: `version` in force, `refuse` decides per submission,
    `calls` keeps the keys of each check (a refresh is an empty list), `down` fails every call."""

    def __init__(self, version: int = 0, refuse: Callable[[TransferSubmission], SchemaRefusal | None] | None = None):
        self.version = version
        self.refuse = refuse or (lambda s: None)
        self.calls: list[list[str]] = []
        self.down = False

    async def check(self, submissions: Sequence[TransferSubmission], timeout_seconds: float) -> SchemaVerdicts:
        self.calls.append([s.idempotency_key for s in submissions])
        if self.down:
            raise Unavailable("the ledger's schema check failed: UNAVAILABLE", code="SERVICE_UNAVAILABLE")
        if not self.version:
            return SchemaVerdicts(0, [None] * len(submissions))
        return SchemaVerdicts(self.version, [self.refuse(s) for s in submissions])
