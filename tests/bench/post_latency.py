"""Latency of POST /api/v1/transactions through Envoy with 32 concurrent clients (each waits for its
answer before sending again), on a running stack. Measures the write path up to the 202: validation,
the group commit of request + outbox row in PostgreSQL (shared with concurrent requests), the key's Redis
write."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.bench.http_load import Connection

AUTH = {"Authorization": "Bearer demo-token-for-testing"}


@dataclass(frozen=True)
class LatencyFigures:
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def measure_post_latency(
    base_url: str, *, clients: int = 32, per_client: int = 125, accounts: int = 500, seconds: float | None = None
) -> LatencyFigures:
    """Closed loop: `per_client` requests per client, or as many as fit in `seconds` when given."""
    run = uuid.uuid4().hex[:8]
    url = urlsplit(base_url)
    connections = [await Connection.open(url.hostname or "127.0.0.1", url.port or 80, AUTH) for _ in range(clients)]

    async def post(connection: Connection, key: str, n: int) -> float:
        body = {
            "transaction": {
                "source_account_id": f"bench-{run}-{n % accounts}",
                "destination_account_id": f"bench-{run}-{(n * 7 + 1) % accounts}-in",
                "amount": "1.00",
            },
            "idempotencyKey": key,
        }
        started = time.perf_counter()
        answer = await connection.request("POST", "/api/v1/transactions", body)
        elapsed = time.perf_counter() - started
        if answer.status != 202:
            raise RuntimeError(f"POST answered {answer.status}: {answer.body!r}")
        return elapsed

    async def client_loop(c: int, prefix: str, count: int, until: float | None = None) -> list[float]:
        if until is None:
            return [await post(connections[c], f"{prefix}-{run}-{c}-{i}", c * count + i) for i in range(count)]
        done: list[float] = []
        while time.perf_counter() < until:
            done.append(await post(connections[c], f"{prefix}-{run}-{c}-{len(done)}", c * 1_000_000 + len(done)))
        return done

    try:
        await asyncio.gather(*(client_loop(c, "warm", 5) for c in range(clients)))
        started = time.perf_counter()
        until = None if seconds is None else started + seconds
        results = await asyncio.gather(*(client_loop(c, "lat", per_client, until) for c in range(clients)))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    latencies = sorted(x * 1000 for r in results for x in r)
    return LatencyFigures(
        clients, len(latencies), seconds, statistics.median(latencies), percentile(latencies, 0.99), latencies[-1]
    )
