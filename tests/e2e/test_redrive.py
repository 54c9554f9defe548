"""Nothing accepted is lost: requests whose messages the SQS server lost after they were published
(a purged queue, a local server restarted empty) stay PROCESSING only until the redrive age, then are
re-published from the ingest schema and posted exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiobotocore.session import get_session

from services.devstack.stack import Stack
from tests.conftest import StackStops, start_stack
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome

pytestmark = pytest.mark.e2e
REDRIVE_AFTER_SECONDS = 10


@pytest.fixture(scope="module")
def redrive_stack(
    server_database_url: str, redis_url: str, state_dir: Path, sqs_endpoint: str, stack_stops: StackStops
) -> Iterator[Stack]:
    running = start_stack(
        server_database_url,
        redis_url,
        state_dir,
        {"INGEST_REDRIVE_AFTER_SECONDS": str(REDRIVE_AFTER_SECONDS)},
        sqs_url=sqs_endpoint,
    )
    try:
        yield running
    finally:
        stack_stops.stop(running)


def submit_all(stack: Stack, run: str, keys: list[str]) -> None:
    async def submit() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/api/v1/transactions",
                        json=seed_body(key, f"redrive-payer-{run}-{i % 10}", f"redrive-payee-{run}", "1.00"),
                    )
                    for i, key in enumerate(keys)
                )
            )

    responses = asyncio.run(submit())
    assert [r.status_code for r in responses] == [202] * len(keys), [r.text for r in responses if r.status_code != 202]


def statuses(stack: Stack, run: str) -> dict[str, int]:
    rows = fetch(
        stack,
        "SELECT status, count(*) AS n FROM ingest.requests WHERE idempotency_key LIKE $1 GROUP BY status",
        f"redrive-{run}-%",
    )
    return {r["status"]: r["n"] for r in rows}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached after {timeout:.0f}s")


def purge_transfers_queue(stack: Stack) -> None:
    """What an operator's PurgeQueue (or a local SQS server restarted empty) does to published messages."""

    async def purge() -> None:
        session = get_session()
        async with session.create_client(
            "sqs",
            region_name="us-east-1",
            endpoint_url=stack.env["PAYRECON_SQS_ENDPOINT_URL"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ) as sqs:
            url = (await sqs.get_queue_url(QueueName=stack.env["PAYRECON_TRANSFERS_QUEUE"]))["QueueUrl"]
            await sqs.purge_queue(QueueUrl=url)

    asyncio.run(purge())


def test_transfers_lost_by_sqs_after_publishing_are_redriven_and_posted_exactly_once(redrive_stack: Stack) -> None:
    stack = redrive_stack
    run = uuid.uuid4().hex[:8]
    keys = [f"redrive-{run}-{i:03d}" for i in range(100)]
    unpublished = (
        "SELECT count(*) AS n FROM ingest.outbox WHERE published_at IS NULL AND idempotency_key LIKE $1",
        f"redrive-{run}-%",
    )

    stack.stop_worker()  # so that nothing is posted before the queue loses the messages
    try:
        started = time.monotonic()
        submit_all(stack, run, keys)
        wait_for(lambda: fetch(stack, *unpublished)[0]["n"] == 0, 30, "outbox published")
        purge_transfers_queue(stack)
    finally:
        stack.start_worker()
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
        stats = c.get("/api/v1/queue/stats").json()
        # Nothing left anywhere that would deliver them: the queue is empty and the outbox published.
        assert (stats["messageCount"], stats["inFlightCount"], stats["outboxPending"]) == (0, 0, 0), stats
        time.sleep(1)
        assert time.monotonic() - started < REDRIVE_AFTER_SECONDS, "too slow to observe the stuck state"
        assert statuses(stack, run) == {"PROCESSING": 100}

        wait_for(lambda: statuses(stack, run) == {"COMPLETED": 100}, 60, "every request COMPLETED")
        assert time.monotonic() - started >= REDRIVE_AFTER_SECONDS  # the redrive did it, not a stray message
        counts = fetch(
            stack,
            "SELECT count(*) AS transfers, count(DISTINCT id) AS distinct_ids,"
            " (SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE $1) AS entries"
            " FROM ledger.transfers WHERE id LIKE $1",
            f"redrive-{run}-%",
        )[0]
        assert (counts["transfers"], counts["distinct_ids"], counts["entries"]) == (100, 100, 200)
        assert c.get(f"/api/v1/accounts/redrive-payee-{run}/balance").json()["balance"] == "100.00"
        redriven = fetch(
            stack,
            "SELECT count(*) AS n FROM ingest.requests WHERE idempotency_key LIKE $1 AND redrive_count >= 1",
            f"redrive-{run}-%",
        )[0]["n"]
        assert redriven == 100
        stats = c.get("/api/v1/queue/stats").json()
        assert stats["redriven"] >= 100, stats
        assert stats["stuck"] == 0, stats


def test_queue_stats_count_requests_stuck_past_the_redrive_age(redrive_stack: Stack) -> None:
    stack = redrive_stack
    run = uuid.uuid4().hex[:8]
    keys = [f"redrive-{run}-{i}" for i in range(5)]
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
        before = c.get("/api/v1/queue/stats").json()["redriven"]
        stack.stop_worker()  # the ledger is down: they stay PROCESSING past the age, even redriven
        try:
            submit_all(stack, run, keys)
            wait_for(lambda: c.get("/api/v1/queue/stats").json()["stuck"] >= 5, 60, "5 stuck")
            wait_for(lambda: c.get("/api/v1/queue/stats").json()["redriven"] >= before + 5, 60, "5 more redriven")
        finally:
            stack.start_worker()
        wait_for(lambda: statuses(stack, run) == {"COMPLETED": 5}, 60, "every request COMPLETED")
        assert c.get("/api/v1/queue/stats").json()["stuck"] == 0
        assert c.get(f"/api/v1/accounts/redrive-payee-{run}/balance").json()["balance"] == "5.00"  # once each


def test_a_request_whose_outcome_was_lost_gets_the_ledgers_original_outcome_again(redrive_stack: Stack) -> None:
    stack = redrive_stack
    run = uuid.uuid4().hex[:8]
    wallet, posted, refused = f"redrive-wallet-{run}", f"redrive-{run}-posted", f"redrive-{run}-refused"
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
        created = c.post(
            "/api/v1/accounts", json={"id": wallet, "currency": "USD", "type": "LIABILITY", "allowOverdraft": False}
        )
        assert created.status_code == 201, created.text
        for key, source in ((posted, f"redrive-payer-{run}"), (refused, wallet)):
            accepted = c.post("/api/v1/transactions", json=seed_body(key, source, f"redrive-payee-{run}", "1.00"))
            assert accepted.status_code == 202, accepted.text
        originals = {key: wait_for_outcome(c, key) for key in (posted, refused)}
        assert originals[posted]["status"] == "COMPLETED"
        assert originals[refused]["error"]["code"] == "LEDGER_INSUFFICIENT_FUNDS"

        # As if both outcome events were lost: ingest still waits, long past the redrive age.
        fetch(
            stack,
            "UPDATE ingest.requests SET status = 'PROCESSING', error_code = NULL, error_message = NULL,"
            " completed_at = NULL, accepted_at = accepted_at - interval '1 hour' WHERE idempotency_key = ANY($1)",
            [posted, refused],
        )
        assert statuses(stack, run) == {"PROCESSING": 2}
        wait_for(lambda: statuses(stack, run) == {"COMPLETED": 1, "FAILED": 1}, 60, "both outcomes told again")
        for key, original in originals.items():
            assert c.get(f"/api/v1/transactions/status/{key}").json() == original  # the same outcome, same time
        counts = fetch(
            stack,
            "SELECT count(*) AS transfers, (SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE $1) AS entries"
            " FROM ledger.transfers WHERE id LIKE $1",
            f"redrive-{run}-%",
        )[0]
        assert (counts["transfers"], counts["entries"]) == (2, 2)  # nothing posted a second time
        redrives = fetch(
            stack, "SELECT redrive_count AS n FROM ingest.requests WHERE idempotency_key = ANY($1)", [posted, refused]
        )
        assert [r["n"] for r in redrives] == [1, 1]
        assert c.get(f"/api/v1/accounts/redrive-payee-{run}/balance").json()["balance"] == "1.00"
