"""Nothing answered 202 is lost: with the SQS server down, requests are still accepted (the outbox
holds them); once it is back, each is posted exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.devstack.stack import Stack
from tests.conftest import start_stack
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH, seed_body

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def outage_stack(server_database_url: str, redis_url: str, state_dir: Path) -> Iterator[Stack]:
    """A stack of its own: this test takes its SQS server away."""
    running = start_stack(server_database_url, redis_url, state_dir)
    try:
        yield running
    finally:
        running.stop()


def test_requests_accepted_while_sqs_is_down_are_all_posted_once_it_is_back(outage_stack: Stack) -> None:
    stack = outage_stack
    run = uuid.uuid4().hex[:8]
    keys = [f"outage-{run}-{i:03d}" for i in range(100)]
    payers = [f"outage-payer-{run}-{i % 10}" for i in range(100)]

    port = stack.stop_sqs()
    try:
        async def submit_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
                return await asyncio.gather(*(
                    c.post("/api/v1/transactions", json=seed_body(key, payer, f"outage-payee-{run}", "1.00"))
                    for key, payer in zip(keys, payers, strict=True)))

        responses = asyncio.run(submit_all())
        assert [r.status_code for r in responses] == [202] * 100, [r.text for r in responses if r.status_code != 202]
        with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
            ready = c.get("/api/v1/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "NOT_READY"
            assert ready.json()["components"]["queue"].startswith("unavailable")
            assert {c.get(f"/api/v1/transactions/status/{k}").json()["status"] for k in keys[:5]} == {"PROCESSING"}
        pending = fetch(stack, "SELECT count(*) AS n FROM ingest.outbox WHERE published_at IS NULL"
                               " AND idempotency_key LIKE $1", f"outage-{run}-%")[0]["n"]
        assert pending == 100  # durable in PostgreSQL, waiting for SQS
    finally:
        stack.restart_sqs(port)

    deadline = time.monotonic() + 90
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
        while time.monotonic() < deadline:
            statuses = fetch(stack, "SELECT status, count(*) AS n FROM ingest.requests WHERE idempotency_key LIKE $1"
                                    " GROUP BY status", f"outage-{run}-%")
            if {r["status"]: r["n"] for r in statuses} == {"COMPLETED": 100}:
                break
            time.sleep(0.5)
        assert {r["status"]: r["n"] for r in statuses} == {"COMPLETED": 100}
        assert c.get(f"/api/v1/accounts/outage-payee-{run}/balance").json()["balance"] == "100.00"
    counts = fetch(stack, "SELECT count(*) AS transfers, count(DISTINCT id) AS distinct_ids,"
                          " (SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE $1) AS entries"
                          " FROM ledger.transfers WHERE id LIKE $1", f"outage-{run}-%")[0]
    assert (counts["transfers"], counts["distinct_ids"], counts["entries"]) == (100, 100, 200)
