"""One date rule on every route, through Envoy: the same window over ledger history (since/until) and
over reconcile (startDate/endDate) selects the same entries, and a naive instant is refused on both."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
        yield c


def history_count(client: httpx.Client, account: str, start: str, end: str) -> int:
    response = client.get(f"/api/v1/accounts/{account}/ledger", params={"since": start, "until": end})
    assert response.status_code == 200, response.text
    return len(response.json()["entries"])


def reconciled_count(client: httpx.Client, account: str, start: str, end: str) -> int:
    response = client.post(f"/api/v1/accounts/{account}/reconcile", json={"startDate": start, "endDate": end})
    assert response.status_code == 200, response.text
    return int(response.json()["transaction_count"])


def test_the_same_window_selects_the_same_entries_on_history_and_reconcile(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    account, key = f"dates-{run}", f"dates-{run}"
    assert client.post("/api/v1/transactions", json=seed_body(key, f"dates-src-{run}", account, "4.00")).status_code
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    (entry,) = client.get(f"/api/v1/accounts/{account}/ledger").json()["entries"]
    day = date.fromisoformat(entry["createdAt"][:10])  # the entry's own UTC day, whatever the hour now
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    deadline = time.monotonic() + 20  # the reconciliation projection is fed asynchronously
    while reconciled_count(client, account, before.isoformat(), after.isoformat()) != 1:
        assert time.monotonic() < deadline, "the projection never saw the transfer"
        time.sleep(0.2)

    windows = [
        (day.isoformat(), day.isoformat(), 1),  # a date-only end includes its whole day
        (before.isoformat(), before.isoformat(), 0),
        (after.isoformat(), after.isoformat(), 0),
        (f"{day}T00:00:00Z", f"{after}T00:00:00Z", 1),  # the same day as instants
        (f"{before}T23:00:00-01:00", f"{after}T00:00:00+00:00", 1),  # offsets are honoured
        (f"{before}T00:00:00Z", f"{day}T00:00:00Z", 0),  # an instant end is exclusive
    ]
    for start, end, expected in windows:
        assert history_count(client, account, start, end) == expected, (start, end)
        assert reconciled_count(client, account, start, end) == expected, (start, end)


def test_a_naive_instant_is_refused_on_both_routes_naming_the_field(client: httpx.Client) -> None:
    naive = "2026-11-26T10:00:00"
    history = client.get("/api/v1/accounts/any/ledger", params={"since": "2026-11-01", "until": naive})
    reconcile = client.post("/api/v1/accounts/any/reconcile", json={"startDate": "2026-11-01", "endDate": naive})
    for response, field in ((history, "until"), (reconcile, "endDate")):
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == "INVALID_DATE" and field in body["message"], body
        assert body["details"][0]["metadata"]["field"] == field
