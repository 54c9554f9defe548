"""SQS failing in both ways: with the server down, requests are still accepted (the outbox holds
them), the health of the processes that need the queue (ingest, the worker) says NOT_SERVING, and each request is posted exactly once when it is
back; a message that keeps failing ends in the dead-letter queue with its request FAILED and its
batch-mates posted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack.processes import wait_until
from services.devstack.stack import Stack
from tests.chaos.faults import health_target
from tests.conftest import StackStops, start_stack
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH, seed_body

pytestmark = pytest.mark.e2e
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


# Which processes need the queue to serve: ingest (its readiness names the queue, as /api/v1/ready does)
# and the worker (it does nothing else). The ledger and reconciliation serve their calls from the
# database; their events wait in the outbox or the queue.
NEED_THE_QUEUE = ["ingest", "ledger-worker"]
SERVE_WITHOUT_IT = ["ledger", "reconciliation"]
PROCESSES = [*NEED_THE_QUEUE, *SERVE_WITHOUT_IT]


def health_of(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


def wait_for_health(stack: Stack, name: str, status: int, seconds: float = 30) -> None:
    address, service = health_target(stack, name)
    wait_until(lambda: health_of(address, service) == status, timeout=seconds, what=f"{name} health {status}")


@pytest.fixture(scope="module")
def outage_stack(server_database_url: str, redis_url: str, state_dir: Path, stack_stops: StackStops) -> Iterator[Stack]:
    """A stack of its own: these tests take its SQS server away, and want redeliveries within seconds."""
    running = start_stack(server_database_url, redis_url, state_dir, {"PAYRECON_SQS_VISIBILITY_SECONDS": "2"})
    try:
        yield running
    finally:
        stack_stops.stop(running)


def test_requests_accepted_while_sqs_is_down_are_all_posted_once_it_is_back(outage_stack: Stack) -> None:
    stack = outage_stack
    run = uuid.uuid4().hex[:8]
    keys = [f"outage-{run}-{i:03d}" for i in range(100)]
    payers = [f"outage-payer-{run}-{i % 10}" for i in range(100)]

    port = stack.stop_sqs()
    try:

        async def submit_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
                return await asyncio.gather(
                    *(
                        c.post("/api/v1/transactions", json=seed_body(key, payer, f"outage-payee-{run}", "1.00"))
                        for key, payer in zip(keys, payers, strict=True)
                    )
                )

        responses = asyncio.run(submit_all())
        assert [r.status_code for r in responses] == [202] * 100, [r.text for r in responses if r.status_code != 202]
        with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
            ready = c.get("/api/v1/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "NOT_READY"
            assert ready.json()["components"]["queue"].startswith("unavailable")
            assert {c.get(f"/api/v1/transactions/status/{k}").json()["status"] for k in keys[:5]} == {"PROCESSING"}
        pending = fetch(
            stack,
            "SELECT count(*) AS n FROM ingest.outbox WHERE published_at IS NULL AND idempotency_key LIKE $1",
            f"outage-{run}-%",
        )[0]["n"]
        assert pending == 100  # durable in PostgreSQL, waiting for SQS
        # Those that need the queue say NOT_SERVING, while the process itself lives; the others
        # stay in rotation.
        for name in NEED_THE_QUEUE:
            wait_for_health(stack, name, NOT_SERVING)
            assert health_of(health_target(stack, name)[0], "") == SERVING
        for name in SERVE_WITHOUT_IT:
            assert health_of(*health_target(stack, name)) == SERVING
    finally:
        stack.restart_sqs(port)
    for name in PROCESSES:
        wait_for_health(stack, name, SERVING)

    deadline = time.monotonic() + 90
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
        while time.monotonic() < deadline:
            statuses = fetch(
                stack,
                "SELECT status, count(*) AS n FROM ingest.requests WHERE idempotency_key LIKE $1 GROUP BY status",
                f"outage-{run}-%",
            )
            if {r["status"]: r["n"] for r in statuses} == {"COMPLETED": 100}:
                break
            time.sleep(0.5)
        assert {r["status"]: r["n"] for r in statuses} == {"COMPLETED": 100}
        assert c.get(f"/api/v1/accounts/outage-payee-{run}/balance").json()["balance"] == "100.00"
    counts = fetch(
        stack,
        "SELECT count(*) AS transfers, count(DISTINCT id) AS distinct_ids,"
        " (SELECT count(*) FROM ledger.entries WHERE transfer_id LIKE $1) AS entries"
        " FROM ledger.transfers WHERE id LIKE $1",
        f"outage-{run}-%",
    )[0]
    assert (counts["transfers"], counts["distinct_ids"], counts["entries"]) == (100, 100, 200)


def test_a_message_that_keeps_failing_reaches_the_dead_letter_queue_and_its_request_is_failed(
    outage_stack: Stack,
) -> None:
    from payrecon.common.v1 import money_pb2
    from payrecon.ledger.v1 import messages_pb2

    from services.kernel.sqs import OutgoingMessage, SqsClient

    stack = outage_stack
    run = uuid.uuid4().hex[:8]
    good, poison, malformed = f"dlq-good-{run}", f"dlq-poison-{run}", f"dlq-malformed-{run}"
    # The ledger validates what it posts, so no well-formed transfer is refused by the database any
    # more: the poison is one the database is made to refuse (as a full disk would), every time.
    for statement in (
        "CREATE OR REPLACE FUNCTION ledger.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.id LIKE 'dlq-poison-%' AND NEW.status <> 'REJECTED' THEN"
        " RAISE EXCEPTION 'refused for the test: %', NEW.id; END IF; RETURN NEW; END $$",
        "CREATE OR REPLACE TRIGGER refuse_poison BEFORE INSERT ON ledger.transfers"
        " FOR EACH ROW EXECUTE FUNCTION ledger.refuse_poison()",
    ):
        fetch(stack, statement)
    # All three as ingest accepted them, put on the queue directly, as a message from an older or
    # foreign producer would arrive: ingest itself refuses NUL in metadata.
    for key in (good, poison, malformed):
        fetch(
            stack,
            "INSERT INTO ingest.requests (idempotency_key, fingerprint, message_id, source_account_id,"
            " destination_account_id, amount_minor, currency, expires_at)"
            " VALUES ($1, 'test', gen_random_uuid(), $2, $3, 100, 'USD', now() + interval '1 day')",
            key,
            f"dlq-a-{run}",
            f"dlq-b-{run}",
        )
    batch = messages_pb2.TransferBatch(
        transfers=[
            messages_pb2.TransferRequest(
                transfer_id=key,
                debit_account_id=f"dlq-a-{run}",
                credit_account_id=f"dlq-b-{run}",
                amount=money_pb2.Money(minor_units=100, currency="USD"),
                metadata={"note": "nul\x00byte"} if key == malformed else {},
            )
            for key in (good, poison, malformed)
        ]
    )

    async def send() -> None:
        async with SqsClient.connect(endpoint_url=stack.env["PAYRECON_SQS_ENDPOINT_URL"], region="us-east-1") as sqs:
            await sqs.send_batch(
                stack.env["PAYRECON_TRANSFERS_QUEUE"],
                [OutgoingMessage(batch.SerializeToString(), f"dlq-{run}", f"dlq-{run}", {})],
            )

    asyncio.run(send())
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=10) as c:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            failed = c.get(f"/api/v1/transactions/status/{poison}").json()
            stats = c.get("/api/v1/queue/stats").json()
            if failed["status"] == "FAILED" and stats["dlqMessageCount"] >= 1:
                break
            time.sleep(0.5)
        assert failed["status"] == "FAILED", failed
        assert failed["error"]["code"] == "LEDGER_POSTING_FAILED"
        assert stats["dlqMessageCount"] >= 1, stats  # visible to operators, kept for a redrive
        assert c.get(f"/api/v1/transactions/status/{good}").json()["status"] == "COMPLETED"
        refused = c.get(f"/api/v1/transactions/status/{malformed}").json()  # refused at once, by rule
        assert (refused["status"], refused["error"]["code"]) == ("FAILED", "INVALID_METADATA"), refused
        assert c.get(f"/api/v1/accounts/dlq-b-{run}/balance").json()["balance"] == "1.00"  # the good one, once
