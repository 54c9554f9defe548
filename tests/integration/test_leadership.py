"""Against real PostgreSQL: a job run under leadership runs in one of several processes (here: two
engines, two connection pools), moves to another when its leader stops, and is given up by a leader
whose lock connection dies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import create_engine
from services.kernel.leadership import Job, leadership_key, run_while_leader

pytestmark = pytest.mark.integration


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    pair = [create_engine(database_url, "public", pool_size=2) for _ in range(2)]
    yield pair
    for engine in pair:
        await engine.dispose()


class Contenders:
    """Two contenders for one job; records who runs it and whether two ever ran at once."""

    def __init__(self, engines: list[AsyncEngine]) -> None:
        self.name = f"it-leadership-{uuid.uuid4().hex[:8]}"
        self.running: list[int] = []
        self.overlaps = 0
        self.stops = [asyncio.Event() for _ in engines]
        self.tasks = [
            asyncio.create_task(
                run_while_leader(engine, self.name, self._job(i), self.stops[i], retry_seconds=0.1, check_seconds=0.2)
            )
            for i, engine in enumerate(engines)
        ]

    def _job(self, index: int) -> Job:
        async def job(resign: asyncio.Event) -> None:
            self.running.append(index)
            self.overlaps += len(self.running) > 1
            try:
                await resign.wait()
            finally:
                self.running.remove(index)

        return job

    async def wait_for(self, condition: Callable[[], bool], within: float = 5) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert time.monotonic() < deadline, f"still running: {self.running}"
            await asyncio.sleep(0.05)

    async def stop_all(self) -> None:
        for stop in self.stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 5)


async def test_one_contender_leads_and_the_other_takes_over_when_it_stops(engines: list[AsyncEngine]) -> None:
    contenders = Contenders(engines)
    try:
        await contenders.wait_for(lambda: len(contenders.running) == 1)
        await asyncio.sleep(0.5)  # several retries of the other contender meanwhile
        (leader,) = contenders.running
        contenders.stops[leader].set()
        await asyncio.wait_for(contenders.tasks[leader], 5)
        await contenders.wait_for(lambda: contenders.running == [1 - leader])
    finally:
        await contenders.stop_all()
    assert contenders.overlaps == 0
    assert contenders.running == []


async def test_a_leader_whose_lock_connection_dies_gives_the_job_up(engines: list[AsyncEngine]) -> None:
    contenders = Contenders(engines)
    try:
        await contenders.wait_for(lambda: len(contenders.running) == 1)
        (leader,) = contenders.running
        key = leadership_key(contenders.name)
        async with engines[1 - leader].begin() as conn:
            killed = (
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND classid = CAST((CAST(:k AS bigint) >> 32) & 4294967295 AS oid)"
                        " AND objid = CAST(CAST(:k AS bigint) & 4294967295 AS oid)"
                    ),
                    {"k": key},
                )
            ).all()
        assert len(killed) == 1
        # The other contender takes the lock; the old leader notices at its next check and resigns.
        await contenders.wait_for(lambda: contenders.running == [1 - leader])
    finally:
        await contenders.stop_all()
