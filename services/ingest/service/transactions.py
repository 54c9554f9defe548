"""Use cases of the write path: submit a transfer (idempotently), read its status, record outcomes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.ingest.domain.errors import IdempotencyKeyReused, InvalidSubmission, UnknownTransaction
from services.ingest.domain.model import (
    Acceptance,
    PendingRequest,
    StoredRequest,
    SubmitTransaction,
    TransferOutcome,
    message_group_for,
    validate_account_id,
    validate_idempotency_key,
    validate_submission,
)
from services.ingest.service.group_commit import GroupCommit
from services.ingest.service.ports import IdempotencyCache, KeyBinding, NewRequest, RequestStore
from services.ingest.service.schema_gate import SchemaGate
from services.kernel.errors import Unavailable

log = logging.getLogger(__name__)

# Ages reach back from now: beyond a century there is nothing to find, and far beyond it no datetime.
MAX_AGE_SECONDS = 100 * 366 * 86400


@dataclass
class TransactionService:
    store: RequestStore
    cache: IdempotencyCache
    ttl_seconds: int
    default_currency: str
    message_groups: int
    # Concurrent submits share one write; built over store, cache and schema gate when not given.
    group_commit: GroupCommit | None = field(default=None)
    # The ledger's schema checked before the 202 (see SchemaGate); None: not checked here.
    schema_gate: SchemaGate | None = field(default=None)

    def __post_init__(self) -> None:
        self._commits = self.group_commit or GroupCommit(self.store, self.cache, schema_gate=self.schema_gate)

    async def submit(self, command: SubmitTransaction) -> Acceptance:
        """Accepts a transfer once per idempotency key; the 202 is owed only after the commit.

        PostgreSQL's unique key decides, in the batched write (no cache lookup first: a first submit
        costs no Redis round trip). The cache answers replays while the database cannot.

        Raises InvalidSubmission (bad input, nothing stored), SchemaRefused (the ledger's schema in force
        refuses it: the rule's code, nothing stored, the key stays free for a corrected request),
        IdempotencyKeyReused (the key was used for a different request) and Unavailable (the database cannot be reached and the cache does
        not know the key: nothing was accepted, the same request may be retried).
        """
        submission = validate_submission(command, default_currency=self.default_currency)
        fingerprint = submission.fingerprint()
        key = submission.idempotency_key
        accepted_at = datetime.now(UTC)
        request = NewRequest(
            submission,
            fingerprint,
            message_id=str(uuid.uuid4()),
            accepted_at=accepted_at,
            expires_at=accepted_at + timedelta(seconds=self.ttl_seconds),
            message_group=message_group_for(submission.source_account_id, self.message_groups),
        )
        try:
            recorded = await self._commits.record(request)
        except Unavailable:
            cached = await self.cache.get(key)
            if cached is None:
                raise
            return self._replay(key, cached, fingerprint)
        if recorded.created:
            return Acceptance(key, request.message_id, request.expires_at, replayed=False)
        if recorded.binding is None:  # only possible if the row was purged in between
            raise UnknownTransaction(f"no transaction with idempotencyKey {key!r}")
        return self._replay(key, recorded.binding, fingerprint)

    @staticmethod
    def _replay(key: str, binding: KeyBinding, fingerprint: str) -> Acceptance:
        if binding.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                f"idempotencyKey {key!r} was already used with a different request",
                field="idempotencyKey",
            )
        return Acceptance(key, binding.message_id, binding.expires_at, replayed=True)

    async def status(self, idempotency_key: str) -> StoredRequest:
        """Raises InvalidSubmission (malformed key) and UnknownTransaction (nothing accepted under it)."""
        validate_idempotency_key(idempotency_key)
        stored = await self.store.get(idempotency_key)
        if stored is None:
            raise UnknownTransaction(f"no transaction with idempotencyKey {idempotency_key!r}", field="idempotencyKey")
        return stored

    async def pending(self, account_id: str, older_than_seconds: int, limit: int) -> list[PendingRequest]:
        """Requests still waiting for the ledger past an age. Raises InvalidSubmission (bad account id,
        age out of 0-MAX_AGE_SECONDS, limit out of 0-1000)."""
        if account_id:
            validate_account_id(account_id, "accountId")
        if not 0 <= older_than_seconds <= MAX_AGE_SECONDS:
            raise InvalidSubmission(
                f"olderThanSeconds must be between 0 and {MAX_AGE_SECONDS} (a century)",
                field="olderThanSeconds",
                code="INVALID_AGE",
            )
        if not 0 <= limit <= 1000:
            raise InvalidSubmission("limit must be between 1 and 1000", field="limit", code="INVALID_LIMIT")
        before = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        return await self.store.pending(account_id or None, before, limit or 100)

    async def record_outcomes(self, outcomes: Sequence[TransferOutcome]) -> int:
        return await self.store.record_outcomes(outcomes)

    async def purge_expired(self, batch: int = 1000) -> int:
        """Forgets keys past their retention whose outcome is known; returns how many went.

        A request still PROCESSING is kept however old it is: its key is what makes a retry safe.
        The ledger keeps transfer ids for ever, so a key reused after its purge cannot post twice.
        """
        total = 0
        while (purged := await self.store.purge_expired(datetime.now(UTC), batch)) > 0:
            total += purged
            if purged < batch:
                break
        if total:
            log.info("purged expired idempotency keys", extra={"fields": {"count": total}})
        return total
