"""Open-loop load: POST /api/v1/transactions at a fixed arrival rate, whatever the answers' pace.

Request i is due at start + i/rate. It goes out on an idle keep-alive connection (a new one while
fewer than `max_connections` are open; otherwise it waits for one), and its accept latency counts
from when it was due, so a slow server is not hidden by a client that slows down with it (no
coordinated omission). Afterwards ingest's own columns give accept → COMPLETED, and the count of
requests still PROCESSING, sampled through the run and after it, tells whether the backlog drains."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from tests.bench.http_load import Connection
from tests.bench.post_latency import AUTH, percentile

FALL_BEHIND_SECONDS = 10.0  # stop when this many seconds of arrivals wait for a connection (the server cannot keep up)
DRAIN_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class OpenLoopFigures:
    rate: int
    seconds: float  # planned
    sent: int
    planned: int
    accepted: int
    errors: int
    accept_p50_ms: float
    accept_p99_ms: float
    accept_max_ms: float
    completed: int
    failed: int
    completed_p50_ms: float
    completed_p99_ms: float
    completed_max_ms: float
    peak_processing: int
    drain_seconds: float | None  # from the last arrival until nothing of the run is PROCESSING
    connections: int

    @property
    def drained(self) -> bool:
        return self.drain_seconds is not None


def _body(run: str, n: int, accounts: int) -> dict[str, object]:
    source = (n * 31) % accounts
    return {
        "transaction": {
            "source_account_id": f"{run}-{source}",
            "destination_account_id": f"{run}-{(source * 7 + 1) % accounts}-in",
            "amount": 100.00,
        },
        "idempotencyKey": f"{run}-{n}",
    }


async def _processing(conn: asyncpg.Connection) -> int:
    # Partial index requests_processing: cheap however many requests are done.
    return int(await conn.fetchval("SELECT count(*) FROM ingest.requests WHERE status = 'PROCESSING'"))


async def open_loop(
    base_url: str,
    database_url: str,
    *,
    rate: int,
    seconds: float,
    max_connections: int = 256,
    accounts: int = 500,
) -> OpenLoopFigures:
    run = f"ol{rate}-{uuid.uuid4().hex[:6]}"
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened: list[Connection] = []
    latencies: list[float] = []
    errors = 0
    planned = int(rate * seconds)
    db = await asyncpg.connect(database_url)
    peak = await _processing(db)

    slots = max_connections

    async def connection() -> Connection:
        nonlocal slots
        if idle.empty() and slots > 0:
            slots -= 1
            try:
                opened.append(await Connection.open(host, port, AUTH))
            except OSError:
                slots += 1
                raise
            return opened[-1]
        return await idle.get()

    queued = 0  # due, but waiting for a free connection

    async def send(n: int, due: float) -> None:
        nonlocal errors, slots, queued
        try:
            conn = await connection()
        except OSError:
            errors += 1
            return
        finally:
            queued -= 1
        try:
            answer = await conn.request("POST", "/api/v1/transactions", _body(run, n, accounts))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            opened.remove(conn)
            slots += 1
            return
        idle.put_nowait(conn)
        if answer.status == 202:
            latencies.append(time.perf_counter() - due)
        else:
            errors += 1

    async def sample_backlog(stop: asyncio.Event) -> None:
        nonlocal peak
        own = await asyncpg.connect(database_url)  # the drain below polls on `db` meanwhile
        try:
            while not stop.is_set():
                peak = max(peak, await _processing(own))
                await asyncio.sleep(1)
        finally:
            await own.close()

    sampling_stopped = asyncio.Event()
    sampler = asyncio.create_task(sample_backlog(sampling_stopped))
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    sent = 0
    try:
        while sent < planned:
            now = time.perf_counter()
            due_now = min(planned, int((now - start) * rate) + 1)
            if queued > rate * FALL_BEHIND_SECONDS:
                break
            while sent < due_now:
                queued += 1
                tasks.append(asyncio.create_task(send(sent, start + sent / rate)))
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        last_arrival = start + sent / rate
        # Drain: until no request is PROCESSING (this database is the bench's own).
        drain: float | None = None
        deadline = time.perf_counter() + DRAIN_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            waiting = await _processing(db)
            peak = max(peak, waiting)
            if waiting == 0:
                drain = max(0.0, time.perf_counter() - last_arrival)
                break
            await asyncio.sleep(0.1)
        sampling_stopped.set()
        await sampler
        row = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed,"
            " count(*) FILTER (WHERE status = 'FAILED') AS failed,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY completed_at - accepted_at) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY completed_at - accepted_at) AS p99,"
            " max(completed_at - accepted_at) AS worst"
            " FROM ingest.requests WHERE idempotency_key LIKE $1 AND completed_at IS NOT NULL",
            f"{run}-%",
        )
    finally:
        sampling_stopped.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(sampler, *tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
        await db.close()
    ordered = sorted(x * 1000 for x in latencies) or [0.0]

    def ms(value: object) -> float:
        return value.total_seconds() * 1000 if value is not None else float("nan")  # type: ignore[attr-defined]

    return OpenLoopFigures(
        rate,
        seconds,
        sent,
        planned,
        len(latencies),
        errors,
        statistics.median(ordered),
        percentile(ordered, 0.99),
        ordered[-1],
        row["completed"],
        row["failed"],
        ms(row["p50"]),
        ms(row["p99"]),
        ms(row["worst"]),
        peak,
        drain,
        len(opened),
    )
