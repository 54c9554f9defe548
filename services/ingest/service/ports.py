"""What ingest's use cases need from the outside, as ports: the durable request store (PostgreSQL,
each call one atomic statement), the idempotency fast path (Redis) and the queue's attributes (SQS).
Adapters implement them; the unit tests use in-memory fakes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.ingest.domain.model import PendingRequest, StoredRequest, TransferOutcome, TransferSubmission
from services.kernel.queues import QueueAttributes


@dataclass(frozen=True)
class CachedAcceptance:
    """What the fast path remembers of an accepted key: enough to replay or refuse without PostgreSQL."""

    fingerprint: str
    message_id: str
    expires_at: datetime


@dataclass(frozen=True)
class CacheStatistics:
    connected: bool
    total_keys: int
    prefix: str
    default_ttl: int
    memory_usage: str


@dataclass(frozen=True)
class RedriveStatistics:
    redriven: int  # redrives of the requests still retained
    stuck: int  # requests PROCESSING for longer than the redrive age


class RequestStore(Protocol):
    async def record_accepted(
        self,
        submission: TransferSubmission,
        *,
        message_id: str,
        accepted_at: datetime,
        expires_at: datetime,
        message_group: str,
    ) -> StoredRequest | None:
        """Records the request and its outbox row atomically; None when the key already exists."""
        ...

    async def get(self, idempotency_key: str) -> StoredRequest | None: ...

    async def record_outcomes(self, outcomes: Sequence[TransferOutcome]) -> int:
        """Records verdicts on requests still PROCESSING; returns how many changed."""
        ...

    async def purge_expired(self, now: datetime, limit: int) -> int: ...

    async def outbox_pending(self) -> int: ...

    async def redrive_stuck(self, *, after_seconds: float, limit: int, group_of: Callable[[str], str]) -> int:
        """Publishes again (a new outbox row, built from the stored request, in the group `group_of`
        names for its source account) up to `limit` requests still PROCESSING `after_seconds` after
        their acceptance and their last redrive; returns how many."""
        ...

    async def redrive_statistics(self, after_seconds: float) -> RedriveStatistics: ...

    async def pending(self, account_id: str | None, accepted_before: datetime, limit: int) -> list[PendingRequest]:
        """Requests still PROCESSING accepted before `accepted_before`, oldest first."""
        ...

    async def ping(self) -> None: ...


class IdempotencyCache(Protocol):
    """Best effort: a failure is a miss, never an answer."""

    async def get(self, key: str) -> CachedAcceptance | None: ...

    async def put(self, key: str, acceptance: CachedAcceptance) -> None: ...

    async def ping(self) -> None: ...

    async def statistics(self) -> CacheStatistics: ...


class QueueInspector(Protocol):
    async def attributes(self, queue_name: str) -> QueueAttributes: ...
