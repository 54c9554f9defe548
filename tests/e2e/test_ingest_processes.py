"""INGEST_PROCESSES=2: the local stack runs two ingest processes, both endpoints of Envoy's ingest
cluster. Requests through Envoy reach both, each transfer is applied exactly once under concurrency,
and stopping the stack stops every process."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid

import httpx
import pytest

from services.devstack.stack import Stack

# The exactly-once checks of one key under concurrency, run here against two processes (this module's
# `stack`): 50 concurrent requests with one key, spread over both, still make one row and one posting.
from tests.e2e.test_ingest_guarantees import (  # noqa: F401  (fixture and test collected with this module's stack)
    client,
    fetch,
    test_fifty_concurrent_requests_with_one_key_move_money_once,
)
from tests.e2e.test_rest_flow import AUTH, seed_body

pytestmark = pytest.mark.e2e
TRANSFERS = 300
CONNECTIONS = 32


@pytest.fixture(scope="module")
def stack(two_ingest_stack: Stack) -> Stack:
    """The e2e package's stack started with INGEST_PROCESSES=2 (tests/e2e/conftest.py)."""
    return two_ingest_stack


def requests_per_upstream(stack: Stack, cluster: str) -> dict[str, int]:
    """Envoy's own count of requests sent to each endpoint of `cluster` (admin /clusters)."""
    assert stack.envoy is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy.admin_port}/clusters", timeout=5) as response:
        lines = response.read().decode().splitlines()
    counts = {}
    for line in lines:  # e.g. "ingest::127.0.0.1:50051::rq_total::12"
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "rq_total":
            counts[parts[1]] = int(parts[3])
    return counts


def test_the_stack_runs_two_ingest_processes_each_serving_on_its_own_port(stack: Stack) -> None:
    assert stack.ingest_names == ["ingest", "ingest-2"]
    processes = [stack.children[name].process for name in stack.ingest_names]
    assert len({p.pid for p in processes}) == 2
    assert all(p.poll() is None for p in processes)
    assert len(set(stack.ingest_addresses)) == 2
    assert set(requests_per_upstream(stack, "ingest")) == set(stack.ingest_addresses)


def test_concurrent_transfers_through_envoy_reach_both_processes_and_post_exactly_once(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    before = requests_per_upstream(stack, "ingest")
    keys = [f"procs-{run}-{i}" for i in range(TRANSFERS)]

    async def submit_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30, limits=limits) as c:
            gate = asyncio.Semaphore(CONNECTIONS)

            async def submit(i: int) -> httpx.Response:
                async with gate:
                    body = seed_body(keys[i], f"procs-src-{run}-{i % 7}", f"procs-dst-{run}-{i % 5}", "1.00")
                    return await c.post("/api/v1/transactions", json=body)

            return await asyncio.gather(*(submit(i) for i in range(TRANSFERS)))

    responses = asyncio.run(submit_all())
    assert [r.status_code for r in responses] == [202] * TRANSFERS, [r.text for r in responses if r.status_code != 202]
    assert not any(json.loads(r.text)["replayed"] for r in responses)

    after = requests_per_upstream(stack, "ingest")
    served = {address: after[address] - before.get(address, 0) for address in stack.ingest_addresses}
    assert all(count > 0 for count in served.values()), served  # both processes took requests
    assert sum(served.values()) >= TRANSFERS

    deadline = time.monotonic() + 60
    while True:
        (row,) = fetch(
            stack,
            "SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS completed, count(*) AS requests"
            " FROM ingest.requests WHERE idempotency_key LIKE $1",
            f"procs-{run}-%",
        )
        if row["completed"] == TRANSFERS or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert (row["requests"], row["completed"]) == (TRANSFERS, TRANSFERS)
    (ledger,) = fetch(
        stack,
        "SELECT (SELECT count(*) FROM ledger.transfers WHERE id LIKE $1) AS transfers,"
        " (SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE $1) AS entries,"
        " (SELECT count(*) FROM ingest.outbox WHERE idempotency_key LIKE $1) AS outbox",
        f"procs-{run}-%",
    )
    assert (ledger["transfers"], ledger["entries"], ledger["outbox"]) == (TRANSFERS, 2 * TRANSFERS, TRANSFERS)


@pytest.mark.stops_shared_stack
def test_stopping_the_stack_stops_every_process(stack: Stack) -> None:
    """Runs after every other e2e test (`stops_shared_stack`): it stops the shared stack, processes
    restarted by test_sigterm_drain included (the fixture's stop is then a no-op)."""
    children = list(stack.children.values())
    assert stack.envoy is not None
    children.append(stack.envoy.child)
    stack.stop()
    assert [c.name for c in children if c.process.poll() is None] == []
