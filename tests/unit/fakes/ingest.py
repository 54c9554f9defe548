"""In-memory stand-ins for ingest's ports (request store, idempotency cache, queue), for unit tests
of its use cases. The store keeps PostgreSQL's guarantee that matters: one row per key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.ingest.domain.model import (
    PendingRequest,
    RequestStatus,
    StoredRequest,
    TransferOutcome,
    TransferSubmission,
)
from services.ingest.service.ports import CachedAcceptance, CacheStatistics, RedriveStatistics
from services.kernel.queues import QueueAttributes


class FakeRequestStore:
    def __init__(self) -> None:
        self.requests: dict[str, StoredRequest] = {}
        self.outbox: list[tuple[str, str]] = []  # (message group, key), in order
        self.redriven = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("database down")

    async def record_accepted(
        self,
        submission: TransferSubmission,
        *,
        message_id: str,
        accepted_at: datetime,
        expires_at: datetime,
        message_group: str,
    ) -> StoredRequest | None:
        self._check()
        if submission.idempotency_key in self.requests:
            return None
        stored = StoredRequest(
            submission.idempotency_key,
            submission.fingerprint(),
            message_id,
            submission.source_account_id,
            submission.destination_account_id,
            submission.amount,
            RequestStatus.PROCESSING,
            None,
            None,
            accepted_at,
            expires_at,
            None,
        )
        self.requests[submission.idempotency_key] = stored
        self.outbox.append((message_group, submission.idempotency_key))
        return stored

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
        self.entries: dict[str, CachedAcceptance] = {}
        self.down = False

    async def get(self, key: str) -> CachedAcceptance | None:
        return None if self.down else self.entries.get(key)

    async def put(self, key: str, acceptance: CachedAcceptance) -> None:
        if not self.down:
            self.entries[key] = acceptance

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
