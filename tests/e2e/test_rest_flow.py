"""The seed's flows, verbatim, through the real Envoy gateway as a REST caller."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.devstack.stack import Stack

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": "Bearer demo-token-for-testing"}


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
        yield c


def seed_body(
    key: str, source: str = "account-123", destination: str = "account-456", amount: Any = 100.00
) -> dict[str, Any]:
    return {
        "transaction": {"source_account_id": source, "destination_account_id": destination, "amount": amount},
        "idempotencyKey": key,
    }


def wait_for_outcome(client: httpx.Client, key: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/transactions/status/{key}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] != "PROCESSING":
            return body
        time.sleep(0.1)
    raise AssertionError(f"{key} still PROCESSING after {timeout}s")


def test_submit_poll_balance_ledger_reconcile(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    source, destination, key = f"account-123-{run}", f"account-456-{run}", f"unique-key-{run}"
    accepted = client.post("/api/v1/transactions", json=seed_body(key, source, destination))
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "ACCEPTED"
    assert body["idempotencyKey"] == key
    assert body["messageId"]
    assert body["pollUrl"] == f"/api/v1/transactions/status/{key}"
    assert body["expiresAt"].endswith("Z")

    outcome = wait_for_outcome(client, key)
    assert outcome["status"] == "COMPLETED", outcome
    result = outcome["result"]
    assert result["source_account_id"] == source
    assert result["destination_account_id"] == destination
    assert Decimal(str(result["amount"])) == Decimal("100.00")
    assert result["status"] == "COMPLETED"
    assert result["id"] and result["created_at"]

    source_balance = client.get(f"/api/v1/accounts/{source}/balance").json()
    destination_balance = client.get(f"/api/v1/accounts/{destination}/balance").json()
    assert source_balance["account_id"] == source
    assert source_balance["balance"] == "-100.00"
    assert destination_balance["balance"] == "100.00"

    ledger = client.get(f"/api/v1/accounts/{destination}/ledger", params={"limit": 10}).json()
    assert ledger["account_id"] == destination
    assert [(e["entryType"], e["amount"]) for e in ledger["entries"]] == [("CREDIT", "100.00")]

    report = None
    for _ in range(50):  # the reconciliation projection is fed asynchronously by ledger events
        report = client.post(
            f"/api/v1/accounts/{source}/reconcile", json={"startDate": "2026-01-01", "endDate": "2030-12-31"}
        ).json()
        if report["transaction_count"] == 1 and report["balanced"]:
            break
        time.sleep(0.2)
    assert report is not None
    assert report["account_id"] == source
    assert report["balanced"] is True, report
    assert report["expected_balance"] == report["actual_balance"] == "-100.00"


def test_same_key_same_body_replays_and_moves_money_once(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    body = seed_body(f"replay-{run}", f"src-{run}", f"dst-{run}", "25.50")
    first = client.post("/api/v1/transactions", json=body)
    second = client.post("/api/v1/transactions", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["messageId"] == second.json()["messageId"]
    assert second.json()["replayed"] is True
    assert wait_for_outcome(client, f"replay-{run}")["status"] == "COMPLETED"
    assert client.get(f"/api/v1/accounts/src-{run}/balance").json()["balance"] == "-25.50"


def test_same_key_different_body_is_a_conflict(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    assert client.post("/api/v1/transactions", json=seed_body(f"reuse-{run}", amount=1)).status_code == 202
    conflict = client.post("/api/v1/transactions", json=seed_body(f"reuse-{run}", amount=2))
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_unknown_key_is_404(client: httpx.Client) -> None:
    response = client.get("/api/v1/transactions/status/never-submitted")
    assert response.status_code == 404
    assert response.json()["code"] == "TRANSACTION_NOT_FOUND"


def test_every_route_but_the_probes_needs_a_valid_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as anonymous:
        for method, path in [
            ("GET", "/api/v1/queue/stats"),
            ("GET", "/api/v1/cache/stats"),
            ("GET", "/api/v1/accounts/x/balance"),
            ("GET", "/api/v1/transactions/status/x"),
            ("POST", "/api/v1/transactions"),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                response = anonymous.request(method, path, headers=headers, json={} if method == "POST" else None)
                assert response.status_code == 401, (method, path, response.text)
                assert response.json()["code"] == "AUTH_UNAUTHENTICATED"
        assert anonymous.get("/api/v1/health").json()["status"] == "OK"
        ready = anonymous.get("/api/v1/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            **ready.json(),
            "status": "READY",
            "components": {"database": "ready", "cache": "ready", "queue": "ready"},
        }


def test_ops_endpoints_in_the_seed_shapes(client: httpx.Client) -> None:
    queue = client.get("/api/v1/queue/stats").json()
    for field in (
        "queueUrl",
        "messageCount",
        "inFlightCount",
        "visibilityTimeout",
        "isFifo",
        "contentDeduplication",
        "timestamp",
        "dlqMessageCount",
    ):
        assert field in queue, field
    assert queue["isFifo"] is True
    assert isinstance(queue["messageCount"], int) and isinstance(queue["inFlightCount"], int)
    cache = client.get("/api/v1/cache/stats").json()
    assert cache["connected"] is True
    assert cache["prefix"].startswith("idempotency:")
    assert cache["defaultTtl"] == 86400
    assert isinstance(cache["totalKeys"], int)
    assert {"totalKeys", "memoryUsage", "timestamp"} <= set(cache)


def test_unknown_route_is_404_json(client: httpx.Client) -> None:
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["code"] == "ROUTE_NOT_FOUND"


def test_ledger_pagination_walks_every_entry_once(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"page-{run}-{i}" for i in range(7)]
    for i, key in enumerate(keys):
        assert (
            client.post(
                "/api/v1/transactions", json=seed_body(key, f"payer-{run}", f"payee-{run}", f"{i + 1}.00")
            ).status_code
            == 202
        )
    for key in keys:
        assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    seen, cursor = [], ""
    while True:
        page = client.get(f"/api/v1/accounts/payee-{run}/ledger", params={"limit": 3, "cursor": cursor}).json()
        seen += [e["transferId"] for e in page["entries"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(keys)
    assert len(seen) == len(set(seen))


def test_reconcile_rejects_a_bad_window(client: httpx.Client) -> None:
    response = client.post("/api/v1/accounts/any/reconcile", json={"startDate": "2026-02-01", "endDate": "2026-01-01"})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_DATE_RANGE"
    response = client.post("/api/v1/accounts/any/reconcile", json={"startDate": "yesterday", "endDate": "2026-01-01"})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_DATE"


def test_oversized_body_is_413_and_a_wrongly_typed_field_is_400(client: httpx.Client) -> None:
    huge = {
        "transaction": {
            "source_account_id": "a",
            "destination_account_id": "b",
            "amount": 1,
            "metadata": {"x": "y" * 2_000_000},
        },
        "idempotencyKey": "too-big",
    }
    response = client.post("/api/v1/transactions", json=huge)
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    typed = client.post(
        "/api/v1/transactions",
        json={
            "transaction": {"source_account_id": 5, "destination_account_id": "b", "amount": 1},
            "idempotencyKey": "typed",
        },
    )
    assert typed.status_code == 400
    assert typed.json()["code"] == "INVALID_REQUEST"
    assert "source_account_id" in typed.json()["message"]
    for key in ("too-big", "typed"):
        assert client.get(f"/api/v1/transactions/status/{key}").status_code == 404


def test_a_token_without_the_scope_is_403(stack: Stack) -> None:
    from tests.conftest import READ_ONLY_TOKEN

    with httpx.Client(
        base_url=stack.base_url, timeout=10, headers={"Authorization": f"Bearer {READ_ONLY_TOKEN}"}
    ) as reader:
        write = reader.post("/api/v1/transactions", json=seed_body("scoped-write"))
        assert write.status_code == 403
        assert write.json()["code"] == "AUTH_FORBIDDEN"
        assert reader.get("/api/v1/queue/stats").status_code == 403
        assert reader.get("/api/v1/transactions/status/scoped-write").status_code == 404  # allowed, and nothing stored
