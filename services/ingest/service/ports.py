"""What ingest's use cases need from the outside, as ports: the durable request store (PostgreSQL,
each call one atomic statement), the idempotency fast path (Redis) and the queue's attributes (SQS).
Adapters implement them; the unit tests use in-memory fakes."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.ingest.domain.model import PendingRequest, StoredRequest, TransferOutcome, TransferSubmission
from services.kernel.queues import QueueAttributes


@dataclass(frozen=True)
class KeyBinding:
    """What an idempotency key is bound to once a request is recorded under it: the request's
    fingerprint and the acceptance first answered. Enough to replay or refuse a later request."""

    fingerprint: str
    message_id: str
    expires_at: datetime


@dataclass(frozen=True)
class NewRequest:
    """A validated submission to record under its key, with its outbox message. `context` is the
    caller's (captured where the request is built): whoever writes a batch of requests reads each
    one's trace context from it, not from the writing task."""

    submission: TransferSubmission
    fingerprint: str
    message_id: str
    accepted_at: datetime
    expires_at: datetime
    message_group: str
    context: contextvars.Context = field(default_factory=contextvars.copy_context, compare=False, repr=False)

    @property
    def binding(self) -> KeyBinding:
        return KeyBinding(self.fingerprint, self.message_id, self.expires_at)


@dataclass(frozen=True)
class Recorded:
    """The store's answer for one NewRequest: `created` when this call recorded it (with its outbox
    row); otherwise `binding` is what the key was already bound to (None only when the key was
    purged in between)."""

    created: bool
    binding: KeyBinding | None


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
    async def record_requests(self, requests: Sequence[NewRequest]) -> list[Recorded]:
        """Records every request whose key is new, each with its outbox row (in the given order), all
        in ONE transaction: all or nothing. Answers one Recorded per request, in order. Keys must be
        distinct (ValueError otherwise). Raises Unavailable when the database cannot be reached."""
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

    async def get(self, key: str) -> KeyBinding | None: ...

    async def put_many(self, bindings: Mapping[str, KeyBinding]) -> None:
        """Remembers every key's binding, in one round trip."""
        ...

    async def ping(self) -> None: ...

    async def statistics(self) -> CacheStatistics: ...


@dataclass(frozen=True)
class SchemaRefusal:
    """The rule of the ledger's schema a submission breaks: its stable code and a message naming it."""

    code: str
    message: str


@dataclass(frozen=True)
class SchemaVerdicts:
    """The ledger's answer to a check: the schema version in force (0: none) and, per submission in
    order, the rule it breaks or None."""

    version: int
    refusals: list[SchemaRefusal | None]


class SchemaChecker(Protocol):
    """The ledger's rule engine, asked before the 202 (the ledger owns the schema; ingest holds none)."""

    async def check(self, submissions: Sequence[TransferSubmission], timeout_seconds: float) -> SchemaVerdicts:
        """Checks the submissions against the schema in force (none: only the version is told). Raises
        Unavailable when the ledger does not answer within `timeout_seconds`, or at all."""
        ...


class QueueInspector(Protocol):
    async def attributes(self, queue_name: str) -> QueueAttributes: ...
