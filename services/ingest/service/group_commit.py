"""Group commit of submissions: concurrent callers are gathered and recorded, with their outbox rows,
in one statement and one transaction; each caller then awaits its own answer. One round trip and one
WAL flush serve many requests, as PostgreSQL's own group commit does for transactions. With a schema
gate, a batch is first checked against the ledger's schema in one call; refused requests are answered
with the rule and never written."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TypeAlias

from services.ingest.domain.errors import SchemaRefused
from services.ingest.service.ports import IdempotencyCache, NewRequest, Recorded, RequestStore
from services.ingest.service.schema_gate import SchemaGate

log = logging.getLogger(__name__)

# Callers waiting for one batch, by key in arrival order: the first request of a key is the one
# written; the others with that key are answered from its outcome (a replay or a conflict).
Waiting: TypeAlias = dict[str, list[tuple[NewRequest, asyncio.Future[Recorded]]]]
# What each write (the store's, then the cache's) runs inside, given the requests it writes: the
# wiring passes a tracing span; nothing by default.
AroundWrite: TypeAlias = Callable[[Sequence[NewRequest]], AbstractContextManager[object]]


class GroupCommit:
    """Gathers concurrent `record` calls into batches.

    A batch is written as soon as the previous write is done (nothing is in flight: at the end of the
    current turn of the event loop, with whatever else arrived in it), or when it holds `max_rows`
    keys, or `window_seconds` after its first arrival while earlier writes are still running. So a
    lone caller waits for nobody, and under load a batch holds what arrived during one write. At
    most `max_writes` writes run at once (each holds a pooled connection); what arrives beyond that
    goes, `max_rows` keys at a time, as they finish.
    """

    def __init__(
        self,
        store: RequestStore,
        cache: IdempotencyCache,
        *,
        window_seconds: float = 0.005,
        max_rows: int = 256,
        max_writes: int = 2,
        around_write: AroundWrite = lambda requests: contextlib.nullcontext(),
        schema_gate: SchemaGate | None = None,
    ) -> None:
        if window_seconds < 0 or max_rows < 1 or max_writes < 1:
            raise ValueError("window_seconds must be ≥ 0, max_rows and max_writes ≥ 1")
        self._store = store
        self._cache = cache
        self._window = window_seconds
        self._max_rows = max_rows
        self._max_writes = max_writes
        self._around_write = around_write
        self._schema_gate = schema_gate
        self._waiting: Waiting = {}
        self._scheduled: asyncio.Handle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def record(self, request: NewRequest) -> Recorded:
        """The store's answer for `request`, once its batch is committed (and its keys are in the
        cache). A second request with a key already waiting in the batch gets Recorded(created=False)
        with the binding of the first. Raises SchemaRefused when the schema in force refuses a new key's
        request (nothing written), and what writing the batch raised — Unavailable when the database
        cannot be reached — for every caller of that batch: nobody in it is accepted."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Recorded] = loop.create_future()
        self._waiting.setdefault(request.submission.idempotency_key, []).append((request, answer))
        if len(self._waiting) >= self._max_rows and len(self._writes) < self._max_writes:
            self._flush()
        elif self._scheduled is None:
            if self._writes:
                self._scheduled = loop.call_later(self._window, self._flush)
            else:
                self._scheduled = loop.call_soon(self._flush)
        return await answer

    def _flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        while self._waiting and len(self._writes) < self._max_writes:
            keys = list(itertools.islice(self._waiting, self._max_rows))
            batch = {key: self._waiting.pop(key) for key in keys}
            # An empty context: the writing task must not run in (and leak) one caller's trace or principal.
            write = asyncio.get_running_loop().create_task(self._write(batch), context=contextvars.Context())
            self._writes.add(write)
            write.add_done_callback(self._written)

    async def _screened(self, gate: SchemaGate, batch: Waiting) -> Waiting:
        """The batch less the requests the schema in force refuses; their callers get the refusal now.
        A refused key already recorded stays in: its caller gets the original answer (a replay, or
        IDEMPOTENCY_KEY_REUSED), as the key's first request was accepted before. That lookup happens
        only for refusals, which are rare."""
        refusals = await gate.refusals([callers[0][0].submission for callers in batch.values()])
        refused = {key: refusal for key, refusal in zip(batch, refusals, strict=True) if refusal is not None}
        for key, refusal in refused.items():
            if await self._store.get(key) is not None:
                continue
            for _, answer in batch.pop(key):
                if not answer.done():
                    answer.set_exception(SchemaRefused(refusal.message, code=refusal.code, field="transaction"))
        return batch

    def _written(self, write: asyncio.Task[None]) -> None:
        self._writes.discard(write)
        if self._waiting:  # they waited for this write: their turn
            self._flush()

    async def _write(self, batch: Waiting) -> None:
        if self._schema_gate is not None:
            try:
                batch = await self._screened(self._schema_gate, batch)
            except asyncio.CancelledError:
                _cancel_answers(batch)
                raise
            except Exception as error:
                _fail_answers(batch, error)
                return
            if not batch:
                return
        firsts = [callers[0][0] for callers in batch.values()]
        with self._around_write(firsts):
            await self._write_firsts(batch, firsts)

    async def _write_firsts(self, batch: Waiting, firsts: list[NewRequest]) -> None:
        try:
            recorded = await self._store.record_requests(firsts)
        except asyncio.CancelledError:
            _cancel_answers(batch)
            raise
        except Exception as error:
            _fail_answers(batch, error)
            return
        bindings = {r.submission.idempotency_key: outcome.binding for r, outcome in zip(firsts, recorded, strict=True)}
        try:
            # After the commit, before any answer: from the 202 on, the fast path knows the key.
            await self._cache.put_many({key: binding for key, binding in bindings.items() if binding is not None})
        except Exception:
            log.warning("idempotency cache write failed", exc_info=True)
        for (key, callers), outcome in zip(batch.items(), recorded, strict=True):
            for n, (_, answer) in enumerate(callers):
                if not answer.done():
                    answer.set_result(outcome if n == 0 else Recorded(created=False, binding=bindings[key]))


def _cancel_answers(batch: Waiting) -> None:
    for callers in batch.values():
        for _, answer in callers:
            answer.cancel()


def _fail_answers(batch: Waiting, error: Exception) -> None:
    for callers in batch.values():
        for _, answer in callers:
            if not answer.done():
                answer.set_exception(error)
