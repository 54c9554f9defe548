"""Runs a background job in one process of many: the one holding a PostgreSQL advisory lock.

Leadership saves cost, it never carries correctness: a job run this way must stay safe when two copies
run at once (a leader cut off from the database runs on until its next check while another takes
over). The lock is a session lock held on a connection of its own, checked every few seconds; a
leader that dies releases it with its connection, and another process takes over within
`retry_seconds`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.runtime import sleep_or_stop

log = logging.getLogger(__name__)

Job = Callable[[asyncio.Event], Awaitable[object]]


def leadership_key(name: str) -> int:
    """The advisory lock (bigint) standing for `name`."""
    return int.from_bytes(hashlib.sha256(f"leadership:{name}".encode()).digest()[:8], "big", signed=True)


async def _lead(conn: AsyncConnection, job: Job, stop: asyncio.Event, check_seconds: float) -> None:
    """Runs `job` until `stop` is set or the lock's connection fails a check."""
    resign = asyncio.Event()

    async def hold() -> None:
        while not resign.is_set():
            await sleep_or_stop(stop, check_seconds)
            if stop.is_set():
                break
            try:
                await conn.execute(text("SELECT 1"))
                await conn.commit()
            except Exception as error:
                log.warning("lost the database connection holding leadership", extra={"fields": {"error": repr(error)}})
                break
        resign.set()

    holder = asyncio.create_task(hold())
    try:
        await job(resign)
    finally:
        resign.set()
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


async def run_while_leader(
    engine: AsyncEngine,
    name: str,
    job: Job,
    stop: asyncio.Event,
    *,
    retry_seconds: float = 1.0,
    check_seconds: float = 2.0,
) -> None:
    """Until `stop` is set: runs `job(resign)` while this process leads `name`, and otherwise tries
    to lead every `retry_seconds`. `resign` is set when `stop` is, or when leadership is lost."""
    key = leadership_key(name)
    while not stop.is_set():
        try:
            async with engine.connect() as conn:
                leading = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar())
                await conn.commit()  # never idle in a transaction while leading
                if leading:
                    log.info("leading", extra={"fields": {"job": name}})
                    try:
                        await _lead(conn, job, stop, check_seconds)
                    finally:
                        try:
                            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                            await conn.commit()
                        except Exception:
                            await conn.invalidate()  # closing the connection releases the lock
                    log.info("no longer leading", extra={"fields": {"job": name}})
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("leadership check failed", extra={"fields": {"job": name, "error": repr(error)}})
        await sleep_or_stop(stop, retry_seconds)
