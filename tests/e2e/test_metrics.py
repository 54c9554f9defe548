"""Every process of the stack serves Prometheus metrics on its own port (PAYRECON_METRICS_ADDRESS),
and they move with real traffic: POSTs through Envoy (one a replay, one a conflict) show up as ingest's
SubmitTransaction requests by status code, as idempotency replays and conflicts, as postings in the
ledger worker; the queue, outbox and discrepancy gauges are there, read from SQS and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome
from tests.e2e.test_statements import camt053

pytestmark = pytest.mark.e2e

Samples = list[tuple[str, dict[str, str], float]]
SUBMIT = {"rpc_service": "payrecon.ingest.v1.IngestService", "rpc_method": "SubmitTransaction"}


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
        yield c


def scrape(address: str) -> Samples:
    response = httpx.get(f"http://{address}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def scrape_all(addresses: list[str]) -> Samples:
    return [sample for address in addresses for sample in scrape(address)]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    return sum(v for n, found, v in samples if n == name and labels.items() <= found.items())


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [labels for n, labels, _ in samples if n == name]


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout:.0f}s")
        time.sleep(0.2)


def test_every_process_serves_its_own_metrics_endpoint(stack: Stack) -> None:
    assert set(stack.metrics_addresses) == {*stack.addresses, "ledger-worker"}
    assert len(set(stack.metrics_addresses.values())) == len(stack.metrics_addresses)
    for name, address in stack.metrics_addresses.items():
        names = {n for n, _, _ in scrape(address)}
        assert "process_cpu_seconds_total" in names, name
        assert "target_info" in names, name


def test_posts_move_request_replay_conflict_and_posting_counters(client: httpx.Client, stack: Stack) -> None:
    # Every ingest process's endpoint: Envoy balances the POSTs over them.
    ingest = [stack.metrics_addresses[name] for name in stack.ingest_names]
    worker = stack.metrics_addresses["ledger-worker"]
    before_ingest, before_worker = scrape_all(ingest), scrape(worker)

    run = uuid.uuid4().hex[:8]
    keys = [f"metrics-{run}-{i}" for i in range(5)]
    for key in keys:
        assert client.post("/api/v1/transactions", json=seed_body(key)).status_code == 202
    replay = client.post("/api/v1/transactions", json=seed_body(keys[0]))
    assert replay.status_code == 202 and replay.json()["idempotencyKey"] == keys[0]
    conflict = client.post("/api/v1/transactions", json=seed_body(keys[0], amount="7.00"))
    assert conflict.status_code == 409, conflict.text
    for key in keys:
        assert wait_for_outcome(client, key)["status"] == "COMPLETED"

    count = "payrecon_rpc_server_duration_seconds_count"
    after_ingest = scrape_all(ingest)

    def moved(name: str, **labels: str) -> float:
        return total(after_ingest, name, **labels) - total(before_ingest, name, **labels)

    assert moved(count, **SUBMIT, rpc_grpc_status_code="OK") == len(keys) + 1
    assert moved(count, **SUBMIT, rpc_grpc_status_code="ALREADY_EXISTS") == 1
    assert moved("payrecon_ingest_idempotency_replays_total") == 1
    assert moved("payrecon_ingest_idempotency_conflicts_total") == 1
    # Latency: every request observed falls in some bucket, and +Inf holds them all.
    assert moved("payrecon_rpc_server_duration_seconds_bucket", **SUBMIT, le="+Inf") == len(keys) + 2
    # Health probes (Envoy's and the stack's) are not traffic.
    assert not [s for s in series(after_ingest, count) if s["rpc_service"] == "grpc.health.v1.Health"]

    # COMPLETED in ingest means the worker committed them first (the outcome travels from its commit).
    posted = "payrecon_ledger_transfers_posted_total"
    assert total(scrape(worker), posted) - total(before_worker, posted) >= len(keys)


def test_queue_outbox_age_and_discrepancy_gauges_are_served(stack: Stack) -> None:
    transfers = stack.env.get("PAYRECON_TRANSFERS_QUEUE", "payrecon-transfers.fifo")
    ingest, ledger = stack.metrics_addresses["ingest"], stack.metrics_addresses["ledger"]
    worker, reconciliation = stack.metrics_addresses["ledger-worker"], stack.metrics_addresses["reconciliation"]

    def depth_states(address: str) -> set[str]:
        return {s["state"] for s in series(scrape(address), "payrecon_queue_messages") if s["queue"] == transfers}

    # Gauges are read in the background every few seconds: the first reading may still be on its way.
    eventually(lambda: depth_states(worker) == {"visible", "in_flight", "dead_letter"}, "worker's queue depth")
    eventually(lambda: depth_states(ingest) == {"visible", "in_flight", "dead_letter"}, "ingest's queue depth")
    eventually(
        lambda: any(s.get("source") == "ingest" for s in series(scrape(ingest), "payrecon_outbox_unpublished")),
        "ingest's outbox backlog",
    )
    eventually(
        lambda: any(s.get("source") == "ledger" for s in series(scrape(ledger), "payrecon_outbox_unpublished")),
        "ledger's outbox backlog",
    )
    eventually(
        lambda: bool(series(scrape(ingest), "payrecon_ingest_oldest_processing_age_seconds")), "oldest PROCESSING age"
    )
    discrepancies = "payrecon_reconciliation_open_discrepancies"
    eventually(lambda: bool(series(scrape(reconciliation), discrepancies)), "open discrepancies")
    served = {(s["kind"], s["age"]) for s in series(scrape(reconciliation), discrepancies)}
    assert ("MISSING_IN_LEDGER", "<1h") in served and ("BALANCE_DRIFT", ">7d") in served


def unresolved_cases_by_kind(client: httpx.Client) -> dict[str, int]:
    """OPEN and ACKNOWLEDGED cases of every account, counted by kind through the REST API."""
    found: dict[str, int] = {}
    for status in ("OPEN", "ACKNOWLEDGED"):
        cursor = ""
        while True:
            page = client.get("/api/v1/discrepancies", params={"status": status, "limit": 500, "cursor": cursor})
            assert page.status_code == 200, page.text
            body = page.json()
            for case in body.get("discrepancies", []):
                found[case["kind"]] = found.get(case["kind"], 0) + 1
            cursor = body.get("nextCursor", "")
            if not cursor:
                break
    return found


def test_open_discrepancies_count_the_cases_reconciliation_holds(client: httpx.Client, stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    bank = f"metrics-bank-{run}"
    opened = client.post(
        "/api/v1/accounts", json={"id": bank, "currency": "EUR", "type": "ASSET", "allowOverdraft": True}
    )
    assert opened.status_code == 201, opened.text
    day = datetime.now(UTC).date().isoformat()
    # A 42.00 fee the bank booked and the ledger never saw: one MISSING_IN_LEDGER case at least.
    statement = camt053(
        "DE89370400440532013000", day, "100.00", "58.00", [("42.00", "DBIT", f"F-{run}", "NOTPROVIDED")]
    )
    imported = client.post("/api/v1/statements", json={"accountId": bank, "format": "CAMT053", "content": statement})
    assert imported.status_code == 201, imported.text
    assert imported.json()["discrepanciesOpened"] >= 1

    reconciliation = stack.metrics_addresses["reconciliation"]
    name = "payrecon_reconciliation_open_discrepancies"

    def gauge_by_kind() -> dict[str, int]:
        counted: dict[str, int] = {}
        for _, labels, value in (s for s in scrape(reconciliation) if s[0] == name):
            counted[labels["kind"]] = counted.get(labels["kind"], 0) + int(value)
        return {kind: n for kind, n in counted.items() if n}

    # The gauge is read every few seconds: it catches up with what the API lists.
    eventually(lambda: gauge_by_kind() == unresolved_cases_by_kind(client), "the gauge agreeing with the API")
    assert gauge_by_kind().get("MISSING_IN_LEDGER", 0) >= 1
